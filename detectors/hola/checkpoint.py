"""AVF-MAE++ pre-training checkpoints (HOLA's stage-1 weights; ../shared/specs/HOLA.md section 2.1).

Upstream's run_mae_pretraining_av.py saves {"model": state, "optimizer", "epoch", "scaler", "args"}
with the video encoder under `encoder.*` and the audio encoder under `encoder_audio.*`; `module.`
(DataParallel) and `_orig_mod.` (torch.compile) prefixes may wrap them. `load_avfmae` reads such a
file safely (avbench.weights: safetensors, or torch.load(weights_only=True) unless trusted; the
argparse Namespace upstream stores under "args" is admitted as data), loads both encoders strictly
and reports what it left out: the pre-training-only parts (`encoder_fusion.*`, `decoder*`,
`encoder_to_decoder*`, `mask_token*`) and any other prefix. `encoder_state` writes the same layout,
so a pre-training run of ours saves a file `load_avfmae` reads back.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from avbench.io import sha256_file_cached
from avbench.weights import CheckpointError, read_state_dict

from .backbone import LGEncoder

PREFIXES = {"video": "encoder.", "audio": "encoder_audio."}
PRETRAINING_ONLY = ("encoder_fusion.", "decoder", "encoder_to_decoder", "mask_token")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass(frozen=True)
class LoadReport:
    """What `load_avfmae` read: the file, its sha256, the tensors loaded into each encoder, and every
    key it ignored (sorted), those of the known pre-training-only parts and any other."""

    path: str
    sha256: str
    total_keys: int
    video_keys: int
    audio_keys: int
    ignored: tuple[str, ...]

    @property
    def ignored_unknown(self) -> tuple[str, ...]:
        """Ignored keys outside the known pre-training-only parts (worth a look)."""
        return tuple(k for k in self.ignored if not k.startswith(PRETRAINING_ONLY))

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ignored"] = list(self.ignored)
        return d


def _unwrap_key(key: str) -> str:
    """Without leading `module.` / `_orig_mod.` wrappers and any `_orig_mod.` inside (a compiled
    submodule)."""
    while key.startswith(WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key.replace("._orig_mod.", ".")


def read_avfmae(path: Path | str, *, trusted: bool = False) -> dict[str, Tensor]:
    """The file's tensors with wrapper prefixes removed (a key present twice after that is an error)."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        raw = read_state_dict(path, trusted=trusted, what="AVF-MAE++ checkpoint",
                              where="pass the local path of an AVF-MAE++ pre-training checkpoint (its 'model' "
                                    "holds encoder.* and encoder_audio.*)")
    state: dict[str, Tensor] = {}
    for key, value in raw.items():
        name = _unwrap_key(key)
        if name in state:
            raise CheckpointError(f"{path}: holds '{name}' more than once once module./_orig_mod. are removed")
        state[name] = value
    return state


def _check(module: nn.Module, part: dict[str, Tensor], prefix: str) -> list[str]:
    expected = module.state_dict()
    problems = [f"missing {prefix}{k}" for k in sorted(set(expected) - set(part))]
    problems += [f"unexpected {prefix}{k}" for k in sorted(set(part) - set(expected))]
    problems += [f"shape of {prefix}{k}: {tuple(part[k].shape)} in the file, {tuple(v.shape)} in the model"
                 for k, v in expected.items() if k in part and part[k].shape != v.shape]
    return problems


def load_avfmae(video: LGEncoder, audio: nn.Module | None, path: Path | str, *, trusted: bool = False) -> LoadReport:
    """Load an AVF-MAE++ checkpoint's `encoder.*` into `video` and `encoder_audio.*` into `audio`,
    strictly: any missing, unexpected or mis-shaped encoder key is a CheckpointError that lists them
    all and names the file; nothing is loaded then. Floating tensors are cast to the encoders' dtype.
    An `audio` that is None or not an LGEncoder (mfcc32's fresh MFCCEncoder, not weight-compatible)
    is left as it is: the file's `encoder_audio.*` then count as ignored and `audio_keys` is 0."""
    state = read_avfmae(path, trusted=trusted)
    targets = {"video": video, "audio": audio if isinstance(audio, LGEncoder) else None}
    parts = {name: {k[len(PREFIXES[name]):]: v for k, v in state.items() if k.startswith(PREFIXES[name])}
             for name, module in targets.items() if module is not None}
    if not parts["video"]:
        prefixes = sorted({k.split(".", 1)[0] for k in state})
        raise CheckpointError(f"{path}: holds no 'encoder.*' keys; expected an AVF-MAE++ pre-training checkpoint "
                              f"with the video encoder under 'encoder.' and the audio encoder under "
                              f"'encoder_audio.' (found top-level names: {', '.join(prefixes[:12])})")
    problems = [problem for name, part in parts.items() for problem in _check(targets[name], part, PREFIXES[name])]
    if problems:
        raise CheckpointError(f"{path} does not fit the AVF-MAE++ encoders ({len(problems)} problems): "
                              + "; ".join(problems))
    for name, part in parts.items():
        expected = targets[name].state_dict()
        targets[name].load_state_dict({k: v.to(expected[k].dtype) if v.is_floating_point() else v
                                       for k, v in part.items()}, strict=True)
    loaded = tuple(PREFIXES[name] for name in parts)
    ignored = tuple(sorted(k for k in state if not k.startswith(loaded)))
    return LoadReport(path=str(path), sha256=sha256_file_cached(path), total_keys=len(state),
                      video_keys=len(parts["video"]), audio_keys=len(parts.get("audio", {})), ignored=ignored)


def encoder_state(video: LGEncoder, audio: LGEncoder) -> dict[str, Tensor]:
    """The two encoders' state in upstream's layout (`encoder.*`, `encoder_audio.*`), detached and
    contiguous: ready for safetensors.torch.save_file, and read back by `load_avfmae`."""
    return {prefix + k: v.detach().contiguous() for module, prefix in ((video, PREFIXES["video"]),
                                                                       (audio, PREFIXES["audio"]))
            for k, v in module.state_dict().items()}
