import pytest


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """A small demo corpus shared by the end-to-end tests: 5 identities, one clip per category each."""
    from avbench.demo import generate_corpus

    root = tmp_path_factory.mktemp("demo")
    generate_corpus(root, identities=5, real_per_identity=1, seconds=1.2, size=128)
    return root


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One media and feature cache for the end-to-end runs of the neural detectors: each input is decoded
    once (entries are keyed by file content and decoding settings, so modules can share it)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny tensors gain nothing from threads, and threads waiting on a small machine's busy cores slow
    them tenfold: modules of tiny torch models use one intra-op thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def sabotaged_folder(tmp_path_factory):
    """A user's folder where, for avbench.testing.SabotagedLoader, one file kills the process decoding it
    and one never finishes; one more is corrupt."""
    from avbench.encode import write_media
    from avbench.testing import random_bytes, talking_face

    root = tmp_path_factory.mktemp("sabotaged")
    face = talking_face(seconds=1.0, size=96)
    for label, names in (("real", ["a", "crash_b", "c"]), ("fake", ["d", "hang_e", "f"])):
        (root / label).mkdir()
        for name in names:
            write_media(root / label / f"{name}.mp4", face.frames, face.fps, face.audio, face.sample_rate)
    random_bytes(root / "fake" / "g_corrupt.mp4")
    return root


@pytest.fixture
def interrupted_after_two_chunks(monkeypatch):
    """`interrupt()` makes the next run stop (KeyboardInterrupt) when it is about to write its third
    chunk of scores, and returns `restart()`, which lets runs write again as a restarted run would."""
    from avbench.runner import Runner

    real_write = Runner._write_chunk

    def interrupt():
        written = []

        def write_then_die(partial_dir, chunk_id, table):
            if len(written) == 2:
                raise KeyboardInterrupt
            written.append(chunk_id)
            return real_write(partial_dir, chunk_id, table)

        monkeypatch.setattr(Runner, "_write_chunk", staticmethod(write_then_die))
        return lambda: monkeypatch.setattr(Runner, "_write_chunk", staticmethod(real_write))

    return interrupt
