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
