"""HOLA's network (detectors/hola): the AVF-MAE++ LG encoders (geometry, state-dict names, the
visible-mask contract the pre-training relies on, returned blocks, gradient checkpointing),
checkpoints in the upstream layout loaded strictly, and the head at every stage on the tiny twin;
full-size parameter counts on the meta device."""

from __future__ import annotations

import argparse
import datetime
import hashlib
import math

import pytest
import torch
from safetensors.torch import save_file

from avbench.detectors.hola.backbone import EncoderConfig, LGEncoder, sinusoid_table
from avbench.detectors.hola.checkpoint import encoder_state, load_avfmae
from avbench.detectors.hola.model import HOLA, HOLAConfig, MFCCEncoder, fake_probability
from avbench.training import use_grad_checkpointing
from avbench.weights import CheckpointError

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = HOLAConfig.tiny()


def seeded(build, seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def encoders(seed: int = 0) -> tuple[LGEncoder, LGEncoder]:
    return seeded(lambda: (LGEncoder(EncoderConfig.video_tiny()).eval(), LGEncoder(EncoderConfig.audio_tiny()).eval()),
                  seed)


def tiny(seed: int = 0, **changes) -> HOLA:
    return seeded(lambda: HOLA(HOLAConfig.tiny(**changes)).eval(), seed)


def inputs(cfg: HOLAConfig = TINY, batch: int = 2, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, *cfg.video.input_shape, generator=g), torch.randn(batch, *cfg.audio_shape, generator=g))


def tube_mask(cfg: EncoderConfig, per_region: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A region-balanced tube mask: in each sample the same spatial positions kept in every frame,
    `per_region` tokens per region."""
    g = torch.Generator().manual_seed(seed)
    t, h, w = cfg.grid
    region_of = cfg.region_index().reshape(t, h, w)[0]  # regions of the first temporal slab
    masks = []
    for _ in range(batch):
        keep = torch.zeros(h * w, dtype=torch.bool)
        for r in region_of.unique():
            spots = (region_of.flatten() == r).nonzero().flatten()
            keep[spots[torch.randperm(len(spots), generator=g)[:per_region // cfg.region[0]]]] = True
        masks.append(keep.repeat(t))
    return torch.stack(masks)


def random_balanced_mask(cfg: EncoderConfig, per_region: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    region_of = cfg.region_index()
    mask = torch.zeros(batch, cfg.num_tokens, dtype=torch.bool)
    for b in range(batch):
        for r in range(cfg.num_regions):
            spots = (region_of == r).nonzero().flatten()
            mask[b, spots[torch.randperm(len(spots), generator=g)[:per_region]]] = True
    return mask


# -- encoders ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg, grid, regions, per_region", [
    (EncoderConfig.video_base(), (8, 10, 10), (4, 2, 1), 100),
    (EncoderConfig.audio_base(), (16, 8), (4, 2), 16),
    (EncoderConfig.video_tiny(), (2, 4, 4), (1, 2, 1), 16),
    (EncoderConfig.audio_tiny(), (4, 2), (2, 1), 4),
])
def test_encoder_geometry_and_region_index(cfg, grid, regions, per_region):
    assert cfg.grid == grid and cfg.region_grid == regions and cfg.region_tokens == per_region
    assert cfg.num_tokens == math.prod(grid) and cfg.num_regions == math.prod(regions)
    index = cfg.region_index()
    assert torch.bincount(index).tolist() == [per_region] * cfg.num_regions
    coords = torch.stack(torch.meshgrid(*[torch.arange(g) for g in grid], indexing="ij")).flatten(1)  # (axes, N)
    region_coords = coords // torch.tensor(cfg.region)[:, None]
    expected = torch.zeros(cfg.num_tokens, dtype=torch.long)
    for axis, count in enumerate(regions):
        expected = expected * count + region_coords[axis]
    assert torch.equal(index, expected)


def test_encoder_config_refuses_geometry_that_does_not_tile():
    with pytest.raises(ValueError, match="divide by the LG region"):
        EncoderConfig.video_base(input_size=(16, 224, 224))  # 14x14 tokens, regions (2, 5, 10)
    with pytest.raises(ValueError, match="modality"):
        EncoderConfig(modality="text")
    with pytest.raises(ValueError, match="heads"):
        EncoderConfig.audio_tiny(heads=3)


def test_encoder_state_dict_uses_the_upstream_names_and_holds_no_position_table():
    video, _ = encoders()
    keys = set(video.state_dict())
    attn = [f"{p}.{n}" for p in ("first_attn", "second_attn", "third_attn", "fourth_attn")
            for n in ("q.weight", "kv.weight", "q_bias", "v_bias", "proj.weight", "proj.bias")]
    norms = [f"{n}.{w}" for n in ("first_attn_norm0", "second_attn_norm0", "third_attn_norm0", "third_attn_norm1",
                                  "fourth_attn_norm0", "fourth_attn_norm1", "norm2") for w in ("weight", "bias")]
    mlp = [f"mlp.{fc}.{w}" for fc in ("fc1", "fc2") for w in ("weight", "bias")]
    expected = {"patch_embed.proj.weight", "patch_embed.proj.bias", "lg_region_tokens", "norm.weight", "norm.bias"}
    expected |= {f"blocks.{i}.{name}" for i in range(2) for name in attn + norms + mlp}
    assert keys == expected
    assert video.state_dict()["lg_region_tokens"].shape == (2, 32)
    assert video.state_dict()["blocks.0.first_attn.kv.weight"].shape == (64, 32)
    assert tuple(video.patch_embed.proj.weight.shape) == (32, 3, 2, 8, 8)
    table = video.pos_embed
    assert table.shape == (1, 32, 32)
    p, i = 5, 3
    assert table[0, p, 2 * i].item() == pytest.approx(math.sin(p / 10000 ** (2 * i / 32)), abs=1e-6)
    assert table[0, p, 2 * i + 1].item() == pytest.approx(math.cos(p / 10000 ** (2 * i / 32)), abs=1e-6)


def test_embed_is_raster_patches_plus_the_sinusoid():
    video, audio = encoders()
    x, a = inputs()
    with torch.no_grad():
        tokens = video.embed(x)
        assert tokens.shape == (2, 32, 32)
        patch = x[:, :, 2:4, 8:16, 16:24]  # tubelet 1, row 1, column 2 -> raster 1*16 + 1*4 + 2 = 22
        direct = torch.einsum("bctij,dctij->bd", patch, video.patch_embed.proj.weight) + video.patch_embed.proj.bias
        assert torch.allclose(tokens[:, 22], direct + video.pos_embed[0, 22], atol=1e-5)
        assert audio.embed(a).shape == (2, 8, 32)
        assert torch.allclose(audio.embed(a)[:, 3] - audio.pos_embed[0, 3],
                              torch.einsum("bcij,dcij->bd", a[:, :, 8:16, 8:16], audio.patch_embed.proj.weight)
                              + audio.patch_embed.proj.bias, atol=1e-5)  # time 1, freq 1 -> 1*2 + 1
    with pytest.raises(ValueError, match="expects"):
        video.embed(torch.zeros(2, 3, 4, 32, 16))


def test_an_all_true_mask_is_the_unmasked_forward():
    video, audio = encoders()
    x, a = inputs()
    with torch.no_grad():
        assert torch.allclose(video(x), video(x, visible=torch.ones(2, 32, dtype=torch.bool)), atol=1e-6)
        assert torch.allclose(audio(a), audio(a, visible=torch.ones(2, 8, dtype=torch.bool)), atol=1e-6)


def test_kept_tokens_come_back_in_raster_order_of_their_positions():
    """Without blocks the encoder is norm(embed(x)) at the kept positions: checks the gather into LG
    layout and the way back."""
    cfg = EncoderConfig.video_tiny(depth=0)
    encoder = seeded(lambda: LGEncoder(cfg))
    x, _ = inputs()
    visible = tube_mask(cfg, per_region=4)
    with torch.no_grad():
        out = encoder(x, visible=visible)
        expected = encoder.norm(encoder.embed(x)[visible].reshape(2, -1, 32))
    assert out.shape == (2, 8, 32)
    assert torch.allclose(out, expected, atol=1e-6)


def test_region_balanced_masks_are_accepted_per_sample():
    video, audio = encoders()
    x, a = inputs()
    v_mask = tube_mask(video.cfg, per_region=4)  # 2 spatial spots per region and frame slab, 2 frames
    assert not torch.equal(v_mask[0], v_mask[1])
    assert video.region_counts(v_mask).tolist() == [[4, 4], [4, 4]]
    a_mask = random_balanced_mask(audio.cfg, per_region=2)
    with torch.no_grad():
        v_out, a_out = video(x, visible=v_mask), audio(a, visible=a_mask)
        assert v_out.shape == (2, 8, 32) and a_out.shape == (2, 4, 32)
        alone = video(x[1:], visible=v_mask[1:])  # a sample's output does not depend on the others
    assert torch.allclose(v_out[1:], alone, atol=1e-5)
    # the output depends on the kept patches only: changing the pixels of masked ones changes nothing
    hidden = (~v_mask).reshape(2, 1, 2, 4, 4).repeat_interleave(2, 2).repeat_interleave(8, 3).repeat_interleave(8, 4)
    changed = x + hidden * 5.0
    with torch.no_grad():
        assert torch.allclose(video(changed, visible=v_mask), v_out, atol=1e-5)


def test_masks_with_unequal_region_counts_are_refused():
    video, audio = encoders()
    x, a = inputs()
    uneven = torch.zeros(2, 32, dtype=torch.bool)
    top = (video.region_of == 0).nonzero().flatten()
    bottom = (video.region_of == 1).nonzero().flatten()
    uneven[:, top[:3]] = True
    uneven[:, bottom[:1]] = True
    with pytest.raises(ValueError, match="same number"):
        video(x, visible=uneven)
    across = random_balanced_mask(audio.cfg, per_region=2)
    across[1] = random_balanced_mask(audio.cfg, per_region=1, batch=1)[0]  # equal inside each sample only
    with pytest.raises(ValueError, match="every sample"):
        audio(a, visible=across)
    with pytest.raises(ValueError, match="same number"):
        audio(a, visible=torch.zeros(2, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool tensor of shape"):
        audio(a, visible=torch.ones(2, 7, dtype=torch.bool))


def test_return_blocks_gives_unnormalised_block_outputs_in_the_same_order():
    video, audio = encoders()
    x, a = inputs()
    mask = tube_mask(video.cfg, per_region=2)
    with torch.no_grad():
        out, blocks = video(x, visible=mask, return_blocks=(1, 0))
        assert out.shape == (2, 4, 32) and [b.shape for b in blocks] == [(2, 4, 32)] * 2
        assert torch.allclose(video.norm(blocks[0]), out, atol=1e-6)  # block 1 is the last
        assert not torch.allclose(blocks[0], blocks[1])
        assert torch.allclose(video(x, visible=mask), out)
        full, (first,) = audio(a, return_blocks=[0])
        assert full.shape == first.shape == (2, 8, 32)
    with pytest.raises(ValueError, match="return_blocks"):
        audio(a, return_blocks=(2,))


def test_gradient_checkpointing_changes_nothing_but_memory():
    cfg = EncoderConfig.video_tiny(drop_path=0.2)
    x, _ = inputs()
    results = []
    for checkpointing in (False, True):
        encoder = seeded(lambda: LGEncoder(cfg)).train()
        if checkpointing:
            assert use_grad_checkpointing(encoder) == 1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(3)
            out = encoder(x)
        out.square().mean().backward()
        results.append((out.detach(), encoder.blocks[0].first_attn.q.weight.grad.clone()))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-6)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-6)


def test_drop_path_is_active_in_training_only():
    encoder = seeded(lambda: LGEncoder(EncoderConfig.audio_tiny(drop_path=0.5)))
    _, a = inputs()
    with torch.no_grad():
        assert not torch.allclose(encoder.train()(a), encoder(a))
        assert torch.equal(encoder.eval()(a), encoder(a))


# -- checkpoints ----------------------------------------------------------------------------------------

def upstream_file(tmp_path, video, audio, *, drop=(), add=None, name="checkpoint-99.pth"):
    """A checkpoint as upstream's pre-training saves it (DataParallel prefix, pre-training-only parts,
    optimiser state and the argparse Namespace next to the model)."""
    state = {f"module.{k}": v for k, v in encoder_state(video, audio).items() if k not in drop}
    state.update({"module.decoder.blocks.0.attn.qkv.weight": torch.randn(48, 16),
                  "module.decoder_audio.head.weight": torch.randn(4, 16),
                  "module.encoder_fusion.blocks.0.norm1.weight": torch.ones(32),
                  "module.encoder_to_decoder.weight": torch.randn(16, 32),
                  "module.mask_token": torch.zeros(1, 1, 16)})
    state.update(add or {})
    path = tmp_path / name
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}, "epoch": 99,
                "args": argparse.Namespace(model="pretrain_hicmae_dim512_patch16_160_a256", lr=1.5e-4)}, path)
    return path


def test_an_upstream_checkpoint_loads_strictly_and_reports_what_it_ignored(tmp_path):
    source_v, source_a = encoders(seed=0)
    path = upstream_file(tmp_path, source_v, source_a)
    video, audio = encoders(seed=1)
    x, a = inputs()
    with torch.no_grad():
        assert not torch.allclose(video(x), source_v(x))
        report = load_avfmae(video, audio, path)
        assert torch.equal(video(x), source_v(x)) and torch.equal(audio(a), source_a(a))
    assert report.video_keys == len(source_v.state_dict()) and report.audio_keys == len(source_a.state_dict())
    assert report.ignored == ("decoder.blocks.0.attn.qkv.weight", "decoder_audio.head.weight",
                              "encoder_fusion.blocks.0.norm1.weight", "encoder_to_decoder.weight", "mask_token")
    assert report.ignored_unknown == ()
    assert report.total_keys == report.video_keys + report.audio_keys + 5
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report.as_dict()["ignored"][0] == "decoder.blocks.0.attn.qkv.weight"


def test_missing_and_unexpected_encoder_keys_are_refused_with_their_names(tmp_path):
    source_v, source_a = encoders()
    missing = upstream_file(tmp_path, source_v, source_a, name="missing.pth",
                            drop=("encoder.blocks.1.fourth_attn.q_bias", "encoder_audio.norm.weight"))
    video, audio = encoders(seed=1)
    before = video.state_dict()["blocks.0.first_attn.q.weight"].clone()
    with pytest.raises(CheckpointError) as err:
        load_avfmae(video, audio, missing)
    message = str(err.value)
    assert "missing.pth" in message
    assert "missing encoder.blocks.1.fourth_attn.q_bias" in message and "missing encoder_audio.norm.weight" in message
    assert torch.equal(video.state_dict()["blocks.0.first_attn.q.weight"], before)  # nothing loaded

    unexpected = upstream_file(tmp_path, source_v, source_a, name="unexpected.pth",
                               add={"module.encoder.pos_embed": torch.zeros(1, 32, 32),
                                    "module.encoder_audio.blocks.5.norm2.weight": torch.ones(32)})
    with pytest.raises(CheckpointError) as err:
        load_avfmae(video, audio, unexpected)
    assert "unexpected.pth" in str(err.value)
    assert "unexpected encoder.pos_embed" in str(err.value)
    assert "unexpected encoder_audio.blocks.5.norm2.weight" in str(err.value)

    reshaped = upstream_file(tmp_path, source_v, source_a, name="reshaped.pth",
                             add={"module.encoder.lg_region_tokens": torch.zeros(8, 32)})
    with pytest.raises(CheckpointError, match=r"shape of encoder.lg_region_tokens: \(8, 32\)"):
        load_avfmae(video, audio, reshaped)


def test_safetensors_and_compiled_prefixes_load_and_a_file_without_encoders_is_refused(tmp_path):
    source_v, source_a = encoders()
    state = {f"_orig_mod.{k}": v for k, v in encoder_state(source_v, source_a).items()}
    state["_orig_mod.decoder.norm.weight"] = torch.ones(16)
    path = tmp_path / "ours.safetensors"
    save_file(state, str(path))
    video, audio = encoders(seed=1)
    report = load_avfmae(video, audio, path)
    assert report.ignored == ("decoder.norm.weight",)
    x, a = inputs()
    with torch.no_grad():
        assert torch.equal(video(x), source_v(x)) and torch.equal(audio(a), source_a(a))

    other = tmp_path / "classifier.safetensors"
    save_file({"head.weight": torch.zeros(2, 32), "blocks.0.norm1.weight": torch.ones(32)}, str(other))
    with pytest.raises(CheckpointError, match="no 'encoder.\\*' keys.*encoder_audio"):
        load_avfmae(video, audio, other)


def test_mfcc32_loads_the_video_encoder_only(tmp_path):
    source_v, source_a = encoders()
    path = upstream_file(tmp_path, source_v, source_a)
    model = tiny(seed=1, audio_frontend="mfcc32")
    before = {k: v.clone() for k, v in model.audio_encoder.state_dict().items()}
    report = load_avfmae(model.video_encoder, model.audio_encoder, path)
    assert report.audio_keys == 0 and report.video_keys == len(source_v.state_dict())
    assert "encoder_audio.norm.weight" in report.ignored and "encoder_audio.norm.weight" in report.ignored_unknown
    assert all(torch.equal(before[k], v) for k, v in model.audio_encoder.state_dict().items())
    x, _ = inputs()
    with torch.no_grad():
        assert torch.equal(model.video_encoder.eval()(x), source_v(x))


def test_pickled_objects_beyond_the_upstream_layout_need_trust(tmp_path):
    source_v, source_a = encoders()
    path = tmp_path / "odd.pth"
    torch.save({"model": encoder_state(source_v, source_a), "saved": datetime.datetime(2024, 9, 19)}, path)
    video, audio = encoders(seed=1)
    with pytest.raises(CheckpointError, match="trusted"):
        load_avfmae(video, audio, path)
    load_avfmae(video, audio, path, trusted=True)


# -- the head ---------------------------------------------------------------------------------------------

def test_every_stage_has_the_spec_shape():
    model = tiny()
    video, audio = inputs()
    with torch.no_grad():
        s = model.stages(video, audio)
        pyramid = model.refiner.pyramid(s.fused)
    assert s.video_tokens.shape == (2, 32, 32) and s.audio_tokens.shape == (2, 8, 32)
    assert s.video.shape == s.audio.shape == s.video_icmi.shape == s.audio_icmi.shape == (2, 4, 32)
    assert s.fused.shape == (2, 8, 32)  # 2L
    assert [tuple(p.shape) for p in pyramid] == [(2, 32, 4), (2, 32, 2), (2, 32, 1)]
    assert s.feature.shape == (2, 32) and s.logits.shape == (2, 2)
    assert torch.equal(model(video, audio), s.logits)
    assert sum(p.numel() for p in model.parameters()) == 174_506  # the spec asks for under 1M


def test_the_score_is_a_probability_and_deterministic_in_eval():
    model = tiny()
    video, audio = inputs(batch=3)
    with torch.no_grad():
        first, second = model.probability(video, audio), model.probability(video, audio)
    assert first.shape == (3,) and torch.equal(first, second)
    assert bool(((first >= 0) & (first <= 1)).all())
    assert torch.allclose(first, fake_probability(model(video, audio)))
    model.train()
    logits = model(video, audio)  # BatchNorm in batch mode; gradients reach both encoders
    logits.sum().backward()
    assert model.video_encoder.blocks[0].fourth_attn.q.weight.grad.abs().sum() > 0
    assert model.audio_encoder.lg_region_tokens.grad.abs().sum() > 0


def test_icmi_updates_both_modalities_from_the_layer_input():
    model = tiny()
    layer = model.icmi[0]
    v, a = torch.randn(2, 4, 32), torch.randn(2, 4, 32)
    with torch.no_grad():
        new_v, new_a = layer(v, a)
        assert torch.allclose(new_a, layer.audio(a, v)) and torch.allclose(new_v, layer.video(v, a))
    assert layer.video.gate_in.weight.shape == (32, 64) and layer.video.gate_out.weight.shape == (32, 32)
    assert layer.video.attn is not layer.audio.attn


def test_the_state_dict_round_trips(tmp_path):
    source, target = tiny(seed=0, lgcf_embed="modality+sinusoid"), tiny(seed=1, lgcf_embed="modality+sinusoid")
    video, audio = inputs()
    source.train()
    with torch.no_grad():
        source(video, audio)  # BatchNorm running statistics move off their defaults
    source.eval()
    path = tmp_path / "hola.pt"
    torch.save(source.state_dict(), path)
    target.load_state_dict(torch.load(path, weights_only=True), strict=True)
    with torch.no_grad():
        assert torch.equal(target(video, audio), source(video, audio))
    assert not any(k.endswith("pos_embed") or k.endswith("region_of") for k in source.state_dict())


def head_names(model: HOLA) -> set[str]:
    return {n.split(".")[0] for n, _ in model.named_parameters()} - {"video_encoder", "audio_encoder"}


@pytest.mark.parametrize("switches, absent, present", [
    ({}, set(), {"icmi", "lgcf", "refiner"}),
    ({"use_icmi": False}, {"icmi"}, {"lgcf", "refiner"}),
    ({"use_lgcf": False}, {"lgcf"}, {"icmi", "refiner"}),
    ({"use_refiner": False}, {"refiner"}, {"icmi", "lgcf", "pool"}),
    ({"use_icmi": False, "use_lgcf": False, "use_refiner": False}, {"icmi", "lgcf", "refiner", "pool"},
     {"baseline_norm"}),
])
def test_each_ablation_switch_builds_runs_and_removes_its_modules(switches, absent, present):
    model = tiny(**switches)
    names = head_names(model)
    assert not names & absent and present <= names
    assert {"video_proj", "audio_proj", "classifier"} <= names
    video, audio = inputs()
    with torch.no_grad():
        s = model.stages(video, audio)
    assert s.logits.shape == (2, 2)
    if switches.get("use_icmi") is False:
        assert torch.equal(s.video_icmi, s.video) and torch.equal(s.audio_icmi, s.audio)
    if switches.get("use_lgcf") is False:
        assert torch.equal(s.fused, torch.cat([s.video_icmi, s.audio_icmi], dim=1))
    if len(switches) == 3:  # the baseline: mean per modality, concat, LayerNorm, Linear(2C -> 2)
        assert model.classifier.weight.shape == (2, 64) and s.feature.shape == (2, 64)
        expected = model.baseline_norm(torch.cat([s.video.mean(1), s.audio.mean(1)], dim=-1))
        assert torch.allclose(s.feature, expected)
    elif switches.get("use_refiner") is False:
        assert torch.allclose(s.feature, model.pool.norm(model.pool.proj(s.fused.mean(1))))


def test_lgcf_embeddings_add_their_parameters_only_when_asked():
    assert tiny().lgcf.modality_embed is None and tiny().lgcf.pos_embed is None
    model = tiny(lgcf_embed="modality")
    assert model.lgcf.modality_embed.shape == (2, 32) and model.lgcf.pos_embed is None
    model = tiny(lgcf_embed="modality+sinusoid")
    assert torch.equal(model.lgcf.pos_embed, sinusoid_table(4, 32))
    with torch.no_grad():
        assert model(*inputs()).shape == (2, 2)


def test_the_mfcc32_variant_runs_on_mfcc_segments_with_a_fresh_audio_encoder():
    model = tiny(audio_frontend="mfcc32")
    assert isinstance(model.audio_encoder, MFCCEncoder) and len(model.audio_encoder.blocks) == 1
    assert not any("lg_region_tokens" in n for n, _ in model.audio_encoder.named_parameters())
    assert model.audio_proj.resize.weight.shape == (4, 16)  # L_a = 16 segments -> L
    video, audio = inputs(model.cfg)
    assert audio.shape == (2, 16, 32)
    with torch.no_grad():
        s = model.stages(video, audio)
    assert s.audio_tokens.shape == (2, 16, 32) and s.logits.shape == (2, 2)
    with pytest.raises(ValueError, match="mfcc32 audio expects"):
        model(video, torch.zeros(2, 1, 32, 16))
    assert {model.layer_id(n) for n, _ in model.named_parameters() if n.startswith("audio_encoder.")} == {3}


def test_layer_ids_cover_every_parameter_for_layer_decay():
    model = tiny()
    depth = model.encoder_depth
    assert depth == 2 and model.num_layers == depth + 1  # the heads' id: decay ** (num_layers - id) is 1 there
    ids = {name: model.layer_id(name) for name, _ in model.named_parameters()}
    assert set(ids.values()) == set(range(model.num_layers + 1))
    for name, layer in ids.items():
        encoder, _, rest = name.partition(".")
        if encoder in ("video_encoder", "audio_encoder") and rest.startswith(("patch_embed.", "lg_region_tokens")):
            assert layer == 0, name
        elif encoder in ("video_encoder", "audio_encoder") and rest.startswith("blocks."):
            assert layer == int(rest.split(".")[1]) + 1, name
        else:
            assert layer == depth + 1, name  # encoders' final norms and every head module
    assert [n for n, i in ids.items() if i == 0] == [
        f"{encoder}.{name}" for encoder in ("video_encoder", "audio_encoder")
        for name in ("lg_region_tokens", "patch_embed.proj.weight", "patch_embed.proj.bias")]


def test_config_validation_and_dict_round_trip():
    cfg = HOLAConfig.tiny(use_lgcf=False, lgcf_embed="modality")
    assert HOLAConfig.from_dict(cfg.as_dict()) == cfg
    for bad, message in ((dict(lgcf_embed="learned"), "lgcf_embed"), (dict(audio_frontend="wav2vec"), "audio_frontend"),
                         (dict(conv_kernel=4), "odd"), (dict(icmi_heads=3), "icmi_heads"),
                         (dict(audio=EncoderConfig.audio_tiny(dim=16, heads=2)), "width"),
                         (dict(length=0), "length")):
        with pytest.raises(ValueError, match=message):
            HOLAConfig.tiny(**bad)


def test_full_size_parameter_counts_and_shapes_on_the_meta_device():
    """Spec section 2.5 estimates ~127M backbone + ~22M head; these are the built model's numbers."""
    with torch.device("meta"):
        model = HOLA(HOLAConfig()).eval()
        s = model.stages(torch.empty(2, 3, 16, 160, 160), torch.empty(2, 1, 256, 128))
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(model.video_encoder) == 63_865_344
    assert count(model.audio_encoder) == 63_209_984
    assert count(model) == 149_679_650  # head: 22_604_322
    assert count(model) - count(model.video_encoder) - count(model.audio_encoder) == 22_604_322
    assert model.num_layers == 11
    assert (s.video_tokens.shape, s.audio_tokens.shape) == ((2, 800, 512), (2, 128, 512))
    assert s.video.shape == s.audio.shape == (2, 16, 512)
    assert s.fused.shape == (2, 32, 512) and s.feature.shape == (2, 512) and s.logits.shape == (2, 2)
    assert model.video_encoder.lg_region_tokens.shape == (8, 512) and model.audio_encoder.num_regions == 8
    with torch.device("meta"):
        mfcc = HOLA(HOLAConfig(audio_frontend="mfcc32"))
    assert count(mfcc.audio_encoder) == 12_625_408  # 4 layers of width 512, 8 heads
