"""Media workers: the same results as loading in this process, in order; a clip that kills its worker or
hangs costs only itself; the shared cache survives concurrent writers; `preprocess` leaves a run nothing
to decode."""

import pandas as pd
import pytest

from avbench import protocol, registry
from avbench.cache import MediaCache
from avbench.clips import Clip, ClipError
from avbench.detector import InputSpec
from avbench.loader import MediaLoader
from avbench.runner import RunSettings, Runner
from avbench.testing import SabotagedLoader
from avbench.workers import MediaPool

SPEC = InputSpec(fps=5.0, audio=True, face_size=32, mouth_size=16)
VOLATILE = ("seconds",)


def refs_of(root):
    return list(registry.datasets.get("folder")().index(root).refs())


def test_a_crashing_and_a_hanging_clip_cost_only_themselves(sabotaged_folder, tmp_path):
    refs = refs_of(sabotaged_folder)
    serial = {r.clip_id: _outcome(MediaLoader(MediaCache(tmp_path / "serial")), r)
              for r in refs if "crash" not in r.path.name and "hang" not in r.path.name}
    with MediaPool(SabotagedLoader(MediaCache(tmp_path / "pool")), workers=2, clip_timeout=3) as pool:
        results = list(pool.load_all(refs, SPEC))
        assert [ref for ref, _ in results] == refs  # in order
        outcome = {ref.path.name: result for ref, result in results}
        assert outcome["crash_b.mp4"].reason == "worker_crashed" and "SIGABRT" in outcome["crash_b.mp4"].message
        assert outcome["hang_e.mp4"].reason == "timeout" and "hang_e.mp4" in outcome["hang_e.mp4"].message
        assert outcome["g_corrupt.mp4"].reason == serial[_id(refs, "g_corrupt.mp4")] != "loaded"
        for ref, result in results:
            if ref.clip_id in serial and serial[ref.clip_id] == "loaded":
                assert isinstance(result, Clip) and result.faces.shape[1:] == (32, 32, 3)
        assert pool.replaced == 2
        again = dict((ref.path.name, r) for ref, r in pool.load_all(refs[:1], SPEC))  # replaced workers serve on
        assert isinstance(again["a.mp4"], Clip)


def _outcome(loader, ref):
    try:
        loader.load(ref, SPEC)
    except ClipError as exc:
        return exc.reason
    return "loaded"


def _id(refs, name):
    return next(r.clip_id for r in refs if r.path.name == name)


def test_two_workers_writing_one_cache_entry_leave_one_readable_entry(sabotaged_folder, tmp_path):
    ref = next(r for r in refs_of(sabotaged_folder) if r.path.name == "a.mp4")
    cache = MediaCache(tmp_path / "cache")
    with MediaPool(MediaLoader(cache), workers=2) as pool:
        (_, first), (_, second) = pool.load_all([ref, ref], SPEC)  # both cold, decoded at once
    entries = list((tmp_path / "cache" / "entries").rglob("*.npz"))
    assert len(entries) == 1 and not list((tmp_path / "cache").rglob("*.tmp"))
    cached = MediaLoader(cache).load(ref, SPEC)
    assert (first.faces == second.faces).all() and (cached.faces == first.faces).all()


def test_a_loader_bug_is_raised_not_recorded(sabotaged_folder, tmp_path):
    faces_without_video = InputSpec(fps=None, audio=True, face_size=32)
    with MediaPool(MediaLoader(MediaCache(tmp_path)), workers=1) as pool:
        with pytest.raises(ValueError, match="need video"):
            list(pool.load_all(refs_of(sabotaged_folder)[:2], faces_without_video))


def run_settings(tmp_path, root, runs, **kw):
    return RunSettings(detector="avsync", protocol=protocol.get("test_only"), seeds=(0,), runs_dir=tmp_path / runs,
                       data_roots={"folder": root}, cache_dir=tmp_path / f"cache-{runs}", **kw)


def scores_of(outcome):
    return pd.read_parquet(outcome.record_path.parent / "scores.parquet").drop(columns=list(VOLATILE))


def test_run_with_workers_counts_crashes_and_scores_the_rest_as_in_process(sabotaged_folder, tmp_path):
    pooled_runner = Runner(run_settings(tmp_path, sabotaged_folder, "pooled", workers=2, clip_timeout=3, chunk_size=2))
    pooled_runner.loader = SabotagedLoader(pooled_runner.loader.cache)  # what the workers load with
    (pooled,) = pooled_runner.run()
    assert pooled.record["coverage"]["reasons"] == {"worker_crashed": 1, "timeout": 1, "corrupt_media": 1}
    assert pooled.record["coverage"]["scored"] == 4
    clean = tmp_path / "clean"  # the same folder without the two sabotaged files, loaded in this process
    for path in sabotaged_folder.rglob("*.mp4"):
        if "crash" not in path.name and "hang" not in path.name:
            (clean / path.parent.name).mkdir(parents=True, exist_ok=True)
            (clean / path.parent.name / path.name).write_bytes(path.read_bytes())
    (serial,) = Runner(run_settings(tmp_path, clean, "serial")).run()
    ours, theirs = scores_of(pooled).set_index("file"), scores_of(serial).set_index("file")
    shared = ["label", "score", "status", "reason"]
    assert ours.loc[theirs.index, shared].equals(theirs[shared])


def test_same_scores_and_record_with_0_1_and_2_workers_and_resume_across_counts(tiny_demo, tmp_path,
                                                                               interrupted_after_two_chunks):
    def settings(runs, workers, **kw):
        return RunSettings(detector="handcrafted", protocol=protocol.get("demo"), seeds=(0,), runs_dir=tmp_path / runs,
                           data_roots={"demo": tiny_demo}, cache_dir=tmp_path / f"cache-{runs}", workers=workers,
                           chunk_size=2, **kw)

    records = {n: Runner(settings(f"w{n}", n)).run()[0] for n in (0, 2)}
    assert scores_of(records[0]).equals(scores_of(records[2]))
    assert records[0].record["metrics"] == records[2].record["metrics"]

    # killed after its second chunk with a worker process, resumed in this process: the same record
    restart = interrupted_after_two_chunks()
    with pytest.raises(KeyboardInterrupt):
        Runner(settings("resumed", 1)).run()
    restart()
    (resumed,) = Runner(settings("resumed", 0)).run()
    assert scores_of(resumed).equals(scores_of(records[0]))
    assert resumed.record["metrics"] == records[0].record["metrics"]


def test_preprocess_leaves_the_run_nothing_to_decode(tiny_demo, tmp_path, monkeypatch):
    settings = RunSettings(detector="handcrafted", protocol=protocol.get("demo"), seeds=(0,), runs_dir=tmp_path / "runs",
                           data_roots={"demo": tiny_demo}, cache_dir=tmp_path / "cache", workers=2)
    counts = Runner(settings).preprocess()
    assert counts["clips"] == 25 and counts["loaded"] + sum(counts["failed"].values()) == 25
    assert not (tmp_path / "runs").exists()

    def refuse(*_):
        raise AssertionError("the run decoded a clip that preprocess had cached")

    monkeypatch.setattr(MediaLoader, "_decode", refuse)
    settings.workers = 0  # in this process, where the guard is
    (outcome,) = Runner(settings).run()
    assert outcome.record["coverage"]["total"] == 10
