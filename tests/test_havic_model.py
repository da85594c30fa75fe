"""HAVIC: parameter tables, strict loading, preprocessing, windows and the detector (tiny config on CPU)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from avbench.clips import Clip, ClipError, ClipRef
from avbench.detectors.havic import HAVICDetector, HAVICTinyDetector
from avbench.detectors.havic.checkpoint import (
    CheckpointError, init_from_audiomae, init_from_marlin, load_official, load_pretraining, load_strict,
    read_state_dict, transfer_pretrained)
from avbench.detectors.havic.model import (
    HAVIC, Attention, HAVICConfig, HAVICPretrain, patchify_audio, patchify_video, segment_mask, tube_mask)
from avbench.detectors.havic.preprocess import (
    FBANK_MEAN, FBANK_STD, audio_bounds, clip_windows, kaldi_fbank, window_fbank, window_starts)
from avbench.io import sha256_file

DATA = Path(__file__).parent / "data" / "havic"  # the parameter tables are copies of specs/havic_*_state_dict.tsv
TINY = HAVICConfig.tiny()


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def table(name: str) -> dict[str, tuple[tuple[int, ...], str]]:
    rows = [line.split("\t") for line in (DATA / name).read_text().splitlines()[1:]]
    return {key: (tuple(int(n) for n in shape.split("x")), dtype) for key, shape, dtype in rows}


def signature(model: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}


def tiny_model(cls=HAVIC, seed: int = 0):
    torch.manual_seed(seed)
    return cls(TINY).eval()


def inputs(batch: int = 2, seed: int = 1, cfg: HAVICConfig = TINY):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, cfg.audio_frames, cfg.mel_bins, generator=g),
            torch.rand(batch, 3, cfg.n_frames, cfg.image_size, cfg.image_size, generator=g))


def make_clip(n_frames: int, *, size: int = TINY.image_size, audio: bool = True, removed: bool = False,
              seed: int = 0) -> Clip:
    rng = np.random.default_rng(seed)
    faces = rng.integers(0, 256, (n_frames, size, size, 3), dtype=np.uint8)
    wave = (0.1 * rng.standard_normal(n_frames * 3200)).astype(np.float32) if audio else None
    return Clip(ref=ClipRef(clip_id=f"c{seed}", dataset="t", path=Path(f"/data/c{seed}.mp4"), label=1), fps=5.0,
                faces=faces, audio=wave, audio_removed=removed)


# -- the authors' parameter tables --------------------------------------------------------------------------

@pytest.mark.parametrize("cls, name, millions", [(HAVIC, "havic_ft_state_dict.tsv", 214.7),
                                                 (HAVICPretrain, "havic_pt_state_dict.tsv", 243.1)])
def test_full_size_models_match_the_authors_tables(cls, name, millions):
    expected = table(name)
    with torch.device("meta"):
        model = cls(HAVICConfig.base())
    ours = signature(model)
    assert sorted(set(expected) - set(ours)) == [] and sorted(set(ours) - set(expected)) == []
    assert {k: v for k, v in ours.items() if v != expected[k]} == {}
    assert round(sum(v.numel() for v in model.state_dict().values()) / 1e6, 1) == millions


def test_full_size_table_loads_strictly_with_module_prefix(tmp_path):
    """A state dict with the table's keys, shapes and DataParallel prefix loads into the base model."""
    with torch.device("meta"):
        model = HAVIC(HAVICConfig.base())
        state = {f"module.{k}": torch.empty(shape) for k, (shape, _) in table("havic_ft_state_dict.tsv").items()}
    from avbench.weights import strip_module as _strip_module

    load_strict(model, _strip_module(state, tmp_path / "x.pth"), "table", assign=True)


def test_tiny_config_keeps_the_segment_structure():
    assert (TINY.n_segments, TINY.visual_tokens_per_segment, TINY.audio_tokens_per_segment) == (4, 4, 8)
    with pytest.raises(ValueError, match="taps"):
        HAVICConfig(taps=(3, 6, 13))
    with pytest.raises(ValueError, match="segments"):
        HAVICConfig(mel_bins=32, audio_frames=48)  # 6 audio tokens, 8 segments


# -- forward passes ------------------------------------------------------------------------------------------

def test_heads_forward_and_visual_head():
    model = tiny_model()
    audio, video = inputs()
    with torch.inference_mode():
        heads = model.heads(audio, video)
        assert heads.main.shape == heads.audio.shape == heads.visual.shape == (2, 1)
        assert torch.equal(model(audio, video), heads.main)
        torch.testing.assert_close(model.visual_logits(video), heads.visual)
        # the visual head does not see the audio; the main head does
        other = model.heads(audio.flip(0), video)
    torch.testing.assert_close(other.visual, heads.visual)
    assert not torch.allclose(other.main, heads.main)


def test_audio_segments_are_frequency_bands_and_video_segments_are_tubelets():
    """The authors' token order: audio patches numbered by mel row, video tokens by tubelet."""
    model = tiny_model()
    audio, video = inputs(1)
    per_a, per_v = TINY.audio_tokens_per_segment, TINY.visual_tokens_per_segment
    bumped = audio.clone()
    bumped[:, :, : TINY.patch_size] += 1.0  # lowest mel band, every time frame
    changed = (model.audio_encoder.tokens(bumped) - model.audio_encoder.tokens(audio)).abs().sum(-1)[0] > 0
    rows, cols = TINY.audio_grid
    assert changed.nonzero().flatten().tolist() == list(range(cols)) and cols <= per_a
    bumped = video.clone()
    bumped[:, :, : TINY.tubelet] += 1.0  # first two frames
    changed = (model.visual_encoder.tokens(bumped) - model.visual_encoder.tokens(video)).abs().sum(-1)[0] > 0
    assert changed.nonzero().flatten().tolist() == list(range(per_v))


def test_qv_bias_attention_equals_full_bias_attention():
    """Dropping the key bias (AudioMAE -> HAVIC) changes nothing: it shifts a query's logits uniformly."""
    torch.manual_seed(0)
    full, qv = Attention(16, 2, qv_bias=False), Attention(16, 2, qv_bias=True)
    with torch.no_grad():
        full.qkv.bias.normal_()
        qv.qkv.weight.copy_(full.qkv.weight)
        qv.q_bias.copy_(full.qkv.bias[:16])
        qv.v_bias.copy_(full.qkv.bias[32:])
        qv.proj.load_state_dict(full.proj.state_dict())
        x = torch.randn(2, 5, 16)
        torch.testing.assert_close(qv(x), full(x))


def test_pretraining_forward_gives_what_the_losses_need():
    model = tiny_model(HAVICPretrain).train()
    audio, video = inputs()
    out = model(audio, video, generator=torch.Generator().manual_seed(0))
    s, d = TINY.n_segments, TINY.dim
    assert out.video_keep.shape == (2, s * 1) and out.audio_keep.shape == (2, s * 1)  # at least one per segment
    assert len(out.video_recons) == len(out.audio_recons) == len(TINY.taps)
    assert all(r.shape == patchify_video(video, TINY).shape for r in out.video_recons)
    assert all(r.shape == patchify_audio(audio, TINY).shape for r in out.audio_recons)
    assert out.video_segments.shape == out.audio_segments.shape == out.video_cls.shape == (2, s, d)
    assert out.video_from_audio.shape == out.video_target.shape == (2, TINY.visual_tokens, d)
    assert out.audio_from_video.shape == out.audio_target.shape == (2, TINY.audio_tokens, d)
    assert not out.video_target.requires_grad
    loss = (sum(((r - patchify_video(video, TINY)) ** 2).mean() for r in out.video_recons)
            + ((out.audio_from_video - out.audio_target) ** 2).mean() + out.audio_segments.square().mean())
    loss.backward()
    assert model.audio_encoder.cls_tokens.grad.abs().sum() > 0
    assert model.V2A.TokenAligner.output_layer.weight.grad.abs().sum() > 0


def test_masks_keep_whole_tubes_and_equal_counts_per_audio_segment():
    cfg = HAVICConfig.base()
    g = torch.Generator().manual_seed(0)
    keep = tube_mask(3, cfg, g)
    assert keep.shape == (3, 8 * 19)
    spots = keep.view(3, 8, 19) - torch.arange(8)[None, :, None] * 196
    assert (spots == spots[:, :1]).all() and spots.min() >= 0 and spots.max() < 196
    keep = segment_mask(3, cfg, g)
    assert keep.shape == (3, 8 * 12)
    assert ((keep.view(3, 8, 12) // 64) == torch.arange(8)[None, :, None]).all()


def test_patchify_orders_values_as_the_decoder_heads():
    cfg = HAVICConfig.base()
    video = torch.arange(3 * 16 * 224 * 224, dtype=torch.float32).view(1, 3, 16, 224, 224)
    patches = patchify_video(video, cfg)
    # token 1 of segment 1 (second tubelet, first row, second column); value 1 = channel 0, frame 2, y 0,
    # x 17 (offset 1 in the patch)
    assert patches[0, 196 + 1, 1] == video[0, 0, 2, 0, 17]
    audio = torch.arange(1024 * 128, dtype=torch.float32).view(1, 1024, 128)
    patches = patchify_audio(audio, cfg)
    # token 65: mel row 1, time column 1; value 18 = mel offset 1, time offset 2 (mel-major inside a token)
    assert patches[0, 65, 18] == audio[0, 18, 17]


# -- checkpoints ------------------------------------------------------------------------------------------

def saved(tmp_path: Path, state: dict, name: str = "w.pth") -> Path:
    path = tmp_path / name
    torch.save(state, path)
    return path


def test_load_official_reproduces_the_saved_model(tmp_path):
    model = tiny_model(seed=3)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    audio, video = inputs()
    with torch.inference_mode():
        expected = model(audio, video)
    for path in (saved(tmp_path, state), saved(tmp_path, {"state_dict": state}, "wrapped.pt")):
        loaded = load_official(path, config=TINY)
        assert not loaded.training
        assert not any(p.is_meta for p in loaded.parameters())
        assert loaded.visual_encoder.pos_embedding.emb.requires_grad is False
        assert loaded.audio_encoder.pos_embed.requires_grad is True
        with torch.inference_mode():
            assert torch.equal(loaded(audio, video), expected)


def test_safetensors_and_sha256(tmp_path):
    from safetensors.torch import save_file


    model = tiny_model(HAVICPretrain)
    path = tmp_path / "pt.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = load_pretraining(path, config=TINY, sha256=sha256_file(path))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.raises(CheckpointError, match="sha256"):
        load_pretraining(path, config=TINY, sha256="0" * 64)


def test_strict_loading_names_missing_unexpected_and_mismatched_keys(tmp_path):
    state = tiny_model().state_dict()
    broken = dict(state)
    del broken["pool_v.weights"]
    broken["extra.weight"] = torch.zeros(1)
    broken["classifier.output_layer.bias"] = torch.zeros(2)
    path = saved(tmp_path, broken)
    with pytest.raises(CheckpointError) as info:
        load_official(path, config=TINY)
    message = str(info.value)
    assert str(path) in message and "pool_v.weights" in message and "extra.weight" in message
    assert "classifier.output_layer.bias (2,)" in message
    with pytest.raises(CheckpointError, match="missing keys"):  # a fine-tuning file is no pre-training one
        load_pretraining(saved(tmp_path, state, "ft.pth"), config=TINY)
    with pytest.raises(FileNotFoundError, match="JielunPeng/HAVIC"):
        load_official(tmp_path / "absent.pth")


def test_pickled_objects_are_refused_unless_trusted(tmp_path):
    path = saved(tmp_path, {"model": tiny_model().state_dict(), "args": argparse.Namespace(lr=1e-4)})
    with pytest.raises(CheckpointError, match="trusted=True"):
        read_state_dict(path)
    assert "pool_a.weights" in read_state_dict(path, trusted=True)
    with pytest.raises(CheckpointError, match="trusted_pickle"):
        HAVICTinyDetector(weights=str(path)).model
    trusted = HAVICTinyDetector(weights=str(path), trusted_pickle=True).model
    assert torch.equal(trusted.classifier.output_layer.weight, tiny_model().classifier.output_layer.weight)


def test_the_weights_used_are_recorded_by_hash(tmp_path):
    """A run's key names the weights by content (`sources`): another file at the same path is another run."""
    path = saved(tmp_path, tiny_model(seed=1).state_dict())
    first = HAVICTinyDetector(weights=str(path)).sources()["weights"]
    assert first == sha256_file(path)
    saved(tmp_path, tiny_model(seed=2).state_dict())
    assert HAVICTinyDetector(weights=str(path)).sources()["weights"] not in (None, first)
    assert HAVICTinyDetector(weights=str(tmp_path / "absent.pth")).sources() == {"weights": None}  # loading says why
    assert HAVICTinyDetector().sources() == {}


def test_transfer_pretrained_copies_encoders_and_interaction():
    pretrained, model = tiny_model(HAVICPretrain, seed=1), tiny_model(seed=2)
    keys = transfer_pretrained(pretrained, model)
    assert "AudioVisualInteractionModule.norm_audio_out.weight" in keys and "pool_v.weights" not in keys
    assert torch.equal(model.visual_encoder.blocks[0].attn.qkv.weight, pretrained.visual_encoder.blocks[0].attn.qkv.weight)


def test_init_from_audiomae_reorders_the_spectrogram_layout(tmp_path):
    cfg, g = TINY, torch.Generator().manual_seed(0)
    rows, cols = cfg.audio_grid
    d, p = cfg.dim, cfg.patch_size
    theirs = {"patch_embed.proj.weight": torch.randn(d, 1, p, p, generator=g), "patch_embed.proj.bias": torch.randn(d),
              "pos_embed": torch.randn(1, 1 + rows * cols, d, generator=g), "cls_token": torch.randn(1, 1, d),
              "norm.weight": torch.randn(d), "norm.bias": torch.randn(d), "decoder_embed.weight": torch.randn(8, d)}
    reference = HAVIC(cfg).audio_encoder.blocks[0].state_dict()
    for i in range(cfg.depth):
        for name, value in reference.items():
            theirs[f"blocks.{i}.{name}"] = torch.randn(value.shape, generator=g)
        theirs[f"blocks.{i}.attn.qkv.bias"] = torch.randn(3 * d, generator=g)
        del theirs[f"blocks.{i}.attn.q_bias"], theirs[f"blocks.{i}.attn.v_bias"]
    model = tiny_model()
    keys = init_from_audiomae(model, saved(tmp_path, {"model": theirs}))
    assert "audio_encoder.blocks.3.attn.v_bias" in keys and not any("cls_tokens" in k for k in keys)
    # AudioMAE embeds the (time, mel) image time-major; HAVIC the (mel, time) image mel-major
    audio = torch.randn(2, cfg.audio_frames, cfg.mel_bins, generator=g)
    audiomae = torch.nn.functional.conv2d(audio[:, None], theirs["patch_embed.proj.weight"], theirs["patch_embed.proj.bias"],
                                          stride=p).flatten(2).transpose(1, 2) + theirs["pos_embed"][:, 1:]
    ours = model.audio_encoder.tokens(audio) - model.audio_encoder.modality
    reordered = audiomae.view(2, cols, rows, d).transpose(1, 2).reshape(2, rows * cols, d)
    torch.testing.assert_close(ours, reordered, atol=1e-4, rtol=1e-4)  # sums of 256 products, reordered
    del theirs["norm.bias"]
    with pytest.raises(CheckpointError, match="norm.bias"):
        init_from_audiomae(model, saved(tmp_path, theirs, "broken.pth"))


def test_init_from_marlin_fills_the_visual_encoder_and_decoder(tmp_path):
    donor = tiny_model(HAVICPretrain, seed=5)
    theirs = {k.removeprefix("visual_"): v for k, v in donor.state_dict().items()
              if k.startswith("visual_encoder.") and "cls_" not in k}
    theirs.update({k.replace("visual_decoder.", "decoder."): v for k, v in donor.state_dict().items()
                   if k.startswith("visual_decoder.") and "HiA_" not in k and "head_" not in k and "enc_dec" not in k})
    theirs["enc_dec_proj.weight"] = donor.visual_decoder.enc_dec_proj.weight
    model = tiny_model(HAVICPretrain, seed=6)
    init_from_marlin(model, saved(tmp_path, theirs))
    assert torch.equal(model.visual_encoder.blocks[2].mlp.layers[1].linear.weight,
                       donor.visual_encoder.blocks[2].mlp.layers[1].linear.weight)
    assert torch.equal(model.visual_decoder.head_2.weight, donor.visual_decoder.head.weight)
    assert not torch.equal(model.visual_encoder.cls_tokens, donor.visual_encoder.cls_tokens)


# -- preprocessing -----------------------------------------------------------------------------------------

def test_fbank_equals_torchaudio():
    reference = np.load(DATA / "fbank_reference.npz")
    for name in ("chirp", "speechlike", "noise"):
        ours = kaldi_fbank(torch.from_numpy(reference[f"{name}_signal"])).numpy()
        # rtol: near the log floor (-11 to -15) float32 sums in another order (torch's CUDA build on the
        # CPU) move a value by up to 1e-3; elsewhere the 1e-4 bound holds
        np.testing.assert_allclose(ours, reference[f"{name}_fbank"], atol=1e-4, rtol=1e-4)


def test_window_fbank_stretches_and_normalises():
    reference = np.load(DATA / "fbank_reference.npz")
    signal = reference["chirp_signal"]
    x = window_fbank(signal, HAVICConfig.base())
    assert x.shape == (1024, 128)
    fbank = kaldi_fbank(torch.from_numpy(signal - signal.mean()))
    # the first and last stretched frames are the fbank's own; normalisation is (x + 6.996) / 3.1205
    torch.testing.assert_close(x[0] * FBANK_STD + FBANK_MEAN, fbank[0])
    torch.testing.assert_close(x[-1] * FBANK_STD + FBANK_MEAN, fbank[-1])
    assert (FBANK_MEAN, FBANK_STD) == (-6.9960, 3.1205)


def test_window_arithmetic_matches_the_authors_script():
    used, starts = window_starts(50, 16)
    assert used == 50 and len(starts) == 18 and starts[-1] == 34
    assert audio_bounds(160000, 50, used, 18, 16)[:2] == [(0, 51200), (6400, 57600)]
    assert audio_bounds(160000, 50, used, 18, 16)[-1] == (108800, 160000)
    used, starts = window_starts(49, 16)  # 33 frames after the first window: one does not complete a stride
    assert used == 48 and len(starts) == 17
    bounds = audio_bounds(156800, 49, used, 17, 16)  # int(48 / 49 * 156800) = 153600 samples used
    assert bounds[0] == (0, 51200) and bounds[-1][1] == 153600
    assert window_starts(16, 16) == (16, [0])


def test_clip_windows_cuts_video_and_audio():
    clip = make_clip(11)
    video, audio = clip_windows(clip.faces, clip.audio, TINY)
    assert video.dtype == torch.uint8 and video.shape == (2, 3, 8, 32, 32)  # 11 frames -> 10 used -> 2 windows
    assert torch.equal(video[1, :, 0], torch.from_numpy(clip.faces[2]).permute(2, 0, 1))
    assert audio.shape == (2, TINY.audio_frames, TINY.mel_bins)
    first = audio_bounds(len(clip.audio), 11, 10, 2, 8)[0]
    torch.testing.assert_close(audio[0], window_fbank(clip.audio[first[0]:first[1]], TINY))


def test_short_clips_fail_or_are_padded():
    clip = make_clip(5)
    with pytest.raises(ClipError) as info:
        clip_windows(clip.faces, clip.audio, TINY, source="short.mp4")
    assert info.value.reason == "too_short" and "short.mp4" in info.value.message
    video, audio = clip_windows(clip.faces, clip.audio, TINY, pad_short=True)
    assert video.shape[0] == 1 and torch.equal(video[0, :, -1], video[0, :, 4])
    torch.testing.assert_close(audio[0], window_fbank(clip.audio, TINY))


# -- the detector -----------------------------------------------------------------------------------------

def test_detector_declares_the_protocol():
    assert HAVICDetector.input_spec.fps == 5.0 and HAVICDetector.input_spec.face_size == 224
    assert HAVICDetector.input_spec.max_seconds == 10.0 and HAVICDetector.input_spec.audio_optional
    assert HAVICTinyDetector.input_spec.face_size == TINY.image_size
    assert HAVICDetector.aggregation == "mean_logit" and HAVICDetector.scores_are_probabilities


def test_score_is_sigmoid_of_mean_window_logit_and_batching_does_not_change_it():
    detector = HAVICTinyDetector(batch_size=3)
    clips = [make_clip(20, seed=1), make_clip(9, seed=2), make_clip(14, audio=False, removed=True, seed=3)]
    scores = detector.score_batch(clips)
    for clip, score in zip(clips, scores):
        logits = detector.score_windows(clip)
        assert math.isclose(score, 1 / (1 + math.exp(-logits.mean())), rel_tol=1e-6)
        assert math.isclose(detector.score(clip), score, rel_tol=1e-6)
    assert len(detector.score_windows(clips[0])) == 7  # (20 - 8) // 2 + 1


def test_missing_audio_uses_the_visual_head_alone():
    detector = HAVICTinyDetector()
    clip = make_clip(12, audio=False, removed=True)
    video, _ = detector.windows(clip)
    with torch.inference_mode():
        expected = detector.model.visual_logits(video.float() / 255)[:, 0].numpy()
    np.testing.assert_allclose(detector.score_windows(clip), expected, rtol=1e-5)
    with_audio = make_clip(12)  # the same faces, with audio: the main head scores it
    assert np.array_equal(with_audio.faces, clip.faces)
    assert not np.allclose(detector.score_windows(with_audio), expected)


def test_short_clip_is_a_clip_error_unless_padding():
    with pytest.raises(ClipError, match="needs 8"):
        HAVICTinyDetector().score(make_clip(6))
    assert 0 < HAVICTinyDetector(pad_short=True).score(make_clip(6)) < 1


def test_save_and_load_reproduce_scores(tmp_path):
    detector = HAVICTinyDetector(seed=7)
    clips = [make_clip(16, seed=4), make_clip(10, audio=False, removed=True, seed=5)]
    before = detector.score_batch(clips)
    restored = HAVICTinyDetector.load(detector.save(tmp_path / "saved"))
    assert restored.config() == detector.config()
    assert restored.score_batch(clips) == before
    assert HAVICTinyDetector(seed=8).score_batch(clips) != before


def test_a_weights_file_works_as_checkpoint_and_option(tmp_path):
    """`avbench run --detector havic --checkpoint FILE` calls cls.load(FILE); --option weights=FILE too."""
    model = tiny_model(seed=9)
    path = saved(tmp_path, {f"module.{k}": v for k, v in model.state_dict().items()})
    clip = make_clip(10, seed=6)
    from_checkpoint = HAVICTinyDetector.load(path)
    assert from_checkpoint.weights == str(path)
    video, audio = from_checkpoint.windows(clip)
    with torch.inference_mode():
        expected = model(audio, video.float() / 255)[:, 0].numpy()
    np.testing.assert_allclose(from_checkpoint.score_windows(clip), expected, rtol=1e-5)
    assert HAVICTinyDetector(weights=str(path)).score(clip) == from_checkpoint.score(clip)
    other = tmp_path / "notes.txt"
    other.write_text("not weights")
    with pytest.raises(ValueError, match="not a havic_tiny checkpoint"):
        HAVICTinyDetector.load(other)



def test_safetensors_bytes_are_the_same_for_the_same_tensors_and_read_back():
    """safetensors orders its header by a hash map: avbench sorts it, so a file's sha256 is stable."""
    from safetensors.torch import load

    from avbench.weights import safetensors_bytes

    state = {f"t{k}": torch.full((k + 1,), float(k)) for k in range(6)}
    metadata = {name: name.upper() for name in ("model", "tiny", "seed", "config", "format", "producer")}
    written = {safetensors_bytes(state, metadata) for _ in range(20)}
    assert len(written) == 1
    (data,) = written
    assert int.from_bytes(data[:8], "little") % 8 == 0
    assert all(torch.equal(load(data)[k], v) for k, v in state.items())
