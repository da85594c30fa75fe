"""HAVIC weights: the authors' checkpoints, strict loading, and initialisation from AudioMAE and MARLIN.

Nothing downloads. The authors' checkpoints (Hugging Face, JielunPeng/HAVIC) are plain state dicts
saved from `nn.DataParallel` (keys prefixed `module.`); `read_state_dict` also accepts the usual
wrappers ({"model": ...}, {"state_dict": ...}) and safetensors files, and loads .pt/.pth files with
torch.load(weights_only=True), so a checkpoint cannot run code unless the caller passes trusted=True.
Loading is strict: a missing or unexpected key or a shape mismatch is an error naming the keys and
the file (the authors' own loader used strict=False, which can silently leave layers random).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from avbench import weights
from avbench.weights import CheckpointError, names

from .model import HAVIC, HAVICConfig, HAVICPretrain

#: Where the authors publish their checkpoints (named when a file is missing).
WHERE = "download the checkpoint (the authors publish theirs on Hugging Face as JielunPeng/HAVIC) and pass its local path"


def read_state_dict(path: Path | str, *, sha256: str | None = None, trusted: bool = False) -> dict[str, Tensor]:
    """The tensors of a HAVIC weights file (avbench.weights.read_state_dict)."""
    return weights.read_state_dict(path, sha256=sha256, trusted=trusted, what="HAVIC weights", where=WHERE)


def load_strict(model: nn.Module, state: dict[str, Tensor], source: str, *, assign: bool = False) -> None:
    """avbench.weights.load_strict, the error naming the model's width and depth."""
    weights.load_strict(model, state, source, assign=assign, describe=f"{model.cfg.dim} wide, {model.cfg.depth} blocks")


def _load(cls: type[nn.Module], path: Path | str, sha256: str | None, config: HAVICConfig | None,
          trusted: bool) -> nn.Module:
    state = read_state_dict(path, sha256=sha256, trusted=trusted)
    with torch.device("meta"):  # no time spent on a random initialisation the file overwrites
        model = cls(config or HAVICConfig.base())
    load_strict(model, state, str(path), assign=True)
    return model.eval()


def load_official(path: Path | str, *, sha256: str | None = None, config: HAVICConfig | None = None,
                  trusted: bool = False) -> HAVIC:
    """The fine-tuning (detection) model from a checkpoint file, in eval mode.

    forward(audio (B, 1024, 128), video (B, 3, 16, 224, 224)) -> main logits (B, 1); `heads` and
    `visual_logits` give the other heads. `config` defaults to the paper's base geometry.
    """
    return _load(HAVIC, path, sha256, config, trusted)


def load_pretraining(path: Path | str, *, sha256: str | None = None, config: HAVICConfig | None = None,
                     trusted: bool = False) -> HAVICPretrain:
    """The pre-training model (decoders included) from a checkpoint file, in eval mode."""
    return _load(HAVICPretrain, path, sha256, config, trusted)


def transfer_pretrained(pretrained: HAVICPretrain, model: HAVIC) -> list[str]:
    """Start fine-tuning from pre-training, as the authors do: copy both encoders and the interaction
    module; the aggregation networks and heads keep their initialisation. Returns the keys copied."""
    source = pretrained.state_dict()
    shared = [k for k in model.state_dict() if k.split(".", 1)[0] in
              ("audio_encoder", "visual_encoder", "AudioVisualInteractionModule")]
    model.load_state_dict({k: source[k] for k in shared}, strict=False)
    return shared


# -- AudioMAE and MARLIN ---------------------------------------------------------------------------------

def _assign(model: nn.Module, values: dict[str, Tensor], source: str) -> list[str]:
    """Copy `values` into parameters of `model` by name, checking that every name exists and fits."""
    target = model.state_dict()
    unknown = sorted(k for k in values if k not in target)
    mismatched = [f"{k} {tuple(v.shape)} (model {tuple(target[k].shape)})" for k, v in values.items()
                  if k in target and v.shape != target[k].shape]
    if unknown or mismatched:
        raise CheckpointError(f"{source} does not fit this HAVIC: " + "; ".join(
            f"{len(keys)} {what}: {names(keys)}" for what, keys in
            (("keys the model lacks", unknown), ("shape mismatches", mismatched)) if keys))
    model.load_state_dict(values, strict=False)
    return sorted(values)


def _require(state: dict[str, Tensor], keys: list[str], source: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(f"{source}: {len(missing)} keys expected in this checkpoint are missing: {names(missing)}")


def init_from_audiomae(model: HAVIC | HAVICPretrain, path: Path | str, *, sha256: str | None = None,
                       trusted: bool = False) -> list[str]:
    """Initialise the audio encoder from an AudioMAE ViT-B checkpoint (AudioSet pre-training); returns
    the keys set.

    AudioMAE lays the spectrogram out as (time, mel) and numbers patches time-major; HAVIC uses (mel,
    time), so the patch kernel is transposed and the positional table reordered (its CLS row dropped).
    AudioMAE's full q/k/v bias becomes HAVIC's q and v biases: a key bias adds the same amount to all of a
    query's logits and cancels in the softmax. AudioMAE's CLS token and its 512-wide decoder have no
    counterpart (HAVIC's audio decoder is 384 wide), so they are not used; the segment CLS tokens, the
    modality embedding and the decoder keep their initialisation.
    """
    cfg = model.cfg
    state = read_state_dict(path, sha256=sha256, trusted=trusted)
    blocks = range(cfg.depth)
    _require(state, ["patch_embed.proj.weight", "patch_embed.proj.bias", "pos_embed", "norm.weight", "norm.bias"]
             + [f"blocks.{i}.attn.qkv.bias" for i in blocks], str(path))
    rows, cols = cfg.audio_grid
    values = {
        "audio_encoder.patch_embed.proj.weight": state["patch_embed.proj.weight"].transpose(-1, -2),
        "audio_encoder.patch_embed.proj.bias": state["patch_embed.proj.bias"],
        "audio_encoder.norm.weight": state["norm.weight"],
        "audio_encoder.norm.bias": state["norm.bias"],
    }
    pos = state["pos_embed"][:, 1:]
    if pos.shape[1] != rows * cols:
        raise CheckpointError(f"{path}: pos_embed has {pos.shape[1]} patch positions; this HAVIC has {rows * cols}")
    values["audio_encoder.pos_embed"] = pos.reshape(1, cols, rows, -1).transpose(1, 2).reshape(1, rows * cols, -1)
    for i in blocks:
        ours, theirs = f"audio_encoder.blocks.{i}.", f"blocks.{i}."
        q_bias, _, v_bias = state[theirs + "attn.qkv.bias"].chunk(3)
        values[ours + "attn.q_bias"], values[ours + "attn.v_bias"] = q_bias, v_bias
        for name in ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.proj.weight", "attn.proj.bias",
                     "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"):
            _require(state, [theirs + name], str(path))
            values[ours + name] = state[theirs + name]
    return _assign(model, values, str(path))


def init_from_marlin(model: HAVIC | HAVICPretrain, path: Path | str, *, sha256: str | None = None,
                     trusted: bool = False) -> list[str]:
    """Initialise the visual encoder (and the visual decoder of a pre-training model) from a MARLIN
    ViT-B checkpoint (encoder-only or full); returns the keys set.

    MARLIN's encoder names are HAVIC's; its decoder (384 wide, 4 blocks) fills HAVIC's visual decoder
    blocks, norm, mask token, positional table and enc_dec_proj, and its single prediction head is
    copied into all of HAVIC's per-layer heads. The segment CLS tokens and the hierarchical attention
    modules keep their initialisation.
    """
    state = read_state_dict(path, sha256=sha256, trusted=trusted)
    encoder = {f"visual_{k}": v for k, v in state.items() if k.startswith("encoder.")}
    _require(state, ["encoder.patch_embedding.projection.weight", "encoder.norm.weight"], str(path))
    values = dict(encoder)
    if isinstance(model, HAVICPretrain) and any(k.startswith("decoder.") for k in state):
        _require(state, ["enc_dec_proj.weight", "decoder.head.weight", "decoder.head.bias"], str(path))
        values["visual_decoder.enc_dec_proj.weight"] = state["enc_dec_proj.weight"]
        for key, value in state.items():
            if key.startswith("decoder.") and not key.startswith("decoder.head."):
                values["visual_" + key] = value
        for head in ["head"] + [f"head_{i}" for i in range(1, len(model.cfg.taps))]:
            values[f"visual_decoder.{head}.weight"] = state["decoder.head.weight"]
            values[f"visual_decoder.{head}.bias"] = state["decoder.head.bias"]
    return _assign(model, values, str(path))
