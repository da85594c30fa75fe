"""Frame features from frozen self-supervised backbones, and a cache of them per clip.

Every backbone turns a clip into one feature vector per 25 Hz frame, a float32 array (T, D), so
probes, anomaly detectors and alignment scores treat audio, visual and audio-visual features alike.
Features are cached per (decoded media, backbone): the cache key is the loader's media key (which
changes with the media files and the decoding settings) and the backbone's fingerprint (name,
layer, weights hash, preprocessing version), so a second run, or a second detector on the same
backbone, trains and scores without decoding or running the backbone again.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Sequence

import numpy as np

from avbench.clips import Clip, ClipError, ClipRef
from avbench.detector import InputSpec
from avbench.io import atomic_write, sha256_file_cached, sha256_json

if TYPE_CHECKING:
    import torch

    from avbench.loader import MediaLoader

#: Features per second, whatever the backbone's own rate: the video frame rate of the datasets.
FEATURE_RATE = 25.0


class Backbone:
    """A frozen pretrained network that turns clips into (T, D) features at FEATURE_RATE.

    weights: a local path (file or folder) or, for Hugging Face backbones, a hub id found in the
    local cache; nothing is downloaded. tiny: a small randomly initialised network built from a
    config with `seed`, for tests and offline demos. random_init: the architecture of `weights`
    with random parameters drawn with `seed` (the paper's random-initialisation control).
    layer: which layer's output to return (None: the backbone's default, usually the last).

    Subclasses set the class attributes and implement `build` and `forward`.
    """

    name: ClassVar[str] = ""
    #: "audio", "video" or "audio-visual": what the features are computed from.
    modality: ClassVar[str] = ""
    #: What the loader must decode for this backbone.
    input_spec: ClassVar[InputSpec] = InputSpec()
    #: Bump when preprocessing or pooling changes the features: it invalidates cached features.
    version: ClassVar[str] = "1"
    #: Where to get real weights, shown when they are missing.
    how_to_get: ClassVar[str] = ""

    def __init__(self, weights: str | None = None, *, layer: int | None = None, tiny: bool = False,
                 random_init: bool = False, seed: int = 0):
        if tiny and weights is not None:
            raise ValueError(f"{self.name}: tiny builds a small random network; it takes no weights")
        if not tiny and weights is None:
            raise FileNotFoundError(f"{self.name} needs weights: pass weights=PATH ({self.how_to_get}); "
                                    "or use the tiny variant to run without them")
        self.weights, self.layer, self.tiny, self.random_init, self.seed = weights, layer, tiny, random_init, seed
        self._model: torch.nn.Module | None = None
        self._device: str | None = None

    # -- to implement ----------------------------------------------------------------------------
    def build(self) -> "torch.nn.Module":
        """The network in eval mode on the CPU: tiny, from `weights`, or `weights`' architecture re-initialised."""
        raise NotImplementedError

    def forward(self, model: "torch.nn.Module", clips: Sequence[Clip], device: str) -> list[np.ndarray]:
        """Features of each clip, (T_i, D) at FEATURE_RATE; batched on `device`. Called under
        inference mode (and bf16 autocast on CUDA). Raise ClipError for a clip it cannot use."""
        raise NotImplementedError

    # -- provided --------------------------------------------------------------------------------
    def model(self, device: str) -> "torch.nn.Module":
        """The network on `device`, built on first use (constructing a Backbone loads nothing)."""
        if self._model is None:
            self._model = self.build().eval()
        if self._device != device:
            self._model.to(device)
            self._device = device
        return self._model

    def extract(self, clips: Sequence[Clip], device: str = "cpu") -> list[np.ndarray]:
        import torch

        model = self.model(device)
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda")
                    else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            features = self.forward(model, clips, device)
        return [np.asarray(f, dtype=np.float32) for f in features]

    def fingerprint(self) -> str:
        """Identifies the features this backbone computes: part of every feature cache key."""
        return sha256_json({
            "backbone": self.name, "version": self.version, "layer": self.layer, "tiny": self.tiny,
            "random_init": self.random_init, "seed": self.seed if self.tiny or self.random_init else None,
            "weights": weights_digest(self.weights) if self.weights is not None else None,
        })

    def describe(self) -> dict:
        """Provenance: what was used, in plain words."""
        return {"backbone": self.name, "weights": self.weights, "layer": self.layer, "tiny": self.tiny,
                "random_init": self.random_init, "seed": self.seed}


def weights_digest(weights: str) -> str:
    """sha256 of a weights file, or of every file in a weights folder; a hub id is hashed by name."""
    path = Path(weights).expanduser()
    if path.is_file():
        return sha256_file_cached(path)
    if path.is_dir():
        return sha256_json({p.relative_to(path).as_posix(): sha256_file_cached(p)
                            for p in sorted(path.rglob("*")) if p.is_file()})
    return sha256_json({"hub_id": weights})


def merged_spec(backbones: Sequence[Backbone]) -> InputSpec:
    """One InputSpec that decodes what every backbone needs; conflicting settings are an error."""
    merged: dict = {}
    for backbone in backbones:
        spec = dataclasses.asdict(backbone.input_spec)
        for field, value in spec.items():
            if field == "audio":
                merged["audio"] = merged.get("audio", False) or value
            elif field == "audio_optional":
                merged["audio_optional"] = merged.get("audio_optional", True) and value
            elif value is not None and value is not False:
                if merged.get(field) not in (None, False, value):
                    raise ValueError(f"backbones disagree on {field}: {merged[field]} and {value} ({backbone.name})")
                merged[field] = value
    if not merged.get("fps"):
        merged["fps"] = None
    return InputSpec(**merged)


class FeatureCache:
    """Features stored as one safetensors file per (media key, backbone fingerprint)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def key(self, media_key: str, fingerprint: str) -> str:
        return sha256_json({"media": media_key, "backbone": fingerprint})

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def get(self, key: str) -> np.ndarray | None:
        from safetensors.numpy import load_file

        path = self.path(key)
        if not path.is_file():
            return None
        return load_file(path)["features"]

    def put(self, key: str, features: np.ndarray) -> None:
        from safetensors.numpy import save

        with atomic_write(self.path(key), "wb") as fh:
            fh.write(save({"features": np.ascontiguousarray(features, dtype=np.float32)}))


class FeatureSource:
    """Features of clips for one backbone: from the cache when there, else computed and cached.

    Without a loader (or a loader without a cache) nothing is cached and every clip is computed.
    """

    def __init__(self, backbone: Backbone, loader: "MediaLoader | None" = None):
        self.backbone = backbone
        self.cache = (FeatureCache(loader.cache.root / "features")
                      if loader is not None and loader.cache is not None else None)
        self.loader = loader
        self._fingerprint: str | None = None

    def key(self, ref: ClipRef, audio_removed: bool) -> str | None:
        if self.cache is None:
            return None
        if self._fingerprint is None:
            self._fingerprint = self.backbone.fingerprint()
        try:
            media_key = self.loader.media_key(ref, self.backbone.input_spec, audio_removed)
        except OSError:  # a missing file: the loader will say so when it decodes
            return None
        return self.cache.key(media_key, self._fingerprint)

    def cached(self, ref: ClipRef, audio_removed: bool) -> bool:
        key = self.key(ref, audio_removed)
        return key is not None and self.cache.has(key)

    def features(self, clips: Sequence[Clip], device: str = "cpu") -> list[np.ndarray]:
        """(T_i, D) float32 per clip; one backbone pass over all clips not yet cached."""
        out: list[np.ndarray | None] = [None] * len(clips)
        keys = [self.key(clip.ref, clip.audio_removed) for clip in clips]
        missing = []
        for i, (clip, key) in enumerate(zip(clips, keys)):
            if key is not None:
                out[i] = self.cache.get(key)
            if out[i] is None:
                if not has_media(clip):
                    raise ClipError("feature_cache_miss", f"{clip.ref.path}: {self.backbone.name} features were "
                                                          "expected in the cache but are gone; run again")
                missing.append(i)
        if missing:
            computed = self.backbone.extract([clips[i] for i in missing], device)
            for i, features in zip(missing, computed, strict=True):
                out[i] = features
                if keys[i] is not None:
                    self.cache.put(keys[i], features)
        return out


def has_media(clip: Clip) -> bool:
    """False for the media-less clips the loader hands over when features are cached."""
    return clip.frames is not None or clip.audio is not None or clip.mouths is not None or clip.faces is not None


def pair_frames(features: np.ndarray) -> np.ndarray:
    """50 Hz (T, D) -> 25 Hz (T // 2, 2D): consecutive frames concatenated (an odd last frame dropped)."""
    n = len(features) // 2
    return features[: 2 * n].reshape(n, 2 * features.shape[1])


def n_feature_frames(clip: Clip) -> int:
    """Frames at FEATURE_RATE that the clip covers: its video frames, else its audio length."""
    if clip.frames is not None and clip.fps:
        return int(round(len(clip.frames) * FEATURE_RATE / clip.fps))
    if clip.mouths is not None and clip.fps:
        return int(round(len(clip.mouths) * FEATURE_RATE / clip.fps))
    if clip.audio is not None:
        return int(len(clip.audio) * FEATURE_RATE // clip.sample_rate)
    raise ClipError("no_media", f"{clip.ref.path}: neither video nor audio was decoded")
