"""Reading weights files safely and loading them strictly: the rules every neural family follows.

Nothing downloads. A .pt/.pth file is read with torch.load(weights_only=True), so it cannot run
code unless the caller says it is trusted; safetensors files never can. The usual wrappers
({"model": ...}, {"state_dict": ...}, {"model_state": ...}) are unwrapped and a DataParallel
`module.` prefix removed. Loading is strict: a missing or unexpected key or a shape mismatch is
an error naming the keys and the file (loaders with strict=False silently leave layers random).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import Tensor, nn

from avbench.io import sha256_file_cached

WRAPPERS = ("state_dict", "model", "model_state_dict", "model_state", "module")
SHOWN = 8  # keys named per problem in an error message


class CheckpointError(ValueError):
    """A weights file that does not fit the model it is loaded into."""


def read_state_dict(path: Path | str, *, sha256: str | None = None, trusted: bool = False, what: str = "weights",
                    where: str = "pass the local path of the file") -> dict[str, Tensor]:
    """The tensors of a weights file, wrappers unwrapped and a `module.` prefix removed. `what` and
    `where` name the file and how to obtain it when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}; {where}")
    if sha256 is not None and (found := sha256_file_cached(path)) != sha256.lower():
        raise CheckpointError(f"{path}: sha256 {found} does not match the expected {sha256}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj = load_file(str(path))
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=not trusted)
        except pickle.UnpicklingError as exc:
            raise CheckpointError(f"{path}: holds pickled objects other than tensors, which can run code when "
                                  f"loaded; refused unless trusted (trusted=True here, -o trusted_pickle=true for "
                                  f"avbench run; only for a file from a source you trust): {exc}") from exc
    while isinstance(obj, dict) and not _is_state_dict(obj):
        wrapper = next((k for k in WRAPPERS if isinstance(obj.get(k), dict)), None)
        if wrapper is None:
            raise CheckpointError(f"{path}: no state dict found; top-level keys: {sorted(map(str, obj))[:SHOWN]}")
        obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return strip_module(obj, path)


def _is_state_dict(obj: dict) -> bool:
    return bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def strip_module(state: dict[str, Tensor], path: Path | str) -> dict[str, Tensor]:
    """Keys without DataParallel's `module.` prefix; a file holding a key with and without it is refused."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        name = key.removeprefix("module.")
        if name in out:
            raise CheckpointError(f"{path}: holds both '{name}' and 'module.{name}'")
        out[name] = value
    return out


def names(keys: list[str]) -> str:
    """The first SHOWN keys, and how many more."""
    more = f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def load_strict(model: nn.Module, state: dict[str, Tensor], source: str, *, assign: bool = False,
                describe: str = "") -> None:
    """Load `state` into `model`, refusing any missing or unexpected key or shape mismatch; floating
    tensors are cast to the model's dtype. assign=True adopts the tensors (for a model built on meta).
    `describe` says which model in the error (its size, say)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [f"{k} {tuple(state[k].shape)} (model {tuple(expected[k].shape)})"
                  for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = [f"{len(keys)} {what}: {names(keys)}" for what, keys in
                (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)) if keys]
    if problems:
        raise CheckpointError(f"{source} does not fit {type(model).__name__}" + (f" ({describe})" if describe else "")
                              + ": " + "; ".join(problems))
    model.load_state_dict({k: v.to(expected[k].dtype) if v.is_floating_point() else v for k, v in state.items()},
                          strict=True, assign=assign)


def safetensors_bytes(state: dict[str, Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """safetensors.torch.save with its JSON header in sorted order. The library writes the metadata
    from a hash map whose order changes from one call to the next, so the same tensors would give
    other bytes, and another sha256, each time they are saved."""
    import json

    from safetensors.torch import save

    raw = save(state, metadata=metadata)
    length = int.from_bytes(raw[:8], "little")
    header = json.dumps(json.loads(raw[8:8 + length]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the data stays 8-byte aligned, as the library keeps it
    return len(header).to_bytes(8, "little") + header + raw[8 + length:]
