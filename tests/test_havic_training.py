"""HAVIC training: the losses against the paper's equations, SpecAugment, training windows, the resumable
loops, the detector's fit under the harness and the pre-training command (tiny config on the CPU)."""

from __future__ import annotations

import json
import logging
import math
from unittest import mock
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from avbench import protocol
from avbench.cache import MediaCache
from avbench.clips import Clip, ClipError, ClipRef
from avbench.detectors.havic import HAVICDetector, HAVICTinyDetector, training
from avbench.detectors.havic.checkpoint import load_pretraining
from avbench.detectors.havic.model import HAVIC, HAVICConfig, HAVICPretrain, patchify_audio, patchify_video
from avbench.detectors.havic.preprocess import FBANK_MEAN, FBANK_STD, clip_windows, kaldi_fbank
from avbench.detectors.havic.training import (SELECTION, ClipStore, contrastive_loss, finetune, finetune_loss,
                                              label_combinations, pretrain, pretrain_losses, spec_augment)
from avbench.loader import ClipSet, MediaLoader
from avbench.runner import RunSettings, Runner
from avbench.training import LAST

TINY = HAVICConfig.tiny()
SPEC = HAVICTinyDetector.input_spec


pytestmark = pytest.mark.usefixtures("torch_one_thread")


# -- synthetic clips: a loader that makes them from the ref, no media -----------------------------------------

class SyntheticLoader:
    """Clips made from the ref: meta `frames` (default 10, 5 fps), `broken` (fails to load); fakes have a
    dark upper face and louder audio, so there is something to learn."""

    def load(self, ref: ClipRef, spec, remove_audio: bool = False) -> Clip:
        if ref.meta.get("broken"):
            raise ClipError("decode_error", f"{ref.path}: cannot be decoded")
        rng = np.random.default_rng(int(ref.clip_id.removeprefix("c")))
        n = ref.meta.get("frames", 10)
        faces = rng.integers(0, 256, (n, TINY.image_size, TINY.image_size, 3), dtype=np.uint8)
        faces[:, : TINY.image_size // 2] //= 1 + 3 * ref.label
        audio = ((0.05 + 0.2 * ref.label) * rng.standard_normal(n * 3200)).astype(np.float32)
        return Clip(ref=ref, fps=5.0, faces=faces, audio=audio)


def refs(n: int, start: int = 0, **meta) -> list[ClipRef]:
    return [ClipRef(clip_id=f"c{start + i}", dataset="t", path=Path(f"/data/c{start + i}.mp4"), label=i % 2,
                    audio_label=i % 2 if i % 4 != 3 else 0, video_label=0 if i % 4 != 3 else 1, meta=dict(meta))
            for i in range(n)]


def clips(items: list[ClipRef]) -> ClipSet:
    return ClipSet(items, SyntheticLoader(), SPEC)


def inputs(batch: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, TINY.audio_frames, TINY.mel_bins, generator=g),
            torch.rand(batch, 3, TINY.n_frames, TINY.image_size, TINY.image_size, generator=g))


def tiny(cls, seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(TINY)


# -- losses ---------------------------------------------------------------------------------------------------

def eq_3_by_loops(v: np.ndarray, a: np.ndarray, tau: float) -> float:
    """Eq. 2-3 written out term by term, both directions summed."""
    b, t, _ = v.shape

    def sim(x, y):
        return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))

    def w(i, s, j, u):
        return 1 - 2 / (1 + math.exp(abs(s - u))) if i == j and s != u else 1.0  # 1 - 2 sigmoid(-|t - t'|)

    total = 0.0
    for x, y in ((v, a), (a, v)):
        for i in range(b):
            for s in range(t):
                numerator = math.exp(sim(x[i, s], y[i, s]) / tau)
                denominator = sum(math.exp(sim(x[i, s], y[j, u]) / tau) * w(i, s, j, u)
                                  for j in range(b) for u in range(t))
                total -= math.log(numerator / denominator) / (2 * b * t)
    return total


def test_contrastive_loss_is_eq_2_and_3():
    g = torch.Generator().manual_seed(0)
    v, a = torch.randn(3, 4, 8, generator=g), torch.randn(3, 4, 8, generator=g)
    ours = contrastive_loss(v, a, temperature=0.07).item()
    assert ours == pytest.approx(eq_3_by_loops(v.double().numpy(), a.double().numpy(), 0.07), rel=1e-5)
    # the soft weights matter: plain InfoNCE over the same pairs (all weights 1) differs
    plain = training.soft_negative_weights(3, 4).fill_(1.0)
    with mock.patch.object(training, "soft_negative_weights", lambda *args: plain):
        assert contrastive_loss(v, a, temperature=0.07).item() != pytest.approx(ours, rel=1e-3)
    weights = training.soft_negative_weights(3, 4)
    assert weights[0, 1] == pytest.approx(1 - 2 / (1 + math.e)) and weights[0, 4] == 1 and weights[5, 5] == 1
    assert weights[1, 0] == weights[0, 1] and weights[0, 3] > weights[0, 1]  # further apart: more negative


def test_pretrain_losses_combine_as_eq_5_and_reconstruct_all_or_masked_tokens():
    model = tiny(HAVICPretrain).train()
    audio, video = inputs()
    out = model(audio, video, generator=torch.Generator().manual_seed(0))
    losses = pretrain_losses(out, audio, video, TINY)
    assert set(losses) == {"rec", "cl", "cross", "total"}
    torch.testing.assert_close(losses["total"], losses["rec"] + 0.01 * losses["cl"] + 1.0 * losses["cross"])
    pv, pa = patchify_video(video, TINY), patchify_audio(audio, TINY)
    every = (np.mean([((r - pv) ** 2).mean().item() for r in out.video_recons])
             + np.mean([((r - pa) ** 2).mean().item() for r in out.audio_recons]))
    assert losses["rec"].item() == pytest.approx(every, rel=1e-5)

    def masked_mse(recons, target, keep):
        hidden = [sorted(set(range(target.shape[1])) - set(k.tolist())) for k in keep]
        return np.mean([np.mean([((r[i, h] - target[i, h]) ** 2).mean().item() for i, h in enumerate(hidden)])
                        for r in recons])

    masked = pretrain_losses(out, audio, video, TINY, rec_tokens="masked")
    expected = masked_mse(out.video_recons, pv, out.video_keep) + masked_mse(out.audio_recons, pa, out.audio_keep)
    assert masked["rec"].item() == pytest.approx(expected, rel=1e-5)
    cross = ((out.video_from_audio - out.video_target) ** 2).mean() + ((out.audio_from_video - out.audio_target) ** 2).mean()
    assert losses["cross"].item() == pytest.approx(cross.item(), rel=1e-6)
    with pytest.raises(ValueError, match="rec_tokens"):
        pretrain_losses(out, audio, video, TINY, rec_tokens="visible")


def test_finetune_loss_is_the_sum_of_three_bce():
    logits = HAVIC(TINY).heads(*inputs(3))
    y, ya, yv = torch.tensor([1.0, 0, 1]), torch.tensor([0.0, 0, 1]), torch.tensor([1.0, 0, 0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected = bce(logits.main[:, 0], y) + bce(logits.audio[:, 0], ya) + bce(logits.visual[:, 0], yv)
    torch.testing.assert_close(finetune_loss(logits, y, ya, yv), expected)


def test_losses_fall_over_a_few_steps_on_a_fixed_batch():
    torch.manual_seed(0)  # drop-path in the visual blocks
    audio, video = inputs(4)
    g = torch.Generator().manual_seed(0)
    keep = (training.tube_mask(4, TINY, g), training.segment_mask(4, TINY, g))
    model = tiny(HAVICPretrain).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    totals = []
    for _ in range(12):
        loss = pretrain_losses(model(audio, video, video_keep=keep[0], audio_keep=keep[1]), audio, video, TINY)["total"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        totals.append(loss.item())
    assert totals[-1] < 0.8 * totals[0]

    model = tiny(HAVIC).train()
    labels = (torch.tensor([0.0, 1, 0, 1]), torch.tensor([0.0, 1, 0, 0]), torch.tensor([0.0, 0, 0, 1]))
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(12):
        loss = finetune_loss(model.heads(audio, video), *labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


# -- SpecAugment, windows, sampling -------------------------------------------------------------------------

def test_spec_augment_masks_one_band_and_one_span_within_bounds():
    x = torch.randn(200, 64, 128) + 10.0
    y = spec_augment(x, 20, 6, torch.Generator().manual_seed(0), mask_value=-99.0)
    assert torch.all(x > 0)  # the input is not changed
    widths = []
    for original, augmented in zip(x, y):
        hit = augmented == -99.0
        bands, spans = hit.all(0), hit.all(1)  # mel bins masked at every frame; frames masked at every bin
        assert torch.equal(hit, bands[None, :] | spans[:, None])
        for line, bound in ((bands, 20), (spans, 6)):
            where = line.nonzero().flatten()
            assert len(where) < bound and (len(where) == 0 or where[-1] - where[0] + 1 == len(where))
        assert torch.equal(augmented[~hit], original[~hit])
        widths.append((int(bands.sum()), int(spans.sum())))
    assert max(w for w, _ in widths) >= 15 and max(s for _, s in widths) == 5 and min(w for w, _ in widths) < 5
    single = spec_augment(x[0], 20, 6, torch.Generator().manual_seed(0), mask_value=-99.0)
    assert torch.equal(single, y[0])  # one sample draws the same masks as the first of a batch
    assert torch.equal(spec_augment(x, 0, 0), x)


def test_training_windows_are_the_windows_inference_scores():
    item = refs(1, frames=13)
    store = ClipStore(clips(item), TINY)
    (i,) = store.usable()
    clip = SyntheticLoader().load(item[0], SPEC)
    videos, audios = clip_windows(clip.faces, clip.audio, TINY)
    assert store.n_windows(i) == len(videos) == 3
    for w in range(3):
        video, audio = store.window(i, w)
        assert video.dtype == torch.uint8 and torch.equal(video, videos[w])
        torch.testing.assert_close(audio, audios[w])
    start, (a, b) = store.entries[i].plan[2]
    _, pretraining = store.window(i, 2, training.PRETRAIN_FBANK)
    wave = torch.from_numpy(clip.audio[a:b])
    raw = torch.nn.functional.interpolate(kaldi_fbank(wave - wave.mean()).T[None], size=TINY.audio_frames,
                                          mode="linear", align_corners=False)[0].T
    torch.testing.assert_close(pretraining, (raw + 5.081) / 4.4849, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(audios[2], (raw - FBANK_MEAN) / FBANK_STD, atol=1e-4, rtol=1e-5)
    # validation reads every window each epoch: the fbank is computed once, while the memory budget allows
    first = store.all_windows(i)
    with mock.patch("avbench.detectors.havic.preprocess.window_fbank", side_effect=AssertionError("computed again")):
        again = store.all_windows(i)
    assert torch.equal(again[0], videos) and torch.equal(again[1], first[1])
    torch.testing.assert_close(first[1], audios)
    tight = ClipStore(clips(item), TINY, memory_bytes=0)  # no room: computed at each call, the same values
    (j,) = tight.usable()
    torch.testing.assert_close(tight.all_windows(j)[1], audios)
    assert not tight._all_fbanks


def test_clips_that_fail_or_are_too_short_are_recorded_not_dropped():
    items = refs(4) + refs(1, 10, frames=5) + refs(1, 11, broken=True)
    clipset = clips(items)
    store = ClipStore(clipset, TINY)
    assert [store.entries[i].ref.clip_id for i in store.usable()] == ["c0", "c1", "c2", "c3"]
    assert {k: v.reason for k, v in clipset.failures.items()} == {"c10": "too_short", "c11": "decode_error"}
    padded = ClipStore(clips(items), TINY, pad_short=True)
    assert len(padded.usable()) == 5
    short = SyntheticLoader().load(items[4], SPEC)
    assert torch.equal(padded.window(4, 0)[0], clip_windows(short.faces, short.audio, TINY, pad_short=True)[0][0])
    with pytest.raises(ValueError, match="decode_error"):
        pretrain(tiny(HAVICPretrain), clips(refs(1, 20, broken=True)), epochs=1, batch_size=2)


def test_sampling_balances_the_audio_video_label_combinations():
    items = refs(8)  # (audio, video) label combinations: (0, 0) x4, (1, 0) x2, (0, 1) x2
    assert label_combinations(items) == [(r.audio_label, r.video_label) for r in items]
    unknown = [ClipRef(clip_id="c0", dataset="t", path=Path("x"), label=1), ClipRef(clip_id="c1", dataset="t",
                                                                                    path=Path("y"), label=0)]
    assert label_combinations(unknown) == [(1, 1), (0, 0)]  # missing modality labels: the clip label


def test_model_selection_prefers_auc_then_loss():
    better = lambda auc, loss, best: SELECTION.better({"auc": auc, "loss": loss}, best)  # noqa: E731
    best = {"auc": 0.8, "loss": 1.0}
    assert better(0.9, 5.0, best) and not better(0.7, 0.1, best)
    assert better(0.8, 0.9, best) and not better(0.8, 1.1, best)
    assert better(None, 0.5, {"auc": None, "loss": 1.0}) and better(0.5, 9.0, None)


def test_fine_tuning_keeps_the_weights_of_its_best_validation_epoch(monkeypatch):
    first_only = mock.Mock(better=lambda result, best: best is None)
    monkeypatch.setattr(training, "SELECTION", first_only)  # epoch 1 stays the best
    model, snapshots = tiny(HAVIC), []
    history = finetune(model, clips(refs(6)), clips(refs(4, 100)), seed=3, epochs=2, batch_size=4, lr=1e-3,
                       head_lr=1e-3, spec_time_mask=6,
                       on_epoch=lambda r: snapshots.append({k: v.clone() for k, v in model.state_dict().items()}))
    assert [r["best"] for r in history] == [True, False]
    final = model.state_dict()
    assert all(torch.equal(final[k], v) for k, v in snapshots[0].items())
    assert not all(torch.equal(final[k], v) for k, v in snapshots[1].items())


# -- the loops: resumable, reproducible, selecting on validation only -----------------------------------------

class Interrupt(Exception):
    pass


def _stop_after_first(record):
    if record["epoch"] == 1:
        raise Interrupt


def _run(kind: str, directory: Path | None, on_epoch=None):
    if kind == "pretrain":
        model = tiny(HAVICPretrain)
        history = pretrain(model, clips(refs(6)), seed=3, epochs=2, batch_size=4, lr=1e-3, warmup_epochs=0.5,
                           real_only=False, directory=directory, on_epoch=on_epoch)
    else:
        model = tiny(HAVIC)
        history = finetune(model, clips(refs(6)), clips(refs(4, 100)), seed=3, epochs=2, batch_size=4, lr=1e-3,
                           head_lr=1e-3, spec_time_mask=6, directory=directory, on_epoch=on_epoch)
    return model, history


@pytest.mark.parametrize("kind", ["pretrain", "finetune"])
def test_an_interrupted_run_resumes_to_the_same_parameters(kind, tmp_path):
    torch.manual_seed(123)
    caller_state = torch.get_rng_state()
    straight, history = _run(kind, tmp_path / "straight")
    assert torch.equal(torch.get_rng_state(), caller_state)  # training leaves the caller's generator alone
    with pytest.raises(Interrupt):
        _run(kind, tmp_path / "interrupted", on_epoch=_stop_after_first)
    saved = torch.load(tmp_path / "interrupted" / LAST, weights_only=True)
    assert len(saved["history"]) == 1 and {"model", "optimizer", "scheduler", "history", "rng"} <= set(saved)
    resumed, resumed_history = _run(kind, tmp_path / "interrupted")
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("seconds", "peak_memory_mib")} for r in h]  # noqa: E731
    assert strip(resumed_history) == strip(history) and len(history) == 2
    again, _ = _run(kind, tmp_path / "interrupted")  # a finished run is not redone
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), straight.state_dict().values()))
    if kind == "pretrain":
        assert history[-1]["loss"] < history[0]["loss"]
        with pytest.raises(ValueError, match="other settings"):
            pretrain(tiny(HAVICPretrain), clips(refs(6)), seed=4, epochs=2, batch_size=4, real_only=False,
                     directory=tmp_path / "straight")
    else:
        assert any(r["best"] for r in history) and all(r["val_clips"] == 4 for r in history)


def test_training_on_the_core_trainer_gives_the_numbers_of_the_loops_it_replaced():
    """The reference was taken from HAVIC's own loops (tests/data/havic_training_reference.json, commit
    in the file) before they moved onto avbench.training: same losses, same weight matrices (sum and
    sum of absolute values of each, within 1e-4 of the latter: another torch build rounds otherwise).
    Vectors are left out: biases whose gradient is zero in exact arithmetic (a key bias shifts a whole
    softmax row) get Adam steps made of rounding noise, which another build or thread count changes."""
    reference = json.loads((Path(__file__).parent / "data" / "havic_training_reference.json").read_text())
    for kind in ("pretrain", "finetune"):
        model, history = _run(kind, None)
        for got, want in zip(history, reference[kind]["losses"], strict=True):
            assert {k: got[k] for k in want} == pytest.approx(want, rel=1e-6), kind
        state = model.state_dict()
        moved = {name: (float(state[name].double().sum()) - total, float(state[name].double().abs().sum()) - absolute,
                        absolute) for name, (total, absolute) in reference[kind]["parameters"].items()
                 if state[name].ndim >= 2}
        assert {name: d for name, d in moved.items() if max(abs(d[0]), abs(d[1])) > 1e-4 * d[2]} == {}, kind


def test_pretraining_uses_the_real_clips_only():
    history = pretrain(tiny(HAVICPretrain), clips(refs(6)), epochs=1, batch_size=8)
    assert history[0]["clips"] == 3


def test_without_validation_clips_a_stratified_hold_out_selects(caplog):
    with caplog.at_level(logging.WARNING):
        history = finetune(tiny(HAVIC), clips(refs(8)), clips([]), epochs=1, batch_size=4)
    assert "hold-out" in caplog.text and history[0]["val_clips"] == 2 and history[0]["clips"] == 6


# -- the detector ---------------------------------------------------------------------------------------------

def test_options_resolve_to_the_variant_defaults_and_device_is_not_one():
    full, small = HAVICDetector().config(), HAVICTinyDetector().config()
    assert (full["epochs"], full["train_batch_size"], full["lr"], full["head_lr"]) == (50, 32, 1e-5, 1e-4)
    assert (full["pretrain_epochs"], full["spec_freq_mask"], full["spec_time_mask"]) == (0, 20, 100)
    assert small["epochs"] < 10 and small["spec_time_mask"] == 6 and small["pretrain_epochs"] >= 1
    assert "device" not in full and HAVICTinyDetector().to("cpu").device == "cpu"
    assert HAVICTinyDetector(pretrained="pt.safetensors").pretrain_epochs == 0  # a checkpoint: no more pre-training
    with pytest.raises(ValueError, match="fine-tuned model"):
        HAVICDetector(weights="ft.pth", pretrain_epochs=2)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        HAVICTinyDetector(epochs=0)


def test_full_havic_refuses_to_fine_tune_a_random_vit_b():
    with pytest.raises(ValueError, match="pretrained=PATH") as info:
        HAVICDetector().fit(None, None, seed=0)
    assert "from_scratch" in str(info.value)
    for ok in (HAVICDetector(from_scratch=True), HAVICDetector(pretrain_epochs=1), HAVICDetector(pretrained="p.pth"),
               HAVICDetector(weights="w.pth"), HAVICTinyDetector()):
        ok.check_can_fit()


def test_fit_pretrains_then_fine_tunes_and_resumes_from_its_training_dir(tmp_path):
    train, val = refs(8), refs(4, 100)
    detector = HAVICTinyDetector(pretrain_epochs=1, epochs=2, seed=5)
    detector.use_training_dir(tmp_path)
    detector.fit(clips(train), clips(val), seed=1)
    assert (tmp_path / "pretrain" / LAST).is_file() and (tmp_path / "finetune" / LAST).is_file()
    assert [len(detector.history[k]) for k in ("pretrain", "finetune")] == [1, 2]
    assert detector.history["pretrain"][0]["clips"] == 4 and not detector.model.training
    again = HAVICTinyDetector(pretrain_epochs=1, epochs=2, seed=5)
    again.use_training_dir(tmp_path)  # both runs are complete there: nothing is trained again
    again.fit(clips(train), clips(val), seed=1)
    assert again.history == detector.history  # timings included: read back, not trained again
    assert all(np.array_equal(a, b) for a, b in zip(again.state_dict().values(), detector.state_dict().values()))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """4 identities, one clip per category each, 2 s (10 face frames at 5 fps: two tiny windows)."""
    from avbench.demo import generate_corpus

    root = tmp_path_factory.mktemp("havic_demo")
    generate_corpus(root, identities=4, real_per_identity=1, seconds=2.0, size=128)
    return root


@pytest.mark.slow
def test_havic_tiny_trains_and_scores_under_the_harness(corpus, cache_dir, tmp_path):
    settings = RunSettings(detector="havic_tiny", protocol=protocol.get("demo"), seeds=(0,), runs_dir=tmp_path,
                           data_roots={"demo": corpus}, cache_dir=cache_dir,
                           detector_options={"epochs": 2, "pretrain_epochs": 1})
    (outcome,) = Runner(settings).run()
    record = outcome.record
    assert record["coverage"]["scored"] == record["coverage"]["total"] == 5
    assert record["folds"][0]["fit"] == "fitted" and record["folds"][0]["train_clips"] == 10
    history = record["folds"][0]["history"]  # the epochs' losses and validation AUCs are kept with the run
    assert len(history["pretrain"]) == 1 and [r["epoch"] for r in history["finetune"]] == [1, 2]
    model_dir = outcome.record_path.parent / "models" / "main"
    assert (model_dir / "state.npz").is_file() and not list(model_dir.parent.glob("*.training"))
    scores = pd.read_parquet(outcome.record_path.parent / "scores.parquet")
    restored = HAVICTinyDetector.load(model_dir)
    assert restored.config()["epochs"] == 2
    loader = MediaLoader(MediaCache(cache_dir))
    test = [loader.load(r, SPEC) for r in Runner(settings).indexes["demo"].refs() if r.split == "test"]
    ours = dict(zip([c.clip_id for c in test], restored.score_batch(test)))
    assert [ours[c] for c in scores["clip_id"]] == pytest.approx(scores["score"].tolist(), rel=1e-6)


@pytest.mark.slow
def test_pretrain_command_writes_a_checkpoint_that_fine_tuning_starts_from(corpus, cache_dir, tmp_path):
    from avbench.detectors.havic.cli import app

    runner = CliRunner()
    assert "pretrained=" in runner.invoke(app, ["pretrain", "--help"]).output
    args = ["pretrain", "--data-root", f"demo={corpus}", "--tiny", "--epochs", "1", "--out", str(tmp_path),
            "--cache-dir", str(cache_dir)]
    refused = runner.invoke(app, args)  # the demo index has no split column: say which splits exist
    assert refused.exit_code == 1 and "--split" in refused.output
    result = runner.invoke(app, args + ["--split", "all"])
    assert result.exit_code == 0, result.output
    assert "epoch 1/1: loss" in result.output and "-o pretrained=" in result.output
    pretrained = load_pretraining(tmp_path / "pretrain.safetensors", config=TINY)
    detector = HAVICTinyDetector(pretrained=str(tmp_path / "pretrain.safetensors"))
    model = detector._finetuning_model(detector._pretraining_model())
    assert torch.equal(model.audio_encoder.blocks[1].attn.qkv.weight, pretrained.audio_encoder.blocks[1].attn.qkv.weight)
    again = runner.invoke(app, args + ["--split", "all"])
    assert again.exit_code == 0 and "nothing to train" in again.output


def test_gradient_checkpointing_gives_the_same_gradients():
    from avbench.training import use_grad_checkpointing

    audio, video = inputs()
    grads = []
    for checkpointing in (False, True):
        model = tiny(HAVICPretrain)
        model.train()
        if checkpointing:
            assert use_grad_checkpointing(model) == 2  # the audio and the visual encoder
        keep = (training.tube_mask(2, TINY, torch.Generator().manual_seed(0)),
                training.segment_mask(2, TINY, torch.Generator().manual_seed(0)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(5)  # drop-path draws the same masks in both runs (and again when recomputed)
            losses = pretrain_losses(model(audio, video, video_keep=keep[0], audio_keep=keep[1]), audio, video, TINY)
            losses["total"].backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-7, msg=name)
    with pytest.raises(ValueError, match="does not support gradient checkpointing"):
        use_grad_checkpointing(torch.nn.Linear(2, 2))
