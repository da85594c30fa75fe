"""CAD's network, losses and inputs (spec section 9) on the tiny twin, plus the paper-size parameter
budget on the meta device: shapes, zero-init equality of the specific towers, what trains and what
stays frozen, the KL and distillation hand cases, masked pooling, the frame layout, the trainable
state round trip and what each ablation switch removes."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from avbench.detectors.cad.model import (
    CAD, CADConfig, alignment_loss, clip_tokens, distillation_loss, total_loss)
from avbench.detectors.cad.preprocess import (
    CLIP_MEAN, CLIP_STD, audio_padding, clip_frames, clip_windows, frame_indices, whisper_mel)

pytestmark = pytest.mark.usefixtures("torch_one_thread")

BATCH, FRAMES = 2, 4  # the spec allows 4 frames (one group) in tests for speed
VALID = (1500, 700)  # valid Whisper frames of the two samples: the second is padded


def model(seed: int = 0, **changes) -> CAD:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CAD(CADConfig.tiny(frames=FRAMES, **changes))


def inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(BATCH, FRAMES, 3, 224, 224, generator=g), torch.randn(BATCH, 80, 3000, generator=g),
            audio_padding(VALID))


LABELS = torch.tensor([0, 1])


def names(m: CAD) -> set[str]:
    return {name for name, _ in m.named_parameters()}


# -- shapes and zero-init -------------------------------------------------------------------------------

def test_every_tensor_has_its_shape():
    m = model().eval()
    frames, mel, padding = inputs()
    encoded = m.encode(frames, mel)
    assert encoded.joint_video.shape == (BATCH, FRAMES, 32)  # tiny CLIP's projected CLS per frame
    assert encoded.joint_audio.shape == encoded.audio.shape == (BATCH, 1500, 32)
    assert encoded.video.shape == (BATCH, FRAMES, 128)  # tiny CLIP width
    out = m.heads(encoded, padding)
    assert out.logits.shape == (BATCH, 2)
    assert out.s_v.shape == out.s_a.shape == (BATCH, 32)  # d_align
    assert all(t.shape == (BATCH, 32) for t in (out.x_v, out.x_a, out.z_v, out.z_a))  # d_u
    assert m.head[-1].in_features == 2 * 32 + 2 * 32
    patch = model(align_video_tokens="patch").eval()
    assert patch.joint_video(frames).shape == (BATCH, FRAMES * 49, 128)  # 7 x 7 patches, CLIP width
    assert patch(frames, mel, padding).s_v.shape == (BATCH, 32)


def test_the_joint_video_features_are_open_clips_image_embeddings():
    m = model().eval()
    frames, _, _ = inputs()
    with torch.no_grad():
        expected = m.clip(frames.flatten(0, 1)).reshape(BATCH, FRAMES, -1)
        torch.testing.assert_close(m.joint_video(frames), expected, rtol=0, atol=1e-6)


def test_the_specific_towers_equal_the_frozen_ones_at_step_zero():
    m = model().train()  # BatchNorm in training mode too: the zero up-projection hides it
    frames, mel, _ = inputs()
    with torch.no_grad():
        x = m.clip.transformer(clip_tokens(m.clip, frames.flatten(0, 1)))
        plain_cls = m.clip.ln_post(x[:, 0]).reshape(BATCH, FRAMES, -1)
        assert torch.equal(m.video(frames), plain_cls)
        assert torch.equal(m.audio(mel), m.whisper(mel))


# -- what trains --------------------------------------------------------------------------------------

def test_frozen_parameters_stay_and_every_trainable_one_moves_in_three_steps():
    """Zero-initialised layers hide what lies behind them for a step or two: step one moves the
    up-projections, LoRA B and the heads; step two the adapter internals and LoRA A, but not the
    first BatchNorm gain of each conv stack, which the next BatchNorm cancels while the biases are
    still zero; step three moves those. Except in the last
    adapter: its streams and cross-attention change only patch tokens, and nothing reads the last
    block's patch tokens (the tower's output is each frame's CLS), so they never get a gradient."""
    m = model().train()
    frozen = {n for n, p in m.named_parameters() if not p.requires_grad}
    backbone = {n for n in names(m) if n.startswith(("clip.", "whisper.", "video.clip.", "audio."))}
    assert frozen == {n for n in backbone if not n.startswith("video.clip.ln_post") and "lora_" not in n}
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    optimiser = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    frames, mel, padding = inputs()
    for _ in range(3):
        optimiser.zero_grad()
        total_loss(m(frames, mel, padding), LABELS, m.cfg).total.backward()
        optimiser.step()
    after = dict(m.named_parameters())
    assert all(after[n].grad is None and torch.equal(after[n], before[n]) for n in frozen)
    last = f"video.adapters.{len(m.video.adapters) - 1}."
    dead = {n for n in names(m) if n.startswith(last) and not n.startswith((last + "down.", last + "up."))}
    assert {n for n in names(m) - frozen if torch.equal(after[n], before[n])} == dead
    assert all(after[n].grad is None or not after[n].grad.any() for n in dead)


# -- losses -------------------------------------------------------------------------------------------

def test_kl_of_a_distribution_with_itself_is_zero():
    s = torch.randn(3, 8)
    assert alignment_loss(s, s).abs().item() < 1e-7


def test_the_alignment_loss_is_kl_p_to_q_on_a_hand_computed_two_class_case():
    s_v = torch.log(torch.tensor([[0.8, 0.2], [0.5, 0.5]]))  # P
    s_a = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5]]))  # Q
    kl_p_q = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)  # 0.19274
    kl_q_p = 0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2)  # 0.22314: the swapped order
    assert alignment_loss(s_v, s_a).item() == pytest.approx(kl_p_q / 2, abs=1e-6)  # batchmean over 2 rows
    assert alignment_loss(s_a, s_v).item() == pytest.approx(kl_q_p / 2, abs=1e-6)


def test_distillation_is_minus_one_for_equal_inputs_and_its_targets_get_no_gradient():
    x_v, x_a = torch.randn(4, 16, requires_grad=True), torch.randn(4, 16, requires_grad=True)
    z_v, z_a = (x_a.detach() * 3).requires_grad_(), (x_v.detach() * 0.5).requires_grad_()
    loss = distillation_loss(x_v, x_a, z_v, z_a)
    assert loss.item() == pytest.approx(-1.0, abs=1e-6)
    loss.backward()
    assert x_v.grad is None and x_a.grad is None
    z_v2 = torch.randn(4, 16, requires_grad=True)
    distillation_loss(x_v, x_a, z_v2, None, "audio_to_video").backward()  # only D(z_v, sg(x_a))
    assert z_v2.grad.abs().sum() > 0 and x_a.grad is None


def test_the_total_loss_adds_the_weighted_terms_and_the_switches_drop_them():
    frames, mel, padding = inputs()
    m = model().eval()
    out = m(frames, mel, padding)
    losses = total_loss(out, LABELS, m.cfg)
    assert losses.total.item() == pytest.approx((losses.ce + losses.kl + losses.kd).item(), abs=1e-6)
    assert losses.kl > 0 and -1 <= losses.kd <= 1
    assert total_loss(out, LABELS, replace(m.cfg, use_align_loss=False)).kl == 0
    real_only = total_loss(out, LABELS, CADConfig.tiny(frames=FRAMES, align_on="real_only"))
    assert real_only.kl.item() == pytest.approx(alignment_loss(out.s_v[:1], out.s_a[:1]).item(), abs=1e-6)
    assert total_loss(out, torch.tensor([1, 1]), CADConfig.tiny(frames=FRAMES, align_on="real_only")).kl == 0
    assert total_loss(out, LABELS, CADConfig.tiny(frames=FRAMES, use_distill=False)).kd == 0


# -- masked pooling -----------------------------------------------------------------------------------

@pytest.mark.parametrize("cross_attention", [True, False])
def test_padded_audio_frames_change_nothing_after_the_pools(cross_attention):
    m = model(use_cross_attention=cross_attention).eval()
    frames, mel, padding = inputs()
    with torch.no_grad():
        encoded = m.encode(frames, mel)
        reference = m.heads(encoded, padding)
        noise = torch.randn(BATCH, 1500, 32) * 100
        altered = encoded._replace(joint_audio=torch.where(padding[..., None], noise, encoded.joint_audio),
                                   audio=torch.where(padding[..., None], -noise, encoded.audio))
        assert not torch.equal(altered.audio, encoded.audio)
        changed = m.heads(altered, padding)
    for name in ("logits", "s_v", "s_a", "x_a", "z_a"):
        torch.testing.assert_close(getattr(changed, name), getattr(reference, name), rtol=0, atol=1e-6)


# -- inputs -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, expected, repeated", [
    (16, list(range(16)), 0),
    (100, [*range(0, 4), *range(32, 36), *range(64, 68), *range(96, 100)], 0),
    (17, [*range(0, 4), *range(4, 8), *range(9, 13), *range(13, 17)], 0),  # starts 0, 4.33, 8.67, 13
    (10, [*range(10), *[9] * 6], 6),
])
def test_four_groups_of_four_frames_spread_over_the_clip(n, expected, repeated):
    sample = frame_indices(n)
    assert sample.indices.tolist() == expected and sample.repeated == repeated


def test_clips_over_30_s_are_consecutive_30_s_windows():
    (only,) = clip_windows(750, 30 * 16000)  # exactly 30 s: one window over the whole clip
    assert only.frames.indices.tolist() == frame_indices(750).indices.tolist() and only.audio == slice(0, 480000)
    first, second = clip_windows(1000, 40 * 16000)
    assert first.frames.indices.tolist() == frame_indices(750).indices.tolist()
    assert second.frames.indices.tolist() == (frame_indices(250).indices + 750).tolist()
    assert second.audio == slice(480000, 960000) and second.frames.repeated == 0
    late = clip_windows(100, 40 * 16000)[1]  # the audio outlasts the video
    assert late.frames.indices.tolist() == [99] * 16 and late.frames.repeated == 15


def test_face_crops_are_clip_normalised_and_resized_to_224():
    faces = np.full((3, 224, 224, 3), 255, np.uint8)
    x = clip_frames(faces, [0, 2, 2])
    assert x.shape == (3, 3, 224, 224) and x.dtype == torch.float32
    torch.testing.assert_close(x[:, :, 0, 0], ((1 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)).expand(3, 3))
    assert clip_frames(np.zeros((1, 256, 320, 3), np.uint8), [0]).shape == (1, 3, 224, 224)


def test_whisper_input_is_30_s_of_log_mel_with_the_valid_frame_count():
    mel, n_a = whisper_mel(np.zeros(16000, np.float32))
    assert mel.shape == (80, 3000) and n_a == 50
    assert whisper_mel(np.zeros(321, np.float32))[1] == 2  # ceil(321 / 320)
    assert whisper_mel(np.zeros(40 * 16000, np.float32))[1] == 1500
    padding = audio_padding([1500, 50])
    assert padding.shape == (2, 1500) and padding.sum(1).tolist() == [0, 1450] and not padding[1, 49]


# -- trainable state ------------------------------------------------------------------------------------

def test_the_trainable_state_round_trips_bit_exactly(tmp_path):
    frames, mel, padding = inputs()
    trained = model().train()
    optimiser = torch.optim.Adam([p for p in trained.parameters() if p.requires_grad], lr=1e-3)
    total_loss(trained(frames, mel, padding), LABELS, trained.cfg).total.backward()
    optimiser.step()
    trained(frames, mel, padding)  # BatchNorm statistics move too
    state = trained.trainable_state_dict()
    assert not any(k.startswith(("clip.", "whisper.", "video.clip.transformer.")) for k in state)
    assert any(k.endswith("running_mean") for k in state) and any("lora_b" in k for k in state)
    torch.save(state, tmp_path / "cad.pt")
    fresh = model(seed=7)
    fresh.load_trainable_state_dict(torch.load(tmp_path / "cad.pt", weights_only=True))
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), fresh.state_dict().values()))
    trained.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(trained(frames, mel, padding).logits, fresh(frames, mel, padding).logits)
    with pytest.raises(KeyError, match="missing"):
        fresh.load_trainable_state_dict({k: v for k, v in state.items() if "lora_a" not in k})


# -- ablation switches -----------------------------------------------------------------------------------

def test_each_ablation_switch_removes_the_parameters_it_claims_to():
    full = names(model())
    assert full == names(model(use_align_loss=False)) == names(model(align_on="real_only"))

    def removed(**changes):
        other = names(model(**changes))
        assert other <= full
        return {n.split(".")[0] if not n.startswith("alignment.") else ".".join(n.split(".")[:2])
                for n in full - other}

    assert removed(video_only=True) == {"clip", "whisper", "audio", "audio_out", "alignment.video_proj",
                                        "alignment.audio_proj", "alignment.v2a", "alignment.a2v", "predict_v",
                                        "predict_a"}
    assert model(video_only=True).head[-1].in_features == 32
    assert removed(audio_only=True) == {"clip", "whisper", "video", "video_out", "alignment.video_proj",
                                        "alignment.audio_proj", "alignment.v2a", "alignment.a2v", "predict_v",
                                        "predict_a"}
    assert model(audio_only=True).head[-1].in_features == 32
    assert removed(use_cross_attention=False) == {"alignment.v2a", "alignment.a2v"}
    assert removed(use_distill=False) == removed(distill_loss="kl") == {"predict_v", "predict_a"}
    assert removed(kd_direction="audio_to_video") == {"predict_a"}
    unfrozen = model(freeze_align=False)
    assert names(unfrozen) == full
    trainable = {n for n, p in unfrozen.named_parameters() if p.requires_grad}
    assert {n for n in full if n.startswith(("clip.", "whisper."))} <= trainable
    assert set(unfrozen.trainable_state_dict()) > set(model().trainable_state_dict())


def test_video_only_needs_frames_alone():
    m = model(video_only=True).eval()
    out = m(inputs()[0])
    assert out.logits.shape == (BATCH, 2) and out.s_v is None and out.x_a is None
    assert total_loss(out, LABELS, m.cfg).total.item() == pytest.approx(
        torch.nn.functional.cross_entropy(out.logits, LABELS).item())


def test_audio_only_needs_mel_and_padding_alone():
    m = model(audio_only=True).eval()
    _, mel, padding = inputs()
    out = m(None, mel, padding)
    assert out.logits.shape == (BATCH, 2) and out.s_v is None and out.x_v is None and out.x_a is not None


def test_the_paper_size_matches_the_specs_parameter_budget():
    """Spec section 8: ~23M in the 12 adapters (1.2M of each 1.9M is cross-attention), ~0.3M LoRA,
    ~2.8M alignment, ~1.8M embeddings, predictors and head; frozen ~2 x (86M + 88M)."""
    with torch.device("meta"):
        m = CAD(CADConfig(random_init=True))

    def count(prefix: str = "", trainable: bool = True) -> int:
        return sum(p.numel() for n, p in m.named_parameters() if n.startswith(prefix) and p.requires_grad == trainable)

    assert count("video.adapters.") == 22_804_992
    assert count("video.adapters.0.s2t") + count("video.adapters.0.t2s") == 1_182_720
    assert sum(p.numel() for n, p in m.named_parameters() if "lora_" in n) == 294_912
    assert count("alignment.") == 2_759_680
    assert count() == 27_656_962 and count(trainable=False) == 346_387_968
    assert m.head[-1].in_features == 2 * 512 + 2 * 768


def test_the_backbones_load_from_their_weight_files(tmp_path):
    """The weight-file path (the wrappers' strict loading) on tiny files written from the tiny twin."""
    from safetensors.torch import save_file

    from avbench.detectors.ssl.backbones import Whisper

    tiny = model()
    save_file({f"visual.{k}": v.contiguous() for k, v in tiny.clip.state_dict().items()},
              tmp_path / "open_clip_model.safetensors")
    torch.save({"dims": Whisper.tiny_config,
                "model_state_dict": {f"encoder.{k}": v for k, v in tiny.whisper.state_dict().items()}},
               tmp_path / "small.pt")
    files = model(tiny_backbones=False, clip_weights=str(tmp_path / "open_clip_model.safetensors"),
                  whisper_weights=str(tmp_path / "small.pt"))
    assert tiny.state_dict().keys() == files.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(tiny.state_dict().values(), files.state_dict().values()))


def test_the_config_refuses_a_missing_weight_file_and_unknown_options():
    with pytest.raises(ValueError, match=r"small\.pt"):
        CADConfig(clip_weights="open_clip_model.safetensors")
    with pytest.raises(ValueError, match="backbone source"):
        CADConfig()
    with pytest.raises(FileNotFoundError, match="vit_base_patch16_clip_224.openai"):
        CAD(CADConfig(clip_weights="/nonexistent/open_clip_model.safetensors", whisper_weights="/nonexistent/small.pt"))
    with pytest.raises(ValueError, match="distill_loss"):
        CADConfig.tiny(distill_loss="mse")
    with pytest.raises(ValueError, match="kd_direction"):
        CADConfig.tiny(distill_loss="kl", kd_direction="audio_to_video")
