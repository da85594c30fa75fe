"""End to end: the runner on the tiny demo corpus and on a folder of broken files."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from avbench import protocol
from avbench.detectors.handcrafted import HandcraftedDetector
from avbench.detectors.random_baseline import RandomDetector
from avbench.encode import write_media
from avbench.runner import RunError, RunSettings, Runner
from avbench.testing import sample_media

VOLATILE = ("timings", "created")


def settings(tmp_path, detector, proto="demo", root=None, **kw):
    roots = {"demo": root} if root else {}
    return RunSettings(detector=detector, protocol=protocol.get(proto) if isinstance(proto, str) else proto,
                       seeds=kw.pop("seeds", (0,)), runs_dir=tmp_path / kw.pop("runs", "runs"),
                       data_roots=kw.pop("data_roots", roots), cache_dir=tmp_path / "cache", **kw)


def stable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in VOLATILE}


def test_record_has_metrics_coverage_and_provenance(tiny_demo, tmp_path):
    (outcome,) = Runner(settings(tmp_path, "avsync", root=tiny_demo)).run()
    record = outcome.record
    assert outcome.status == "done"
    assert record["coverage"] == {"total": 10, "scored": 10, "failed": 0, "reasons": {},  # 2 test identities x 5
                                  "fallbacks": {}}
    prov = record["provenance"]
    for key in ("avbench_version", "git_commit", "detector_config", "protocol_sha256", "index_fingerprints",
                "seed", "device", "packages", "input_spec"):
        assert key in prov
    assert prov["index_fingerprints"]["demo"] and prov["detector_config"]["max_offset"] == 15
    subsets = {m["subset"] for m in record["metrics"]}
    assert {"all", "fake_audio", "lipsync", "both", "desync", "AVG"} <= subsets
    scores = pd.read_parquet(outcome.record_path.parent / "scores.parquet")
    assert len(scores) == record["coverage"]["total"] and set(scores["status"]) <= {"scored", "failed"}


def test_finished_run_repeated_does_no_work(tiny_demo, tmp_path, monkeypatch):
    Runner(settings(tmp_path, "random", root=tiny_demo)).run()

    def refuse(*_):
        raise AssertionError("a finished run must not score again")

    monkeypatch.setattr(RandomDetector, "score_batch", refuse)
    monkeypatch.setattr(RandomDetector, "score", refuse)
    (outcome,) = Runner(settings(tmp_path, "random", root=tiny_demo)).run()
    assert outcome.status == "skipped"


def test_killed_run_resumes_to_the_same_record(tiny_demo, tmp_path, monkeypatch):
    whole = Runner(settings(tmp_path, "handcrafted", root=tiny_demo, runs="whole", chunk_size=2)).run()[0]

    calls = {"n": 0}
    original = HandcraftedDetector.score_batch

    def dies_on_third_batch(self, clips):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as a user's ^C or a killed job: nothing catches it
        return original(self, clips)

    monkeypatch.setattr(HandcraftedDetector, "score_batch", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        Runner(settings(tmp_path, "handcrafted", root=tiny_demo, runs="killed", chunk_size=2)).run()
    run_dir = tmp_path / "killed/handcrafted/demo/seed0"
    assert not (run_dir / "record.json").exists()
    assert len(list((run_dir / "partial").rglob("chunk-*.parquet"))) == 2
    assert (run_dir / "models/main/state.npz").is_file()

    monkeypatch.setattr(HandcraftedDetector, "score_batch", original)
    monkeypatch.setattr(HandcraftedDetector, "fit", lambda *a, **k: pytest.fail("the fitted model must be reused"))
    resumed = Runner(settings(tmp_path, "handcrafted", root=tiny_demo, runs="killed", chunk_size=2)).run()[0]
    assert stable(resumed.record) == stable(whole.record)
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "scores.parquet").drop(columns="seconds"),
                                  pd.read_parquet(whole.record_path.parent / "scores.parquet").drop(columns="seconds"))
    assert not (run_dir / "partial").exists()


def test_same_seed_same_scores_and_seeds_differ(tiny_demo, tmp_path):
    a = Runner(settings(tmp_path, "random", root=tiny_demo, runs="a", seeds=(0, 1))).run()
    b = Runner(settings(tmp_path, "random", root=tiny_demo, runs="b", seeds=(0,))).run()
    scores = [pd.read_parquet(o.record_path.parent / "scores.parquet")["score"] for o in (*a, *b)]
    assert scores[0].tolist() == scores[2].tolist()
    assert scores[0].tolist() != scores[1].tolist()


def test_changed_settings_never_mix_with_an_existing_run(tiny_demo, tmp_path):
    Runner(settings(tmp_path, "avsync", root=tiny_demo)).run()
    changed = settings(tmp_path, "avsync", root=tiny_demo, detector_options={"max_offset": 5})
    with pytest.raises(RunError, match="holds a run with other settings.*detector_config"):
        Runner(changed).run()
    changed.overwrite = True
    (outcome,) = Runner(changed).run()
    assert outcome.record["provenance"]["detector_config"]["max_offset"] == 5


def test_every_protocol_kind_runs_on_the_demo(tiny_demo, tmp_path):
    cross_manip = protocol.get("cross_manipulation").with_params(dataset="demo", split_ratios=[0.6, 0.2, 0.2])
    (outcome,) = Runner(settings(tmp_path, "handcrafted", cross_manip, root=tiny_demo)).run()
    folds = [f["fold"] for f in outcome.record["folds"]]
    assert folds == ["both", "desync", "fake_audio", "lipsync"]
    rows = {(m["train"], m["subset"]) for m in outcome.record["metrics"]}
    assert ("demo minus held-out", "AVG") in rows and ("demo minus held-out", "lipsync") in rows

    cross_data = protocol.get("cross_dataset").with_params(train="demo", test=["demo"], split_ratios=[0.6, 0.2, 0.2])
    (outcome,) = Runner(settings(tmp_path, "handcrafted", cross_data, root=tiny_demo)).run()
    assert {m["test_set"] for m in outcome.record["metrics"]} == {"demo"}

    test_only = protocol.get("test_only").with_params(dataset="demo", test_split="all")
    (outcome,) = Runner(settings(tmp_path, "avsync", test_only, root=tiny_demo)).run()
    assert outcome.record["coverage"]["total"] == 25

    with pytest.raises(RunError, match="learns from data.*--checkpoint"):
        Runner(settings(tmp_path, "handcrafted", test_only, root=tiny_demo)).run()


def test_identity_folds_report_each_fold_and_their_average(tiny_demo, tmp_path):
    folds = protocol.get("fakeavceleb_mrdf_folds").with_params(dataset="demo", folds=3)
    (outcome,) = Runner(settings(tmp_path, "handcrafted", folds, root=tiny_demo)).run()
    record = outcome.record
    assert [f["fold"] for f in record["folds"]] == ["fold1", "fold2", "fold3"]
    assert {m["subset"] for m in record["metrics"]} == {"fold1", "fold2", "fold3", "AVG"}
    assert record["coverage"]["total"] == 5 * 4  # every identity tested once; desyncs are of no class


def test_missing_audio_variant_feeds_silence_to_an_audio_visual_detector(tiny_demo, tmp_path):
    (normal,) = Runner(settings(tmp_path, "avsync", root=tiny_demo)).run()
    (silent,) = Runner(settings(tmp_path, "avsync", "demo+missing_audio", root=tiny_demo)).run()
    assert silent.record["protocol"] == "demo+missing_audio"
    assert silent.record_path.parent.parent.name == "demo+missing_audio"
    auc = lambda r: next(m["value"] for m in r["metrics"] if m["subset"] == "all" and m["metric"] == "AUC")  # noqa: E731
    assert auc(silent.record) != auc(normal.record)


def test_trained_checkpoint_scores_under_test_only(tiny_demo, tmp_path):
    (trained,) = Runner(settings(tmp_path, "handcrafted", root=tiny_demo)).run()
    checkpoint = trained.record_path.parent / "models/main"
    test_only = protocol.get("test_only").with_params(dataset="demo", test_split="all")
    (outcome,) = Runner(settings(tmp_path, "handcrafted", test_only, root=tiny_demo, checkpoint=checkpoint)).run()
    assert outcome.record["folds"][0]["fit"] == "checkpoint"
    assert len(outcome.record["provenance"]["checkpoint_sha256"]) == 64


@pytest.fixture(scope="module")
def broken_folder(tmp_path_factory):
    """A user's folder: one good clip per label and every kind of bad input."""
    root = tmp_path_factory.mktemp("mine")
    media = sample_media(root / "src")
    layout = {"real/good.mp4": "talking", "fake/good.mkv": "talking_mkv", "fake/corrupt.mp4": "random",
              "real/empty.mp4": "empty", "fake/silent.mp4": "video_only", "real/truncated.mp4": "truncated",
              "fake/odd_rate.mp4": "vfr"}
    for target, kind in layout.items():
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(media[kind], root / target)
    blank = root / "real/noface.mp4"
    write_media(blank, np.full((25, 96, 96, 3), 128, np.uint8), 25, np.zeros(16000, np.float32))
    shutil.rmtree(root / "src")
    return root


def test_bad_input_is_counted_with_reasons_and_the_run_goes_on(broken_folder, tmp_path):
    test_only = protocol.get("test_only")
    (outcome,) = Runner(settings(tmp_path, "avsync", test_only, data_roots={"folder": broken_folder})).run()
    cov = outcome.record["coverage"]
    assert cov["total"] == 8 and cov["scored"] == 2
    assert cov["reasons"] == {"corrupt_media": 2, "empty_file": 1, "no_audio_stream": 2, "no_face": 1}
    scores = pd.read_parquet(outcome.record_path.parent / "scores.parquet").set_index("clip_id")
    assert "empty.mp4" in scores.loc["real/empty", "message"]
    assert scores.loc["real/noface", "reason"] == "no_face"
    assert scores.loc["fake/silent", "reason"] == "no_audio_stream"
    assert json.loads(outcome.record_path.read_text())["coverage"] == cov


def test_a_listed_file_that_is_missing_is_counted_not_dropped(broken_folder, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    shutil.copy(broken_folder / "real/good.mp4", mine / "good.mp4")
    (mine / "labels.csv").write_text("path,label\ngood.mp4,real\ngone.mp4,fake\n")
    test_only = protocol.get("test_only")
    (outcome,) = Runner(settings(tmp_path, "avsync", test_only, data_roots={"folder": mine})).run()
    assert outcome.record["coverage"] == {"total": 2, "scored": 1, "failed": 1, "reasons": {"missing_file": 1},
                                       "fallbacks": {}}


def test_subsets_with_their_own_reals():
    from avbench.runner import metric_rows

    scores = pd.DataFrame({
        "fold": "main", "test_set": "toy", "clip_id": list("abcdef"), "label": [0, 1, 0, 1, 0, 1],
        "subset_value": ["g1", "g1", "g2", "g2", "g2", "g2"], "score": [0.1, 0.9, 0.8, 0.2, 0.7, 0.3],
        "status": "scored"})
    fold = protocol.Fold("main", "toy", None, None, (protocol.TestSet("toy", protocol.Selection("toy", "test"),
                                                                      "subset_value", "own"),))
    rows = metric_rows(scores, [fold], {}, True, probabilities=True, seed=0, n_resamples=0)
    auc = {r["subset"]: r["value"] for r in rows if r["metric"] == "AUC"}
    assert auc == {"all": pytest.approx(5 / 9), "g1": 1.0, "g2": 0.0, "AVG": 0.5}


def test_localisation_is_measured_on_fake_clips_with_segments():
    from pathlib import Path

    from avbench.clips import ClipRef
    from avbench.detector import Detector
    from avbench.runner import metric_rows
    from avbench.scoring import localise

    class Explaining(Detector):
        frame_rate = 5.0

        def frame_scores(self, clip):
            return np.array([0, 0, 0, 0, 1, 1, 0, 0, 0, 0], dtype=float)  # frames 4-5: 0.8-1.2 s

    fake = ClipRef(clip_id="f", dataset="t", path=Path("f.mp4"), label=1, fake_segments=((0.8, 1.2),))
    real = ClipRef(clip_id="r", dataset="t", path=Path("r.mp4"), label=0)
    assert localise(Explaining(), fake, None) == 1.0
    assert np.isnan(localise(Explaining(), real, None))
    assert np.isnan(localise(RandomDetector(), fake, None))  # no frame scores: nothing to measure

    scores = pd.DataFrame({"fold": "main", "test_set": "toy", "clip_id": list("abcd"), "label": [0, 1, 1, 1],
                           "subset_value": "", "score": [0.1, 0.9, 0.8, 0.7], "status": "scored",
                           "localisation_auc": [np.nan, 1.0, 0.5, np.nan]})
    fold = protocol.Fold("main", "toy", None, None, (protocol.TestSet("toy", protocol.Selection("toy", "test")),))
    rows = metric_rows(scores, [fold], {}, False, probabilities=True, seed=0, n_resamples=0)
    (loc,) = [r for r in rows if r["metric"] == "LOC_AUC"]
    assert loc["value"] == 0.75 and loc["n_localised"] == 2


def test_runner_places_the_detector_and_gives_fit_a_training_dir(tiny_demo, tmp_path, monkeypatch):
    """The runner moves the detector to --device before fit and score, and fit gets a folder for its
    resumable training state, removed once the fitted detector is saved."""
    import torch

    seen = {}
    original_fit = HandcraftedDetector.fit

    def use_training_dir(self, directory):
        seen["dir"] = directory

    def fit(self, train, val, seed, device="cpu"):
        seen["exists_during_fit"] = seen["dir"].is_dir()
        seen["device"] = self.device
        return original_fit(self, train, val, seed, device)

    monkeypatch.setattr(HandcraftedDetector, "use_training_dir", use_training_dir, raising=False)
    monkeypatch.setattr(HandcraftedDetector, "fit", fit)
    Runner(settings(tmp_path, "handcrafted", root=tiny_demo)).run()
    assert seen["exists_during_fit"] and seen["device"] == "cpu"
    assert seen["dir"].parent == tmp_path / "runs/handcrafted/demo/seed0/models" and not seen["dir"].exists()

    detector = RandomDetector()
    detector.head = torch.nn.Linear(2, 1).double()
    detector.heads = {"a": torch.nn.Linear(2, 1)}
    moved = {}
    for module in (detector.head, detector.heads["a"]):
        monkeypatch.setattr(module, "to", lambda device, m=module: moved.setdefault(id(m), device))
    assert detector.to("meta") is detector and detector.device == "meta"
    assert sorted(moved.values()) == ["meta", "meta"]


def test_the_files_a_detector_reads_are_part_of_the_run(tiny_demo, tmp_path, monkeypatch):
    """Weights swapped at the same path make another run, never a 'finished' one skipped."""
    monkeypatch.setattr(RandomDetector, "sources", lambda self: {"weights": "sha256-of-the-first-file"})
    (outcome,) = Runner(settings(tmp_path, "random", root=tiny_demo)).run()
    assert outcome.record["provenance"]["detector_sources"] == {"weights": "sha256-of-the-first-file"}
    monkeypatch.setattr(RandomDetector, "sources", lambda self: {"weights": "sha256-of-another-file"})
    with pytest.raises(RunError, match="detector_sources"):
        Runner(settings(tmp_path, "random", root=tiny_demo)).run()


def test_fallbacks_are_counted_per_reason_over_scored_clips_only():
    from avbench.runner import fallback_counts

    scores = pd.DataFrame({"status": ["scored", "scored", "failed", "scored"],
                           "fallbacks": ["no_audio_track,silent_track", "", "no_audio_track", None]})
    assert fallback_counts(scores) == {"no_audio_track": 1, "silent_track": 1}
    assert fallback_counts(scores.drop(columns="fallbacks")) == {}  # scores written before fallbacks existed


def test_the_trim_silence_variant_cuts_every_clip_it_reads_and_counts_them(tiny_demo, tmp_path):
    from avbench.clips import LEADING_SILENCE_TRIMMED

    chosen = protocol.get("demo+trim_silence")
    assert chosen.id == "demo+trim_silence" and chosen.spec()["trim_silence"] is True
    assert protocol.Protocol.from_spec(chosen.spec()).trim_silence
    assert protocol.get("demo+four_class+trim_silence").id == "demo+four_class+trim_silence"
    with pytest.raises(KeyError, match="do not combine"):
        protocol.get("demo+missing_audio+trim_silence")
    runner = Runner(settings(tmp_path, "handcrafted", chosen, tiny_demo, bootstrap_resamples=0))
    assert all(r.trim_silence for fold in chosen.folds(runner.indexes, runner.display)
               for r in runner.refs(fold.train) + [x for t in fold.tests for x in runner.test_refs(t)])
    (outcome,) = runner.run()
    record = outcome.record
    assert record["protocol"] == "demo+trim_silence" and record["coverage"]["scored"] == 10
    trimmed = record["coverage"]["fallbacks"].get(LEADING_SILENCE_TRIMMED, 0)
    scores = pd.read_parquet(outcome.record_path.parent / "scores.parquet")
    assert trimmed == scores["fallbacks"].str.contains(LEADING_SILENCE_TRIMMED).sum()


def test_a_protocol_may_ask_for_wa_f1_and_uar_beside_the_usual_metrics():
    from avbench.runner import metric_rows

    chosen = protocol.get("demo").with_params(extra_metrics=["WA-F1", "UAR"])
    assert chosen.extra_metrics == ("WA-F1", "UAR") and protocol.get("av1m_pp_classification").extra_metrics
    with pytest.raises(ValueError, match="extra_metrics takes a list of WA-F1, UAR"):
        chosen.with_params(extra_metrics=["F1"])
    fold = chosen.folds(None)[0]
    scores = pd.DataFrame({"fold": "main", "test_set": "demo", "label": [0, 0, 1, 1], "score": [0.2, 0.6, 0.7, 0.9],
                           "status": "scored", "subset_value": ""})
    names = lambda rows: {r["metric"] for r in rows}  # noqa: E731
    rows = metric_rows(scores, [fold], {}, False, probabilities=True, seed=0, n_resamples=0, extra=chosen.extra_metrics)
    assert {"WA-F1", "UAR", "AUC", "ACC"} <= names(rows)
    assert next(r for r in rows if r["metric"] == "UAR")["value"] == pytest.approx(0.75)
    plain = metric_rows(scores, [fold], {}, False, probabilities=False, seed=0, n_resamples=0, extra=("UAR",))
    assert "UAR" not in names(plain)  # a threshold needs probabilities
