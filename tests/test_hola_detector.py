"""HOLA under the harness: the tiny twin fine-tunes on the demo corpus with a falling loss (selecting on a
dev slice of training speakers) and scores every test clip; reloads to the same scores; PSSI with the test
set as its pool is transductive and listed apart, with a held-out pool it is not; the full model refuses
to fine-tune from random encoders; the ablations claim their Table 3 rows; layer-wise decay and the
cosine schedule."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from avbench import protocol, registry
from avbench.cache import MediaCache
from avbench.detectors.hola.detector import HOLADetector, HOLATinyDetector
from avbench.detectors.hola.training import cosine, parameter_groups
from avbench.leaderboard import TRANSDUCTIVE, build_leaderboard, load_published
from avbench.loader import MediaLoader
from avbench.runner import RunError, RunSettings, Runner

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def settings(tiny_demo, cache_dir, runs, pool=None, **options):
    chosen = protocol.get("demo") if pool is None else protocol.get("demo").with_params(pool=pool)
    return RunSettings(detector="hola_tiny", protocol=chosen, seeds=(0,), runs_dir=runs, data_roots={"demo": tiny_demo},
                       cache_dir=cache_dir, bootstrap_resamples=0, detector_options=options)


def test_the_tiny_twin_fine_tunes_with_a_falling_loss_scores_every_clip_and_reloads(tiny_demo, cache_dir, tmp_path):
    (outcome,) = Runner(settings(tiny_demo, cache_dir, tmp_path / "runs")).run()
    record = outcome.record
    assert record["coverage"]["scored"] == record["coverage"]["total"] == 10 and record["transductive"] is False
    history = record["folds"][0]["history"]
    losses = [r["loss"] for r in history["finetune"]]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert history["dev_clips"] > 0 and history["effective_lr"] == pytest.approx(1e-3)
    assert "pool" not in record["folds"][0]
    saved = outcome.record_path.parent / "models" / "main"
    reloaded = HOLATinyDetector.load(saved)
    scores = pd.read_parquet(outcome.record_path.parent / "scores.parquet").head(3)
    refs = {r.clip_id: r for r in registry.datasets.get("demo")().index(tiny_demo).refs()}
    loader = MediaLoader(MediaCache(cache_dir))
    clips = [loader.load(refs[c], reloaded.input_spec) for c in scores["clip_id"]]
    assert reloaded.score_batch(clips) == pytest.approx(scores["score"].tolist(), abs=1e-6)


def test_pssi_on_the_test_set_is_transductive_and_listed_apart_and_on_a_held_out_pool_it_is_not(
        tiny_demo, cache_dir, tmp_path):
    (on_test,) = Runner(settings(tiny_demo, cache_dir, tmp_path / "a", {"dataset": "demo", "split": "test"},
                                 pssi=True)).run()
    (held_out,) = Runner(settings(tiny_demo, cache_dir, tmp_path / "b", {"dataset": "demo", "split": "val"},
                                  pssi=True)).run()
    for outcome, transductive in ((on_test, True), (held_out, False)):
        record = outcome.record
        pool = record["folds"][0]["pool"]
        assert record["transductive"] is transductive and pool["transductive"] is transductive
        assert len(pool["rounds"]) == 2 and len(record["folds"][0]["history"]["pssi"]) == 2  # tiny: 2 rounds
        for stats in pool["rounds"]:
            assert stats["pseudo_labels"] == sum(stats["per_class"].values())
            assert stats["accuracy"] is None or 0 <= stats["accuracy"] <= 1
        assert record["coverage"]["scored"] == 10
    board = build_leaderboard([on_test.record, held_out.record])
    assert set(board["detector"]) == {"hola_tiny", "hola_tiny" + TRANSDUCTIVE}


def test_pssi_needs_a_pool(tiny_demo, cache_dir, tmp_path):
    with pytest.raises(RunError, match="unlabelled pool"):
        Runner(settings(tiny_demo, cache_dir, tmp_path / "runs", pssi=True)).run()


def test_the_full_model_refuses_to_fine_tune_from_random_encoders():
    with pytest.raises(FileNotFoundError, match="-o weights=PATH"):
        HOLADetector().prepare(training=True)
    with pytest.raises(ValueError, match="pssi_tau"):
        HOLADetector(pssi_tau=0.7)


def test_each_ablation_claims_its_table_3_row_and_pssi_rows_are_marked_possibly_transductive():
    rows = {(): "HOLA + ICMI + LGCF + refiner", ("use_refiner",): "HOLA + ICMI + LGCF",
            ("use_refiner", "use_lgcf"): "HOLA + ICMI", ("use_refiner", "use_lgcf", "use_icmi"): "HOLA baseline"}
    for off, row in rows.items():
        assert HOLADetector(**{name: False for name in off}).published_as == (row,)
    assert HOLADetector(pssi=True).published_as == ("HOLA", "HOLA + ICMI + LGCF + refiner + PSSI")
    assert HOLADetector(use_icmi=False).published_as == ()  # not a row of the cumulative table
    assert HOLATinyDetector().published_as == ()
    published = load_published()
    pssi_rows = published[published["method"].str.contains("PSSI") & published["table"].str.startswith("Table")]
    assert len(pssi_rows) and pssi_rows["note"].str.contains("possibly transductive").all()


def test_layer_wise_decay_and_the_cosine_schedule():
    model = HOLATinyDetector().model
    groups = parameter_groups(model, 0.02, 0.75)
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())
    scales = {g["name"]: g["lr_scale"] for g in groups}
    top = model.num_layers
    assert scales[f"layer{top}_decay"] == 1.0 and scales["layer0_decay"] == pytest.approx(0.75 ** top)
    assert all(g["weight_decay"] == 0 for g in groups if g["name"].endswith("no_decay"))
    assert groups[0]["lr_scale"] == 1.0  # the heads' group is the one the history calls "lr"
    factor = cosine(10, 1.5e-4, 1e-6)
    assert factor(0) == 1.0 and factor(10) == pytest.approx(1e-6 / 1.5e-4) and factor(5) == pytest.approx(
        (1 + 1e-6 / 1.5e-4) / 2)
    assert all(not math.isnan(factor(k)) for k in range(12))


def test_upstreams_regularisers_are_flags_that_mix_what_they_claim():
    from avbench.detectors.hola.training import Regularisation, erase, mix

    g = torch.Generator().manual_seed(0)
    video, audio, labels = torch.zeros(4, 3, 4, 32, 32), torch.zeros(4, 1, 32, 16), torch.tensor([0, 0, 1, 1])
    video[2:], audio[2:] = 1.0, 1.0
    same = mix(video, audio, labels, Regularisation(), g)
    assert same[0] is video and torch.equal(same[2], torch.tensor([[1.0, 0], [1, 0], [0, 1], [0, 1]]))
    smoothed = mix(video, audio, labels, Regularisation(label_smoothing=0.1), g)[2]
    assert torch.allclose(smoothed[0], torch.tensor([0.95, 0.05]))
    mixed_video, mixed_audio, targets = mix(video, audio, labels, Regularisation(mixup=0.8), g)
    lam = float(targets[0, 0])  # the first clip (real) mixed with the last (fake)
    assert torch.allclose(mixed_video[0], torch.full_like(mixed_video[0], 1 - lam))
    assert torch.allclose(mixed_audio[0], torch.full_like(mixed_audio[0], 1 - lam))
    assert torch.allclose(targets.sum(1), torch.ones(4))
    cut_video, _, cut_targets = mix(video, audio, labels, Regularisation(cutmix=1.0), g)
    assert torch.allclose(cut_targets[0, 1], cut_video[0].mean())  # the fake share is the pasted area
    erased = erase(torch.zeros(3, 4, 32, 32), g)
    changed = erased != 0
    assert changed.any() and torch.equal(changed[:, 0], changed[:, 3])  # one rectangle on every frame
    with pytest.raises(ValueError, match="random_erasing"):
        HOLATinyDetector(random_erasing=1.5)


def test_test_time_views_average_the_probabilities_of_shifted_frame_grids():
    import numpy as np

    from avbench.clips import Clip, ClipRef
    from avbench.detectors.hola import training
    from avbench.detectors.hola.preprocess import frame_indices

    assert frame_indices(160, 16, offset=0.25).indices.tolist() == [int(2.5 + 10 * k) for k in range(16)]
    rng = np.random.default_rng(0)
    clip = Clip(ref=ClipRef("c", "d", "c.mp4", 0), fps=25.0, frames=rng.integers(0, 255, (40, 45, 45, 3), np.uint8),
                audio=rng.normal(0, 0.1, 25600).astype(np.float32))
    three = HOLATinyDetector(tta_views=3)
    model = three.model

    def view(offset: float) -> float:
        inputs = [training.clip_inputs(clip, model, offset=offset)[:2]]
        return float(training.fake_probabilities(model, inputs, 1, torch.device("cpu"))[0])

    assert HOLATinyDetector().score(clip) == pytest.approx(view(0.5), abs=1e-6)  # one view: the segments' centres
    assert three.score(clip) == pytest.approx((view(1 / 6) + view(0.5) + view(5 / 6)) / 3, abs=1e-6)


def test_window_mode_scores_the_max_of_its_windows_and_trains_on_one_window_a_clip(tiny_demo, cache_dir, tmp_path):
    import numpy as np

    from avbench.clips import Clip, ClipRef
    from avbench.detectors.hola import training

    assert training.window_starts(160, 64) == [0, 32, 64, 96] and training.window_starts(100, 64) == [0, 32, 36]
    assert training.window_starts(10, 64) == [0]
    rng = np.random.default_rng(0)
    clip = Clip(ref=ClipRef("c", "d", "c.mp4", 0), fps=25.0, frames=rng.integers(0, 255, (40, 45, 45, 3), np.uint8),
                audio=rng.normal(0, 0.1, 25600).astype(np.float32))
    detector = HOLATinyDetector(temporal_mode="window")
    model, sampling = detector.model, detector.sampling()
    per_window = [float(training.fake_probabilities(
        model, [training.clip_inputs(clip, model, sampling=sampling, window=w)[:2]], 1, torch.device("cpu"))[0])
        for w in training.window_starts(40, 16)]  # tiny: 4 frames 4 apart, a window every 8 frames
    assert len(per_window) == 4 and detector.score(clip) == pytest.approx(max(per_window), abs=1e-6)
    mean = HOLATinyDetector(temporal_mode="window", window_aggregation="mean")
    assert mean.score(clip) == pytest.approx(sum(per_window) / 4, abs=1e-6)
    video, audio, _ = training.clip_inputs(clip, model, torch.Generator().manual_seed(0), sampling=sampling)
    assert video.shape == (3, 4, 32, 32) and audio.shape == (1, 32, 16)
    (outcome,) = Runner(settings(tiny_demo, cache_dir, tmp_path / "runs", temporal_mode="window")).run()
    assert outcome.record["coverage"]["scored"] == 10
