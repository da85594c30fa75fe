"""Reading AV-HuBERT weights: plain state dicts strictly, and the authors' fairseq checkpoints without fairseq.

The authors publish full fairseq training states (`model`, `cfg`, `task_state` with pickled fairseq
`Dictionary` objects, ...). `torch.load(weights_only=True)` refuses them, and unpickling them
normally needs fairseq. `read_fairseq_checkpoint` unpickles them with an allow-list: torch's tensor
rebuilding, containers, numpy arrays and argparse namespaces become real objects, every other global
an inert stand-in that runs no code. `convert_fairseq_checkpoint` keeps the AVHubertModel tensors
(prefix `encoder.w2v_model.` stripped in fine-tuned seq2seq checkpoints, the decoder dropped) and
writes them once as safetensors, which `load` then reads without any pickle.
"""

from __future__ import annotations

import json
import pickle
import types
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path

import torch

from avbench.detectors.avhubert.model import AVHubert, AVHubertConfig
from avbench.io import atomic_write, sha256_file_cached

FORMAT = "avbench-avhubert"
#: the AVHubertModel inside a fine-tuned AVHubertSeq2Seq (HubertEncoderWrapper.w2v_model)
SEQ2SEQ_PREFIX = "encoder.w2v_model."
CONVERT_HINT = ("convert it once with `avbench avhubert convert SRC DST.safetensors` (reads fairseq checkpoints "
                "without fairseq)")


# ---------------------------------------------------------------------------------------------------
# fairseq checkpoints without fairseq

class _Inert:
    """Stand-in for any class or function the allow-list does not name: records what the pickle
    hands it and does nothing else, so no foreign code runs."""

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.__dict__["pickled_args"] = args
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.__dict__["pickled_state"] = state

    def __setitem__(self, key, value):        # subclasses of dict pickle their items this way
        self.__dict__.setdefault("pickled_items", {})[key] = value

    def append(self, value):                  # ... and subclasses of list this way
        self.__dict__.setdefault("pickled_list", []).append(value)

    def __repr__(self):
        return f"<inert {type(self).__module__}.{type(self).__qualname__}>"


_ALLOWED = {
    ("collections", "OrderedDict"), ("collections", "defaultdict"), ("argparse", "Namespace"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"), ("builtins", "complex"),
    ("builtins", "bytearray"), ("builtins", "object"), ("copyreg", "_reconstructor"), ("_codecs", "encode"),
    ("torch", "Size"), ("torch", "device"),
    ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
}


def _allowed(module: str, name: str) -> bool:
    if (module, name) in _ALLOWED:
        return True
    if module == "torch":                       # dtypes pickle as torch.float32 etc.
        return isinstance(getattr(torch, name, None), torch.dtype)
    return module == "numpy.dtypes" and name.endswith("DType")


class _RestrictedUnpickler(pickle.Unpickler):
    _stand_ins: dict[tuple[str, str], type] = {}

    def find_class(self, module, name):
        if _allowed(module, name):
            return super().find_class(module, name)
        key = (module, name)
        if key not in self._stand_ins:
            self._stand_ins[key] = type(name, (_Inert,), {"__module__": module, "__qualname__": name})
        return self._stand_ins[key]


def _restricted_pickle_module() -> types.ModuleType:
    """The `pickle_module` torch.load needs: an Unpickler class and a load function."""
    module = types.ModuleType("avbench_restricted_pickle")
    module.Unpickler = _RestrictedUnpickler
    module.load = lambda fh, **kwargs: _RestrictedUnpickler(fh, **kwargs).load()
    return module


def read_fairseq_checkpoint(path: Path | str) -> dict:
    """The whole pickled training state of a fairseq checkpoint, tensors on the CPU; objects of
    packages that are not allow-listed (fairseq, omegaconf, sentencepiece, ...) come back inert.

    Nothing of the file's own code runs, yet a pickle still drives numpy and torch constructors:
    read only checkpoints from a source you trust.
    """
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle_module())


# ---------------------------------------------------------------------------------------------------
# state dicts

def encoder_state_dict(state: Mapping, source: Path | str = "<state dict>") -> dict[str, torch.Tensor]:
    """The AVHubertModel tensors under their authors' names from a plain state dict or a checkpoint
    dict with a "model" entry; seq2seq keys lose `encoder.w2v_model.` and `decoder.*` is dropped."""
    if isinstance(state.get("model"), Mapping):
        state = state["model"]
    if any(key.startswith(SEQ2SEQ_PREFIX) for key in state):
        state = {key.removeprefix(SEQ2SEQ_PREFIX): value for key, value in state.items()
                 if not key.startswith("decoder.")}
    not_tensors = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"{source}: not a state dict: entries {not_tensors[:5]} are not tensors")
    return dict(state)


def infer_config(state_dict: Mapping[str, torch.Tensor], **overrides) -> AVHubertConfig:
    """The configuration the tensors imply. heads = dim / 64 as in the released Base and Large models;
    anything else (or any other field) comes from `overrides`."""
    sd = state_dict
    required = ["post_extract_proj.weight", "feature_extractor_audio.proj.weight", "encoder.pos_conv.0.weight_v",
                "encoder.layers.0.fc1.weight"] + [
        f"feature_extractor_video.resnet.trunk.layer{i}.0.conv1.weight" for i in range(1, 5)]
    missing = [key for key in required if key not in sd]
    if missing:
        raise ValueError(f"not an AV-HuBERT state dict: missing {missing}")
    dim = sd["post_extract_proj.weight"].shape[0]
    pos_v = sd["encoder.pos_conv.0.weight_v"]
    inferred = dict(
        dim=dim,
        layers=1 + max(int(key.split(".")[2]) for key in sd if key.startswith("encoder.layers.")),
        ffn=sd["encoder.layers.0.fc1.weight"].shape[0],
        audio_feat_dim=sd["feature_extractor_audio.proj.weight"].shape[1],
        conv_pos=pos_v.shape[2],
        conv_pos_groups=dim // pos_v.shape[1],
        resnet_widths=tuple(sd[f"feature_extractor_video.resnet.trunk.layer{i}.0.conv1.weight"].shape[0]
                            for i in range(1, 5)),
        mask_emb_dim=sd["mask_emb"].shape[0] if "mask_emb" in sd else None,
        label_rows=sd["label_embs_concat"].shape[0] if "label_embs_concat" in sd else None,
        label_dim=sd["label_embs_concat"].shape[1] if "label_embs_concat" in sd else None,
        final_dim=sd["final_proj.weight"].shape[0] if "final_proj.weight" in sd else None,
    )
    unknown = set(overrides) - {f.name for f in fields(AVHubertConfig)}
    if unknown:
        raise ValueError(f"unknown AVHubertConfig field(s) {sorted(unknown)}")
    if "heads" not in overrides:
        if dim % 64:
            raise ValueError(f"cannot infer heads: dim {dim} is not a multiple of 64 (released models use "
                             f"dim / 64 heads); pass heads=...")
        inferred["heads"] = dim // 64
    return AVHubertConfig(**{**inferred, **overrides})


def check_state_dict(model: AVHubert, state_dict: Mapping[str, torch.Tensor], source: Path | str) -> None:
    """What strict loading checks, with errors that name the file, the keys and the shapes
    (works on a model built on the meta device)."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    if missing or unexpected:
        raise ValueError(f"{source}: does not match the AV-HuBERT {_sizes(model.config)} architecture: "
                         f"missing keys {missing}, unexpected keys {unexpected}")
    for key, tensor in expected.items():
        if state_dict[key].shape != tensor.shape:
            raise ValueError(f"{source}: {key} has shape {list(state_dict[key].shape)}, the model expects "
                             f"{list(tensor.shape)}")


def _sizes(config: AVHubertConfig) -> str:
    return f"dim {config.dim} / {config.layers} layers / {config.heads} heads / ffn {config.ffn}"


def _read(path: Path, trusted: bool) -> tuple[Mapping, dict[str, str]]:
    """What a weights file holds, and its safetensors metadata (empty for .pt)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as fh:
            return {key: fh.get_tensor(key) for key in fh.keys()}, fh.metadata() or {}
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trusted:
            reason = str(exc).strip().splitlines()[0]
            raise ValueError(f"{path}: torch.load(weights_only=True) refuses it ({reason}); {CONVERT_HINT}, "
                             f"or pass trusted=True if you trust the file") from exc
        state = read_fairseq_checkpoint(path)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state dict or a checkpoint dict, found {type(state).__name__}")
    return state, {}


def load(path: Path | str, *, sha256: str | None = None, trusted: bool = False, **overrides) -> AVHubert:
    """An AVHubert in eval mode with the weights of `path`, loaded strictly.

    `path`: .safetensors (written by `convert_fairseq_checkpoint`, or any plain state dict), or a
    .pt/.pth that torch.load(weights_only=True) accepts (a plain state dict, or a dict with a "model"
    entry). trusted=True also reads full fairseq checkpoints (with `read_fairseq_checkpoint`).
    `overrides` are AVHubertConfig fields the tensors do not determine (heads).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"AV-HuBERT weights not found at {path}: download the authors' checkpoint "
                                f"(facebookresearch/av_hubert, e.g. self_large_vox_433h.pt), {CONVERT_HINT}, "
                                f"and pass that path")
    if sha256 is not None:
        found = sha256_file_cached(path)
        if found != sha256.lower():
            raise ValueError(f"{path}: sha256 {found} does not match the expected {sha256}")
    state, metadata = _read(path, trusted)
    state_dict = encoder_state_dict(state, path)
    if metadata.get("format") == FORMAT:     # the converter records heads read from the fairseq config
        overrides = {"heads": json.loads(metadata["config"])["heads"], **overrides}
    try:
        config = infer_config(state_dict, **overrides)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    with torch.device("meta"):           # no initialisation work: every tensor comes from the file
        model = AVHubert(config)
    check_state_dict(model, state_dict, path)
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.float().eval()


# ---------------------------------------------------------------------------------------------------
# conversion

def _cfg_heads(state: Mapping, seq2seq: bool) -> int | None:
    """encoder_attention_heads from the checkpoint's stored config, when it is stored as plain values."""
    node = state.get("cfg")
    for key in ("model", "w2v_args", "model") if seq2seq else ("model",):
        node = node.get(key) if isinstance(node, Mapping) else getattr(node, key, None)
    heads = node.get("encoder_attention_heads") if isinstance(node, Mapping) else None
    return heads if isinstance(heads, int) else None


def convert_fairseq_checkpoint(src: Path | str, dst: Path | str) -> Path:
    """A fairseq AV-HuBERT checkpoint (pre-training, or fine-tuned seq2seq) -> encoder-only safetensors.

    Keeps every AVHubertModel tensor under the authors' names (pre-training-only ones included when
    present), checks them against the inferred architecture, and records the config and the source's
    sha256 in the metadata. Does not import fairseq.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"fairseq checkpoint not found: {src}")
    state = read_fairseq_checkpoint(src)
    if not isinstance(state, Mapping):
        raise ValueError(f"{src}: expected a fairseq checkpoint dict, found {type(state).__name__}")
    model_state = state["model"] if isinstance(state.get("model"), Mapping) else state
    seq2seq = any(key.startswith(SEQ2SEQ_PREFIX) for key in model_state)
    state_dict = {key: value.contiguous() for key, value in encoder_state_dict(state, src).items()}
    heads = _cfg_heads(state, seq2seq)
    try:
        config = infer_config(state_dict, **({"heads": heads} if heads else {}))
    except ValueError as exc:
        raise ValueError(f"{src}: {exc}") from exc
    with torch.device("meta"):
        check_state_dict(AVHubert(config), state_dict, src)

    from safetensors.torch import save

    metadata = {"format": FORMAT, "config": json.dumps(asdict(config)), "source": src.name,
                "source_sha256": sha256_file_cached(src)}
    with atomic_write(dst, "wb") as fh:
        fh.write(save(state_dict, metadata=metadata))
    return dst
