"""HOLA stage-1 pre-training (detectors/hola/pretrain.py): masks, targets, losses where they should be,
InfoNCE, the resumable tiny pre-training on the core Trainer, the written encoders and the command."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from avbench.clips import Clip, ClipError, ClipRef
from avbench.detectors.hola import pretrain as hp
from avbench.detectors.hola.backbone import EncoderConfig, LGEncoder
from avbench.detectors.hola.checkpoint import load_avfmae
from avbench.detectors.hola.pretrain import (Masks, PretrainClips, PretrainConfig, audio_targets, build_model,
                                             draw_masks, info_nce, random_mask, random_region_mask,
                                             reconstruction_loss, running_cell_mask, tube_mask, video_targets)
from avbench.io import sha256_file
from avbench.loader import ClipSet
from avbench.training import LAST

pytestmark = pytest.mark.usefixtures("torch_one_thread")

FULL = PretrainConfig()
TINY = PretrainConfig.tiny()


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- configuration ----------------------------------------------------------------------------------------

def test_config_holds_the_spec_values_and_round_trips():
    assert (FULL.video_mask_ratio, FULL.audio_mask_ratio) == (0.9, 0.8125)
    assert (FULL.video_decoder_mask_ratio, FULL.audio_decoder_mask_ratio, FULL.dual_masking) == (0.5, 0.5, True)
    assert (FULL.decoder_depth, FULL.decoder_dim, FULL.decoder_heads, FULL.skip_blocks) == (4, 384, 6, (3, 6, 9))
    assert (FULL.nce_blocks, FULL.nce_temperature, FULL.nce_weight) == ((3, 6, 9), 0.07, 0.0025)
    assert FULL.normalize_targets and FULL.use_frame_diff_as_target and FULL.use_nce and FULL.use_fusion
    assert FULL.fusion_depth == 2 and FULL.roll_mag_aug
    assert (FULL.epochs, FULL.lr, FULL.min_lr, FULL.warmup_epochs, FULL.weight_decay, FULL.betas) == \
        (100, 1.5e-4, 1e-5, 10.0, 0.05, (0.9, 0.95))
    assert (FULL.frames, FULL.frame_stride, FULL.crop, FULL.resize, FULL.window_seconds) == (16, 4, 160, 224, 2.56)
    assert FULL.audio.input_shape == (1, 256, 128) and FULL.video.input_shape == (3, 16, 160, 160)
    assert FULL.effective_lr(1312) == pytest.approx((1.5e-4 * 1312 / 256, 1e-5 * 1312 / 256))
    assert (TINY.video_mask_ratio, TINY.audio_mask_ratio, TINY.decoder_depth, TINY.decoder_dim) == (0.5, 0.5, 2, 16)
    assert TINY.skip_blocks == TINY.nce_blocks == (0,) and TINY.window_seconds == 0.64 and TINY.resize == 45
    assert TINY.input_spec.frame_size == 45 and TINY.input_spec.fps == 25.0
    assert PretrainConfig.from_dict(json.loads(json.dumps(TINY.as_dict()))) == TINY
    assert sum(p.numel() for p in build_model(TINY).parameters()) < 1_000_000


@pytest.mark.parametrize("change, words", [
    ({"audio_mask_ratio": 0.8}, ["audio_mask_ratio 0.8", "3.2", "LG region"]),  # the paper's 80%
    ({"video_mask_ratio": 0.85}, ["video_mask_ratio 0.85", "7.5", "LG region"]),
    ({"video_decoder_mask_ratio": 0.4}, ["running cell"]),
    ({"skip_blocks": (3, 6)}, ["skip_blocks"]),
    ({"nce_blocks": (10,)}, ["nce_blocks"]),
])
def test_config_refuses_masks_that_leave_fractional_tokens_per_region(change, words):
    with pytest.raises(ValueError) as info:
        dataclasses.replace(FULL, **change)
    assert all(w in str(info.value) for w in words), str(info.value)


# -- masks ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg, visible", [(FULL, 80), (TINY, 16)])
def test_tube_mask_is_a_tube_balanced_over_the_regions(cfg, visible):
    video = cfg.video
    mask = tube_mask(video, 5, cfg.video_mask_ratio, gen(1))
    assert mask.shape == (5, video.num_tokens) and mask.dtype == torch.bool
    assert (mask.sum(1) == visible).all()
    steps = mask.reshape(5, video.grid[0], -1)
    assert (steps == steps[:, :1]).all()  # the same spatial positions at every tubelet step
    counts = torch.stack([torch.bincount(video.region_index()[m], minlength=video.num_regions) for m in mask])
    assert (counts == visible // video.num_regions).all()
    assert torch.equal(mask, tube_mask(video, 5, cfg.video_mask_ratio, gen(1)))  # from the generator alone
    assert not torch.equal(mask, tube_mask(video, 5, cfg.video_mask_ratio, gen(2)))
    assert not torch.equal(mask[0], mask[1])  # per sample


@pytest.mark.parametrize("cfg, visible", [(FULL, 24), (TINY, 4)])
def test_random_region_mask_keeps_the_same_count_in_every_region(cfg, visible):
    audio = cfg.audio
    mask = random_region_mask(audio, 6, cfg.audio_mask_ratio, gen(3))
    assert (mask.sum(1) == visible).all()
    encoder = LGEncoder(TINY.audio) if cfg is TINY else None
    counts = (encoder.region_counts(mask) if encoder is not None else
              torch.stack([torch.bincount(audio.region_index()[m], minlength=audio.num_regions) for m in mask]))
    assert (counts == visible // audio.num_regions).all()
    assert torch.equal(mask, random_region_mask(audio, 6, cfg.audio_mask_ratio, gen(3)))
    with pytest.raises(ValueError, match="whole"):
        random_region_mask(audio, 1, 0.8, gen())


def test_running_cell_keeps_half_of_every_cell_and_moves_one_step_per_tubelet():
    keep = running_cell_mask(FULL.video, 4, 0.5, gen(4))
    assert keep.shape == (4, 800) and (keep.sum(1) == 400).all()
    grid = keep.reshape(4, 8, 10, 10)
    cells = grid.reshape(4, 8, 5, 2, 5, 2).permute(0, 1, 2, 4, 3, 5).reshape(4, 8, 25, 4)
    assert (cells.sum(-1) == 2).all() and (cells == cells[:, :, :1]).all()  # 2 of 4, the same in every cell
    cycle = cells[:, :, 0]  # (sample, step, the cell's 4 positions in raster order)
    for t in range(7):
        assert torch.equal(cycle[:, t + 1], cycle[:, t].roll(-1, dims=-1))  # the run moves one position per step
    assert torch.equal(keep, running_cell_mask(FULL.video, 4, 0.5, gen(4)))
    audio = random_mask(128, 3, 0.5, gen(5))
    assert (audio.sum(1) == 64).all() and not torch.equal(audio[0], audio[1])


def test_masks_of_a_batch_come_from_the_generator_and_fit_the_encoders():
    a, b = draw_masks(TINY, 3, gen(7)), draw_masks(TINY, 3, gen(7))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    video, audio = LGEncoder(TINY.video), LGEncoder(TINY.audio)
    assert video(torch.randn(3, *TINY.video.input_shape), a.video_visible).shape == (3, 16, 32)
    assert audio(torch.randn(3, *TINY.audio.input_shape), a.audio_visible).shape == (3, 4, 32)
    plain = draw_masks(dataclasses.replace(TINY, dual_masking=False), 3, gen(7))
    assert torch.equal(plain.video_keep, ~plain.video_visible) and torch.equal(plain.audio_keep, ~plain.audio_visible)


# -- targets and losses ------------------------------------------------------------------------------------

MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None, None]


def test_video_targets_normalise_each_patch_then_take_the_tubelet_difference():
    cfg = EncoderConfig(modality="video", dim=4, depth=0, heads=1, patch=1, tubelet=2, input_size=(2, 1, 2),
                        region=(1, 1, 1))
    pixels = torch.zeros(3, 2, 1, 2)
    pixels[0, :, 0, 0] = torch.tensor([0.2, 0.6])  # token 0, red: frame 0 then frame 1
    pixels[1, :, 0, 0] = torch.tensor([0.5, 0.5])
    pixels[2, :, 0, 1] = torch.tensor([1.0, 0.0])  # token 1, blue
    video = ((pixels - MEAN) / STD)[None]
    root2 = 1 / math.sqrt(2) / (1 + 1e-6 / math.sqrt(0.08))  # (x - mean) / (std + 1e-6), std = 0.2 sqrt 2
    target = video_targets(video, cfg)  # values (frame, row, column, channel): index frame * 3 + channel
    assert target.shape == (1, 2, 6)
    assert target[0, 0, 0].item() == pytest.approx(-root2, rel=1e-5)  # red, frame 0, normalised
    assert target[0, 0, 3].item() == pytest.approx(2 * root2, rel=1e-5)  # red, frame 1 - frame 0
    assert target[0, 0, 1].item() == target[0, 0, 4].item() == 0  # a constant patch: 0, and no difference
    assert target[0, 1, 2].item() == pytest.approx(1 / math.sqrt(2), rel=1e-4)
    assert target[0, 1, 5].item() == pytest.approx(-2 / math.sqrt(2), rel=1e-4)
    plain = video_targets(video, cfg, normalize=False, frame_diff=False)
    assert plain[0, 0, [0, 3]].tolist() == pytest.approx([0.2, 0.6], abs=1e-6)
    assert video_targets(video, cfg, normalize=False)[0, 0, 3].item() == pytest.approx(0.4, abs=1e-6)
    assert video_targets(video, cfg, frame_diff=False)[0, 0, 3].item() == pytest.approx(root2, rel=1e-5)


def test_video_targets_follow_the_raster_tokens_of_the_encoder():
    cfg = TINY.video
    pixels = torch.rand(2, 3, 4, 32, 32, generator=gen(8))
    target = video_targets((pixels - MEAN) / STD, cfg, normalize=False, frame_diff=False)
    t, h, w = 1, 2, 3  # token (t, h, w) of the (2, 4, 4) grid
    patch = pixels[1, :, 2 * t:2 * t + 2, 8 * h:8 * h + 8, 8 * w:8 * w + 8].permute(1, 2, 3, 0).flatten()
    torch.testing.assert_close(target[1, (t * 4 + h) * 4 + w], patch, rtol=1e-5, atol=1e-6)


def test_audio_targets_normalise_each_patch():
    cfg = EncoderConfig(modality="audio", dim=4, depth=0, heads=1, patch=2, input_size=(2, 4), region=(1, 1))
    audio = torch.tensor([[1.0, 2.0, 5.0, 5.0], [3.0, 4.0, 5.0, 5.0]])[None, None]
    target = audio_targets(audio, cfg)
    z = 1.5 / math.sqrt(5 / 3)
    assert target.shape == (1, 2, 4)
    assert target[0, 0].tolist() == pytest.approx([-z, -z / 3, z / 3, z], rel=1e-5)  # values 1 2 3 4, time-major
    assert target[0, 1].tolist() == [0.0] * 4
    assert audio_targets(audio, cfg, normalize=False)[0, 0].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_reconstruction_counts_only_positions_encoder_masked_and_decoder_kept():
    visible = torch.tensor([[True, False, False, True, False, False]])
    keep = torch.tensor([[True, True, False, False, True, False]])  # kept: 0 (visible), 1 and 4 (masked)
    target = torch.randn(1, 6, 3, generator=gen(9))
    prediction = torch.randn(1, 3, 3, generator=gen(10))  # for positions 0, 1, 4
    loss = reconstruction_loss(prediction, target, keep, visible)
    expected = ((prediction[0, 1] - target[0, 1]).square().mean() + (prediction[0, 2] - target[0, 4]).square().mean()) / 2
    torch.testing.assert_close(loss, expected)
    for position in (0, 2, 3, 5):  # visible (kept or not) or dropped by the decoder
        changed = target.clone()
        changed[0, position] += 10
        assert reconstruction_loss(prediction, changed, keep, visible).item() == loss.item()
    changed = target.clone()
    changed[0, 4] += 10
    assert reconstruction_loss(prediction, changed, keep, visible).item() != loss.item()


def _fixed_masks(cfg: PretrainConfig, batch: int) -> Masks:
    return draw_masks(cfg, batch, gen(11))


def test_model_losses_ignore_the_input_where_nothing_is_read_or_reconstructed():
    model = build_model(TINY).eval()
    g = gen(12)
    video, audio = torch.randn(2, *TINY.video.input_shape, generator=g), torch.randn(2, *TINY.audio.input_shape, generator=g)
    masks = _fixed_masks(TINY, 2)
    with torch.no_grad():
        base = model(video, audio, masks)
    assert set(base) == {"total", "video", "audio", "nce"}
    torch.testing.assert_close(base["total"], base["video"] + base["audio"] + 0.0025 * base["nce"])
    cfg = TINY.video
    t_steps, h_grid, w_grid = cfg.grid

    def pixels_of(token: int):
        t, rest = divmod(token, h_grid * w_grid)
        h, w = divmod(rest, w_grid)
        return (slice(None), slice(2 * t, 2 * t + 2), slice(8 * h, 8 * h + 8), slice(8 * w, 8 * w + 8))

    visible, keep = masks.video_visible[0], masks.video_keep[0]
    for kind, tokens in (("ignored", (~visible & ~keep).nonzero()[:, 0]), ("reconstructed", (~visible & keep).nonzero()[:, 0]),
                         ("visible", visible.nonzero()[:, 0])):
        changed = video.clone()
        changed[0][pixels_of(int(tokens[0]))] = torch.randn(3, 2, 8, 8, generator=g) * 3
        with torch.no_grad():
            losses = model(changed, audio, masks)
        if kind == "ignored":
            assert losses["video"].item() == base["video"].item() and losses["nce"].item() == base["nce"].item()
        else:
            assert losses["video"].item() != base["video"].item(), kind
    a_visible, a_keep = masks.audio_visible[0], masks.audio_keep[0]
    ignored = int((~a_visible & ~a_keep).nonzero()[0, 0])
    changed = audio.clone()
    row, col = divmod(ignored, TINY.audio.grid[1])
    changed[0, 0, 8 * row:8 * row + 8, 8 * col:8 * col + 8] += 5
    with torch.no_grad():
        assert model(video, changed, masks)["audio"].item() == base["audio"].item()


def test_info_nce_by_hand():
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    a = torch.tensor([[2.0, 0.0], [1.0, 1.0]])  # normalised: (1, 0) and (0.7071, 0.7071)
    c = 1 / math.sqrt(2)
    v_to_a = (-math.log(math.exp(1) / (math.exp(1) + math.exp(c))) - math.log(math.exp(c) / (1 + math.exp(c)))) / 2
    a_to_v = (-math.log(math.exp(1) / (math.exp(1) + 1)) + math.log(2)) / 2
    assert info_nce(v, a, temperature=1.0).item() == pytest.approx((v_to_a + a_to_v) / 2, rel=1e-6)
    tau = 0.07
    sharp = (-math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(c / tau)))
             - math.log(math.exp(c / tau) / (1 + math.exp(c / tau))) - math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 1))
             + math.log(2)) / 4
    assert info_nce(3 * v, a, tau).item() == pytest.approx(sharp, rel=1e-5)  # scale-free: features are normalised


def test_nce_sums_the_levels_of_the_normed_encoder_blocks():
    cfg = dataclasses.replace(TINY, nce_blocks=(0, 1))
    model = build_model(cfg).eval()
    g = gen(13)
    video, audio = torch.randn(3, *cfg.video.input_shape, generator=g), torch.randn(3, *cfg.audio.input_shape, generator=g)
    masks = draw_masks(cfg, 3, gen(14))
    with torch.no_grad():
        losses = model(video, audio, masks)
        _, vb = model.video_encoder(video, masks.video_visible, return_blocks=(0, 1))
        _, ab = model.audio_encoder(audio, masks.audio_visible, return_blocks=(0, 1))
        expected = sum(info_nce(model.video_encoder.norm(x).mean(1), model.audio_encoder.norm(y).mean(1), 0.07)
                       for x, y in zip(vb, ab))
    torch.testing.assert_close(losses["nce"], expected)
    off = build_model(dataclasses.replace(TINY, use_nce=False, use_fusion=False, use_skips=False)).eval()
    with torch.no_grad():
        assert off(video, audio, masks)["nce"].item() == 0.0


# -- the tiny pre-training ----------------------------------------------------------------------------------

class SyntheticLoader:
    """Clips made from the ref, no media: 25 fps frames of TINY.resize px with drifting smooth stripes and a
    two-tone audio track (something to reconstruct). meta: seconds (default 2.8), broken, silent."""

    def load(self, ref: ClipRef, spec, remove_audio: bool = False) -> Clip:
        if ref.meta.get("broken"):
            raise ClipError("decode_error", f"{ref.path}: cannot be decoded")
        rng = np.random.default_rng(int(ref.clip_id.removeprefix("c")))
        n, size = round(ref.meta.get("seconds", 2.8) * 25), spec.frame_size
        fx, fy, speed, phase = rng.uniform(0.5, 2.0, 4)
        t = np.arange(n)[:, None, None] / 25
        y, x = np.mgrid[0:size, 0:size] / size
        wave = 0.5 + 0.4 * np.sin(2 * np.pi * (fx * x + fy * y + speed * t + phase))
        frames = (np.stack([wave, wave[:, ::-1], 1 - wave], axis=-1) * 255).astype(np.uint8)
        s = np.arange(round(n / 25 * 16000)) / 16000
        tone = rng.uniform(200, 800)
        audio = (0.2 * np.sin(2 * np.pi * tone * s) + 0.1 * np.sin(2 * np.pi * 2.5 * tone * s)) * (1 + np.sin(3 * s))
        return Clip(ref=ref, fps=25.0, frames=frames, audio=None if ref.meta.get("silent") else audio.astype(np.float32))


def corpus() -> list[ClipRef]:
    """6 usable real clips, 2 fakes, and a broken, a short and a silent real clip."""
    refs = [ClipRef(clip_id=f"c{i}", dataset="t", path=Path(f"/data/c{i}.mp4"), label=0) for i in range(6)]
    refs += [ClipRef(clip_id=f"c{10 + i}", dataset="t", path=Path(f"/data/f{i}.mp4"), label=1) for i in range(2)]
    refs += [ClipRef(clip_id="c20", dataset="t", path=Path("/data/b.mp4"), label=0, meta={"broken": True}),
             ClipRef(clip_id="c21", dataset="t", path=Path("/data/s.mp4"), label=0, meta={"seconds": 0.5}),
             ClipRef(clip_id="c22", dataset="t", path=Path("/data/q.mp4"), label=0, meta={"silent": True})]
    return refs


def clip_set() -> ClipSet:
    return ClipSet(corpus(), SyntheticLoader(), TINY.input_spec)


RUN = dataclasses.replace(TINY, epochs=4)


class Interrupt(Exception):
    pass


def _stop_after_first(record):
    if record["epoch"] == 1:
        raise Interrupt


def test_windows_are_the_spec_inputs_and_deterministic():
    data = PretrainClips(clip_set(), TINY)
    refs = data.admit()
    assert [r.clip_id for r in refs] == [f"c{i}" for i in range(6)] and data.skipped_fakes == 2
    assert {cid: e.reason for cid, e in data.clips.failures.items()} == \
        {"c20": "decode_error", "c21": "too_short", "c22": "no_audio"}
    window = data.draw(0, gen(15))
    assert 0 <= window.start <= 70 - TINY.window_frames and 0.5 <= window.gain <= 1.5 and not window.crop.flip
    assert window.crop.height in (45, 39, 33, 29) and window.crop.width in (45, 39, 33, 29)
    video, fbank = data.example(window)
    assert video.shape == (3, 4, 32, 32) and fbank.shape == (1, 32, 16)
    assert video.mean().abs() < 3 and torch.isfinite(fbank).all()
    again = data.example(window)
    assert torch.equal(video, again[0]) and torch.equal(fbank, again[1])
    assert data.draw(0, gen(15)) == window
    padded = PretrainClips(clip_set(), TINY, pad_short=True)
    assert "c21" in [r.clip_id for r in padded.admit()]


def test_tiny_pretraining_learns_resumes_and_writes_encoders_that_load_strictly(tmp_path):
    torch.manual_seed(123)
    caller = torch.get_rng_state()
    straight = hp.pretrain(clip_set(), tmp_path / "straight", RUN, seed=3)
    assert torch.equal(torch.get_rng_state(), caller)
    history = straight.history
    assert len(history) == 4 and history[-1]["loss"] < history[0]["loss"]
    assert {"video", "audio", "nce", "lr", "no_decay_lr", "clips"} <= set(history[0]) and history[0]["clips"] == 6
    assert history[0]["lr"] == pytest.approx(RUN.effective_lr()[0], rel=0.2)

    with pytest.raises(Interrupt):
        hp.pretrain(clip_set(), tmp_path / "interrupted", RUN, seed=3, on_epoch=_stop_after_first)
    assert len(torch.load(tmp_path / "interrupted" / LAST, weights_only=True)["history"]) == 1
    assert not (tmp_path / "interrupted" / hp.WEIGHTS).exists()
    resumed = hp.pretrain(clip_set(), tmp_path / "interrupted", RUN, seed=3)
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("seconds", "peak_memory_mib")} for r in h]  # noqa: E731
    assert strip(resumed.history) == strip(history)
    seen = []
    again = hp.pretrain(clip_set(), tmp_path / "interrupted", RUN, seed=3, on_epoch=seen.append)
    assert seen == [] and all(torch.equal(a, b) for a, b in zip(again.model.state_dict().values(),
                                                                 straight.model.state_dict().values()))
    with pytest.raises(ValueError, match="other settings"):
        hp.pretrain(clip_set(), tmp_path / "straight", RUN, seed=4)

    weights, record = straight.weights, json.loads((tmp_path / "straight" / hp.RECORD).read_text())
    assert weights == tmp_path / "straight" / "encoders.safetensors"
    assert record["weights"] == {"file": "encoders.safetensors", "sha256": sha256_file(weights),
                                 "tensors": record["weights"]["tensors"]}
    assert record["clips"]["used"] == 6 and record["clips"]["fakes_skipped"] == 2
    assert set(record["clips"]["failed"]) == {"c20", "c21", "c22"} and len(record["history"]) == 4
    assert PretrainConfig.from_dict(record["config"]) == RUN and len(record["clips"]["digest"]) == 64
    video, audio = LGEncoder(RUN.video), LGEncoder(RUN.audio)
    report = load_avfmae(video, audio, weights)
    assert report.video_keys == len(video.state_dict()) and report.audio_keys == len(audio.state_dict())
    assert report.ignored == ()
    video.eval(), audio.eval()
    g = gen(16)
    x_v, x_a = torch.randn(2, *RUN.video.input_shape, generator=g), torch.randn(2, *RUN.audio.input_shape, generator=g)
    with torch.no_grad():
        assert torch.equal(video(x_v), straight.model.video_encoder(x_v))
        assert torch.equal(audio(x_a), straight.model.audio_encoder(x_a))
        assert not torch.equal(video(x_v), LGEncoder(RUN.video).eval()(x_v))


def test_only_fakes_refuse_to_pretrain(tmp_path):
    refs = [r for r in corpus() if r.label == 1]
    with pytest.raises(ValueError, match="2 fakes skipped"):
        hp.pretrain(ClipSet(refs, SyntheticLoader(), TINY.input_spec), tmp_path, RUN)


def test_schedule_warms_up_from_zero_then_falls_to_the_final_rate():
    schedule = hp.WarmupCosine(warmup=4, total=12, end=0.1)
    assert [schedule(s) for s in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert schedule(8) == pytest.approx(0.55) and schedule(12) == pytest.approx(0.1)
    groups = hp.parameter_groups(build_model(TINY), 0.05)
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in groups[0]["params"])
    model = build_model(TINY)
    no_decay = {id(p) for p in hp.parameter_groups(model, 0.05)[1]["params"]}
    assert id(model.video_encoder.lg_region_tokens) in no_decay and id(model.video_decoder.mask_token) in no_decay


# -- the command ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_pretrain_command_writes_encoders_the_hola_detector_fine_tunes_from(tiny_demo, tmp_path):
    """The issue's path: `avbench hola pretrain --tiny`, then `avbench run -d hola_tiny -p demo` on its encoders."""
    from avbench import protocol
    from avbench.detectors.hola.cli import app
    from avbench.runner import RunSettings, Runner

    runner = CliRunner()
    assert "weights=" in runner.invoke(app, ["pretrain", "--help"]).output
    out = tmp_path / "out"
    args = ["pretrain", "--data-root", f"demo={tiny_demo}", "--tiny", "--epochs", "1", "--out", str(out),
            "--cache-dir", str(tmp_path / "cache")]
    refused = runner.invoke(app, args)  # the demo index has no split column
    assert refused.exit_code == 1 and "--split" in refused.output
    result = runner.invoke(app, args + ["--split", "all"])
    assert result.exit_code == 0, result.output
    assert "epoch 1/1: loss" in result.output and "-o weights=" in result.output
    record = json.loads((out / "pretrain.json").read_text())
    assert record["clips"]["used"] == 5  # the 5 real clips of tiny_demo (the command passes reals only)
    load_avfmae(LGEncoder(TINY.video), LGEncoder(TINY.audio), out / "encoders.safetensors")
    again = runner.invoke(app, args + ["--split", "all"])
    assert again.exit_code == 0 and "nothing to train" in again.output
    bad = runner.invoke(app, args + ["--split", "all", "--lr", "-1"])
    assert bad.exit_code == 2
    weights = str(out / "encoders.safetensors")
    (outcome,) = Runner(RunSettings(detector="hola_tiny", protocol=protocol.get("demo"), seeds=(0,),
                                    runs_dir=tmp_path / "runs", data_roots={"demo": tiny_demo},
                                    cache_dir=tmp_path / "cache", bootstrap_resamples=0,
                                    detector_options={"weights": weights})).run()
    assert outcome.record["coverage"]["scored"] == 10
    assert outcome.record["provenance"]["detector_sources"] == {"weights": record["weights"]["sha256"]}
