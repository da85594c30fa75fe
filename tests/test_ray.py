"""`--executor ray` on a local Ray cluster the test starts: the same scores and record as the local
executor, a run killed under one executor resumes under the other, and a clip that kills its Ray
worker (loading or scoring) or hangs is counted with its reason."""

from types import SimpleNamespace

import pandas as pd
import pytest

from avbench import protocol, registry
from avbench.detectors.random_baseline import RandomDetector
from avbench.runner import RunSettings, Runner
from avbench.testing import SabotagedLoader

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def settings(tmp_path, root, runs, **kw):
    return RunSettings(detector="handcrafted", protocol=protocol.get("demo"), seeds=(0,), runs_dir=tmp_path / runs,
                       data_roots={"demo": root}, cache_dir=tmp_path / f"cache-{runs}", chunk_size=2, **kw)


def scores_of(outcome):
    return pd.read_parquet(outcome.record_path.parent / "scores.parquet").drop(columns=["seconds"])


def test_ray_gives_the_local_record_and_a_killed_run_resumes_on_the_other_executor(
        local_cluster, tiny_demo, tmp_path, interrupted_after_two_chunks):
    (local,) = Runner(settings(tmp_path, tiny_demo, "local")).run()
    (on_ray,) = Runner(settings(tmp_path, tiny_demo, "ray", executor="ray")).run()
    assert scores_of(on_ray).equals(scores_of(local)) and on_ray.record["metrics"] == local.record["metrics"]

    restart = interrupted_after_two_chunks()
    with pytest.raises(KeyboardInterrupt):
        Runner(settings(tmp_path, tiny_demo, "switched", executor="ray")).run()
    restart()
    (resumed,) = Runner(settings(tmp_path, tiny_demo, "switched", workers=1)).run()
    assert scores_of(resumed).equals(scores_of(local)) and resumed.record["metrics"] == local.record["metrics"]


def test_a_clip_that_kills_its_ray_worker_or_hangs_is_counted(local_cluster, sabotaged_folder, tmp_path):
    runner = Runner(RunSettings(detector="avsync", protocol=protocol.get("test_only"), seeds=(0,),
                                runs_dir=tmp_path / "runs", data_roots={"folder": sabotaged_folder},
                                cache_dir=tmp_path / "cache", executor="ray", clip_timeout=8))
    runner.loader = SabotagedLoader(runner.loader.cache)
    (outcome,) = runner.run()
    assert outcome.record["coverage"]["reasons"] == {"worker_crashed": 1, "timeout": 1, "corrupt_media": 1}
    assert outcome.record["coverage"]["scored"] == 4


def test_a_clip_that_kills_its_scoring_actor_is_counted_and_the_others_are_scored(
        local_cluster, sabotaged_folder, tmp_path, monkeypatch):
    monkeypatch.setitem(registry.detectors._discover(), "scorer_killer",
                        registry.Entry("scorer_killer", "avbench.testing:ScorerKiller", "tests"))
    (outcome,) = Runner(RunSettings(detector="scorer_killer", protocol=protocol.get("test_only"), seeds=(0,),
                                    runs_dir=tmp_path / "runs", data_roots={"folder": sabotaged_folder},
                                    cache_dir=tmp_path / "cache", executor="ray")).run()
    scores = pd.read_parquet(outcome.record_path.parent / "scores.parquet").set_index("clip_id")
    assert scores.loc["real/crash_b", "reason"] == "scorer_crashed"
    assert "crash_b.mp4" in scores.loc["real/crash_b", "message"]
    scored = scores[scores["status"] == "scored"]  # the random baseline decodes nothing: g_corrupt is scored
    assert sorted(scored.index) == ["fake/d", "fake/f", "fake/g_corrupt", "fake/hang_e", "real/a", "real/c"]
    reference = RandomDetector(seed=0)
    for clip_id, score in scored["score"].items():  # the scores this process gives
        assert score == reference.score(SimpleNamespace(clip_id=clip_id))
