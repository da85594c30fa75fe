"""FauForensics under the harness: the tiny twin trains on the demo corpus with a falling loss and scores
every clip, a saved detector reloads to the same scores, the full model will not train from random
encoders, and the authors' optimiser and schedule."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from avbench import protocol, registry
from avbench.cache import MediaCache
from avbench.detectors.fauforensics.detector import WITHOUT_AUDIO, FauForensicsDetector, FauForensicsTinyDetector
from avbench.detectors.fauforensics.training import AdamP, label_triple, poly, windows_of
from avbench.loader import MediaLoader
from avbench.metrics import FOUR_CLASSES
from avbench.runner import RunSettings, Runner, UsageError

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_the_tiny_twin_trains_and_scores_every_demo_clip_and_reloads_to_the_same_scores(tiny_demo, tmp_path):
    settings = RunSettings(detector="fauforensics_tiny", protocol=protocol.get("demo"), seeds=(0,),
                           runs_dir=tmp_path / "runs", data_roots={"demo": tiny_demo}, cache_dir=tmp_path / "cache",
                           bootstrap_resamples=0)
    (outcome,) = Runner(settings).run()
    record = outcome.record
    assert record["coverage"]["failed"] == 0 and record["coverage"]["scored"] == record["coverage"]["total"]
    losses = [r["loss"] for r in record["folds"][0]["history"]]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert any(r["best"] for r in record["folds"][0]["history"]) and record["aggregation"] == "mean_prob"
    reloaded = FauForensicsTinyDetector.load(outcome.record_path.parent / "models" / "main")
    scores = pd.read_parquet(outcome.record_path.parent / "scores.parquet").head(3)
    refs = {r.clip_id: r for r in registry.datasets.get("demo")().index(tiny_demo).refs()}
    loader = MediaLoader(MediaCache(tmp_path / "cache"))
    for clip_id, score in zip(scores["clip_id"], scores["score"]):  # the saved model scores as the fitted one did
        assert reloaded.score(loader.load(refs[clip_id], reloaded.input_spec)) == pytest.approx(score, abs=1e-6)


def test_the_four_class_variant_reports_class_accuracy_beside_the_binary_auc(tiny_demo, tmp_path):
    settings = RunSettings(detector="fauforensics_tiny", protocol=protocol.get("demo+four_class"), seeds=(0,),
                           runs_dir=tmp_path / "runs", data_roots={"demo": tiny_demo}, cache_dir=tmp_path / "cache",
                           bootstrap_resamples=0, detector_options={"classes": 4, "epochs": 1})
    (outcome,) = Runner(settings).run()
    record = outcome.record
    assert record["class_names"] == list(FOUR_CLASSES) and record["coverage"]["failed"] == 0
    assert record["folds"][0]["train_failed"] == {"no_class": 2}  # 2 training desyncs: fakes of no class
    whole = {m["metric"]: m for m in record["metrics"] if m["subset"] == "all"}
    assert {"AUC", "ACC", "CLASS_ACC", "CLASS_AUC"} <= set(whole)
    assert 0 <= whole["CLASS_ACC"]["value"] <= 1 and whole["CLASS_ACC"]["n_class_unknown"] == 2  # 2 test desyncs
    assert not any(m["metric"].startswith("CLASS") for m in record["metrics"] if m["subset"] != "all")
    scores = pd.read_parquet(outcome.record_path.parent / "scores.parquet")
    probabilities = np.stack(scores["class_probabilities"].to_list())
    assert probabilities.shape == (len(scores), 4) and np.allclose(probabilities.sum(axis=1), 1)
    assert np.allclose(scores["score"], 1 - probabilities[:, 0])  # mean_prob: the binary score is 1 - P(RARV)
    assert scores["true_class"].isna().sum() == 2

    binary = RunSettings(**{**vars(settings), "detector_options": {}})
    with pytest.raises(UsageError, match="four-class task.*is binary.*-o classes=4"):
        Runner(binary).run()
    with pytest.raises(UsageError, match=r"run it on a four-class protocol, 'demo\+four_class'"):
        Runner(RunSettings(**{**vars(settings), "protocol": protocol.get("demo")})).run()


def test_a_clip_without_audio_is_scored_as_without_audio_says(tiny_demo, tmp_path):
    ref = next(r for r in registry.datasets.get("demo")().index(tiny_demo).refs() if r.label == 1)
    loader = MediaLoader(MediaCache(tmp_path / "cache"))
    spec = FauForensicsTinyDetector.input_spec
    clip, silent = loader.load(ref, spec, remove_audio=True), loader.load(ref, spec)
    assert clip.audio is None and clip.audio_removed
    silent.audio = np.zeros_like(silent.audio)
    scores = {how: FauForensicsTinyDetector(without_audio=how).score(clip) for how in WITHOUT_AUDIO}
    assert all(0 < s < 1 for s in scores.values()) and len(set(scores.values())) == 3
    assert scores["silent_track"] == pytest.approx(FauForensicsTinyDetector().score(silent), abs=1e-9)
    visual = FauForensicsTinyDetector()
    video, _ = windows_of(clip.faces, None, visual.model.cfg, visual.max_windows)
    with torch.inference_mode():
        p_video_fake = visual.model.visual_logits(video).softmax(dim=-1)[:, 1].mean()
    assert scores["visual_head"] == pytest.approx(float(p_video_fake), abs=1e-6)
    with pytest.raises(ValueError, match="four-class model needs it"):
        FauForensicsTinyDetector(classes=4).score(clip)
    with pytest.raises(ValueError, match="without_audio is one of"):
        FauForensicsTinyDetector(without_audio="zeros")


def test_the_full_model_does_not_train_from_random_encoders():
    detector = FauForensicsDetector()
    with pytest.raises(FileNotFoundError, match="-o fau_weights=PATH, -o video_weights=PATH, -o audio_weights=PATH"):
        detector.prepare(training=True)
    with pytest.raises(ValueError, match="classes is 2"):
        FauForensicsDetector(classes=3)
    with pytest.raises(ValueError, match="fau_bn is 'train'"):
        FauForensicsDetector(fau_bn="eval")
    assert FauForensicsTinyDetector(fau_bn="frozen").model.fau_bn == "frozen"
    assert FauForensicsDetector().config()["epochs"] == 50 and FauForensicsTinyDetector().config()["epochs"] == 4


def test_labels_for_two_and_four_classes():
    from pathlib import Path

    from avbench.clips import ClipRef

    ref = ClipRef(clip_id="x", dataset="t", path=Path("x.mp4"), label=1, audio_label=1, video_label=0)
    assert label_triple(ref, 2) == (1, 1, 0) and label_triple(ref, 4) == (2, 1, 0)  # FARV
    unknown = ClipRef(clip_id="y", dataset="t", path=Path("y.mp4"), label=1)
    assert label_triple(unknown, 2) == (1, 1, 1) and label_triple(unknown, 4) is None
    desync = ClipRef(clip_id="z", dataset="t", path=Path("z.mp4"), label=1, audio_label=0, video_label=0)
    assert label_triple(desync, 4) is None  # fake, but of none of the four classes


def test_the_poly_schedule_runs_from_1e_4_to_1e_7():
    factor = poly(100)
    assert factor(0) == 1.0 and factor(100) == pytest.approx(1e-3)
    assert factor(50) == pytest.approx((1 - 1e-3) * 0.5**0.9 + 1e-3)


def test_adamp_is_adamw_on_vectors_and_keeps_scale_invariant_weights_on_their_sphere():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, generator=g).requires_grad_()
    b = a.detach().clone().requires_grad_()
    ours, reference = AdamP([a], lr=1e-2, weight_decay=1e-2), torch.optim.AdamW([b], lr=1e-2, weight_decay=1e-2)
    for _ in range(3):
        grad = torch.randn(5, generator=g)
        for p, opt in ((a, ours), (b, reference)):
            p.grad = grad.clone()
            opt.step()
    torch.testing.assert_close(a, b)
    w = torch.randn(4, 6, generator=g).requires_grad_()
    radial = torch.randn(4, 6, generator=g)
    w.grad = radial - (radial * w).sum(dim=1, keepdim=True) * w / w.square().sum(dim=1, keepdim=True)  # orthogonal
    before = w.detach().norm(dim=1)
    AdamP([w], lr=1e-2, weight_decay=0.0).step()
    assert torch.allclose(w.detach().norm(dim=1), before, rtol=1e-3)  # the update stays tangent
    assert math.isfinite(float(w.detach().sum()))
