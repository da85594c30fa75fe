"""FauForensics weights: a checkpoint in the authors' layout, and each encoder from its public file.

No FauForensics checkpoint is public; a model the authors' main.py saves ({"model": state dict,
"epoch", "auc", "acc"}, `module.` prefixed on several GPUs) loads strictly with `load_authors`. Its
auc/acc are numpy scalars, which torch.load(weights_only=True) refuses: such a file needs
trusted=True (-o trusted_pickle=true). The encoders initialise from the files the authors used or
their public stand-ins, read safely (avbench.weights) and loaded strictly, dropping only the parts
the model does not have:
- FAU: an ME-GraphAU ResNet-50 checkpoint ({"state_dict": {"module.backbone.*", "module.global_linear.*",
  "module.head.*"}}; the AU graph `head` is dropped);
- video: pytorchvideo's Kinetics-400 ir-CSN-101 `CSN_32x2_R101.pyth` ({"model_state": {"blocks.*"}};
  the classification head `blocks.5` is dropped);
- audio: openai-whisper's `base.pt` ({"dims", "model_state_dict"}; the decoder is dropped and the
  1500 positional embeddings replaced by the 50 sinusoids of a 1 s window, their first rows).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from avbench import weights

from .model import FauForensics, FauForensicsConfig

#: What each encoder initialises from, where to get it, and the option that takes its path.
SOURCES = {
    "fau": ("the FAU encoder's ME-GraphAU ResNet-50 weights (the authors' au_112_12cls2.pth is not public; "
            "stand-in: the ResNet-50 DISFA or BP4D checkpoints linked from ME-GraphAU's README, "
            "github.com/CVI-SZU/ME-GraphAU)", "fau_weights"),
    "video": ("the video encoder's ir-CSN-101 Kinetics-400 weights, CSN_32x2_R101.pyth (pytorchvideo's model zoo, "
              "github.com/facebookresearch/pytorchvideo, MODEL_ZOO.md)", "video_weights"),
    "audio": ("the audio encoder's Whisper base weights, base.pt (openai-whisper's model URL, "
              "sha256 ed3a0b6b1c0edf879ad9b11b1af5a0e6ab5db9205f891f668f8b0e6c6326e34e)", "audio_weights"),
}


def _read(path: Path | str, part: str, trusted: bool) -> dict[str, Tensor]:
    what, option = SOURCES[part]
    return weights.read_state_dict(path, trusted=trusted, what=what.split(" (")[0],
                                   where=f"get {what} and pass it as -o {option}=PATH")


def load_authors(path: Path | str, *, config: FauForensicsConfig | None = None, trusted: bool = False) -> FauForensics:
    """A FauForensics model from a checkpoint in the authors' layout, loaded strictly; the number of
    classes is read from its joint head unless `config` gives the whole geometry."""
    state = weights.read_state_dict(path, trusted=trusted, what="FauForensics checkpoint",
                                    where="pass a checkpoint in the authors' layout (main.py's {'model': ...})")
    if config is None:
        joint = state.get("mlp_joint.weight")
        config = FauForensicsConfig(classes=int(joint.shape[0]) if joint is not None else 2)
    with torch.device("meta"):  # no time spent on a random initialisation the file overwrites
        model = FauForensics(config)
    weights.load_strict(model, state, str(path), assign=True, describe=f"{config.dim} wide, {config.classes} classes")
    return model


def _load_part(module: nn.Module, state: dict[str, Tensor], dropped: tuple[str, ...], source: str) -> list[str]:
    """Load `state` without the keys under `dropped` into `module` strictly; returns the keys dropped."""
    gone = sorted(k for k in state if k.startswith(dropped))
    weights.load_strict(module, {k: v for k, v in state.items() if not k.startswith(dropped)}, source)
    return gone


def init_fau(model: FauForensics, path: Path | str, *, trusted: bool = False) -> list[str]:
    """The FAU encoder (trunk and global_linear) from an ME-GraphAU checkpoint; its `head.*` is dropped."""
    return _load_part(model.FAUEncoder_cnn, _read(path, "fau", trusted), ("head.",), str(path))


def init_video(model: FauForensics, path: Path | str, *, trusted: bool = False) -> list[str]:
    """The ir-CSN encoder from a pytorchvideo checkpoint; the head (the last block) is dropped."""
    head = f"blocks.{len(model.VEncoder_cnn.blocks)}."
    return _load_part(model.VEncoder_cnn, _read(path, "video", trusted), (head,), str(path))


def init_audio(model: FauForensics, path: Path | str, *, trusted: bool = False) -> list[str]:
    """The Whisper encoder from an openai-whisper checkpoint: its decoder dropped, its positional
    embedding replaced by the model's own sinusoids (the first rows of the same table)."""
    state = _read(path, "audio", trusted)
    own = model.AEncoder.state_dict()["encoder.positional_embedding"]
    table = state.pop("encoder.positional_embedding", None)
    if table is not None and not torch.allclose(table[:len(own)].float(), own, atol=1e-3):
        raise weights.CheckpointError(f"{path}: its positional embedding is not Whisper's sinusoids")
    state["encoder.positional_embedding"] = own
    return _load_part(model.AEncoder, state, ("decoder.",), str(path))
