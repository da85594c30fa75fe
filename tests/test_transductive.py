"""The transductive hook: a protocol's unlabelled pool reaches a detector label-stripped, a run whose pool
is a scored test set is marked transductive and listed apart, one whose pool is held out is not, and the
runner checks the pseudo-labels against the labels it withheld."""

from __future__ import annotations

import json
import re

import pytest

from avbench import protocol, registry
from avbench.clips import UNLABELED, ClipRef
from avbench.leaderboard import TRANSDUCTIVE, build_leaderboard
from avbench.loader import UnlabeledPool
from avbench.runner import RunSettings, Runner, UsageError, pseudo_label_stats


@pytest.fixture
def pool_spy(monkeypatch):
    monkeypatch.setitem(registry.detectors._discover(), "pool_spy",
                        registry.Entry("pool_spy", "avbench.testing:PoolSpy", "tests"))


def run(tiny_demo, tmp_path, pool: dict | None, name: str):
    chosen = protocol.get("demo") if pool is None else protocol.get("demo").with_params(pool=pool)
    log = tmp_path / f"{name}.json"
    settings = RunSettings(detector="pool_spy", protocol=chosen, seeds=(0,), runs_dir=tmp_path / name,
                           data_roots={"demo": tiny_demo}, cache_dir=tmp_path / "cache", bootstrap_resamples=0,
                           detector_options={"spy_log": str(log)})
    (outcome,) = Runner(settings).run()
    return outcome.record, json.loads(log.read_text())


def test_the_pool_reaches_the_detector_without_a_label_and_the_test_pool_makes_the_run_transductive(
        pool_spy, tiny_demo, tmp_path):
    record, spy = run(tiny_demo, tmp_path, {"dataset": "demo", "split": "test"}, "on_test")
    index = registry.datasets.get("demo")().index(tiny_demo)
    secrets = {s for ref in index.refs() for s in (ref.clip_id, ref.path.name, ref.path.stem, ref.category, ref.method,
                                                   ref.identity, ref.group) if s}
    assert len(spy["seen"]) == len(spy["tokens"]) == 10  # the 10 test clips
    for item in spy["seen"]:
        ref = item["ref"]
        assert ref["label"] == str(UNLABELED) and ref["clip_id"] == ref["path"] == item["token"]
        assert ref["video_label"] == ref["audio_label"] == "None" and ref["meta"] == "{}"
        assert not {v for v in ref.values()} & secrets  # no field carries a name, path or category of the index
        assert item["clip"] == ["audio", "audio_removed", "fallbacks", "sample_rate"]  # media only
    assert all(re.fullmatch(r"pool-\d{6}", t) for t in spy["tokens"])  # opaque: a number, nothing of the clip
    (fold,) = record["folds"]
    pool = fold["pool"]
    assert record["transductive"] is True and pool["transductive"] is True and pool["overlap_with_test"] == 10
    (first,) = pool["rounds"]
    assert first["pseudo_labels"] == 10 and sum(first["per_class"].values()) == 10
    assert 0 <= first["accuracy"] <= 1 and first["with_withheld_label"] == 10
    assert len(pool["fingerprint"]) == 64 and pool["selection"]["split"] == "test"

    held_out, _ = run(tiny_demo, tmp_path, {"dataset": "demo", "split": "val"}, "held_out")
    assert held_out["transductive"] is False and held_out["folds"][0]["pool"]["overlap_with_test"] == 0
    board = build_leaderboard([record, held_out])
    assert set(board["detector"]) == {"pool_spy", "pool_spy" + TRANSDUCTIVE}  # never averaged together
    assert set(board.groupby("detector")["n_seeds"].max()) == {1}


def test_a_detector_that_needs_a_pool_is_refused_on_a_protocol_without_one(pool_spy, tiny_demo, tmp_path):
    with pytest.raises(UsageError, match="pool"):
        run(tiny_demo, tmp_path, None, "no_pool")


def test_pseudo_labels_are_checked_against_the_withheld_labels():
    tokens = {f"pool-{k}": ClipRef(f"c{k}", "d", f"c{k}.mp4", label) for k, label in enumerate([0, 0, 1, 1, UNLABELED])}
    stats = pseudo_label_stats(1, {"pool-0": 0, "pool-2": 1, "pool-3": 0, "pool-4": 1}, tokens)
    assert stats["per_class"] == {"real": 2, "fake": 2} and stats["with_withheld_label"] == 3
    assert stats["accuracy"] == pytest.approx(2 / 3) and stats["precision_per_class"] == {"real": 0.5, "fake": 1.0}
    with pytest.raises(Exception, match="not in the pool"):
        pseudo_label_stats(1, {"pool-9": 1}, tokens)


def test_a_pool_parameter_of_the_wrong_form_is_refused():
    with pytest.raises(ValueError, match="pool takes a table"):
        protocol.get("demo").with_params(pool={"split": "test"})
    assert protocol.get("demo").with_params(pool={"dataset": "av1m_pp", "unlabeled": ["testA"]}).pool.unlabeled == (
        "testA",)


def test_pool_tokens_hand_the_clips_over_in_a_seeded_shuffled_order():
    """The index's order (by category, say) must not reach the detector: tokens follow a permutation."""
    refs = [ClipRef(f"c{k}", "d", f"c{k}.mp4", k % 2) for k in range(40)]
    order = [r.clip_id for r in UnlabeledPool.tokens_for(refs, seed=0).values()]
    assert sorted(order) == sorted(r.clip_id for r in refs) and order != [r.clip_id for r in refs]
    assert order == [r.clip_id for r in UnlabeledPool.tokens_for(refs, seed=0).values()]
    assert order != [r.clip_id for r in UnlabeledPool.tokens_for(refs, seed=1).values()]
