"""The detector contract every plugin honours, in the spirit of scikit-learn's estimators.

A detector declares what it consumes (`InputSpec`), may learn from training clips (`fit`), and
returns one number per clip (`score`): higher means more likely fake. Hyper-parameters are the
keyword arguments of `__init__`, stored as attributes of the same name, so `config()` can report
them for provenance and `load` can rebuild the detector. Learned state is a flat dict of numpy
arrays saved as `.npz` without pickle, so a checkpoint can never run code when loaded.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Iterable

import numpy as np

from avbench.io import atomic_write, sha256_file, write_json
from avbench.metrics import aggregate_windows

if TYPE_CHECKING:
    from avbench.clips import Clip, ClipRef
    from avbench.loader import ClipSet, MediaLoader


@dataclass(frozen=True)
class InputSpec:
    """What the media loader must decode for a detector.

    fps: frame rate to sample video at (None: no video). audio: 16 kHz mono float32.
    frame_size: resize whole frames to this square size (None: native size).
    frame_crop: with frame_size, scale the shorter side to frame_size and cut the centre square
    (the CLIP / VideoMAE convention) instead of squeezing the whole frame into the square.
    face_size / mouth_size: square crops from 68-point landmarks (None: not needed).
    max_seconds: decode at most this much from the start of the clip (None: all of it).
    audio_optional: the detector accepts `clip.audio is None`; otherwise a missing-audio
    protocol hands it a silent track of the clip's length, as HAVIC's paper does for baselines.
    """

    fps: float | None = 25.0
    audio: bool = True
    frame_size: int | None = None
    frame_crop: bool = False
    face_size: int | None = None
    mouth_size: int | None = None
    max_seconds: float | None = None
    audio_optional: bool = False

    @property
    def video(self) -> bool:
        return self.fps is not None

    @property
    def needs_faces(self) -> bool:
        return self.face_size is not None or self.mouth_size is not None

    def as_dict(self) -> dict:
        return asdict(self)


class Detector:
    """Base class of all detectors. Subclasses set the class attributes and implement `score`.

    A detector whose `__init__` takes a `seed` keyword is built by the runner with the run's seed.
    """

    name: ClassVar[str] = ""
    #: "audio", "video" or both: what evidence the method looks at.
    modalities: ClassVar[tuple[str, ...]] = ("audio", "video")
    #: True if the method learns from labelled training clips; the runner then calls `fit`.
    trains: ClassVar[bool] = False
    #: Names under which the method appears in published tables (leaderboards/published.csv).
    published_as: ClassVar[tuple[str, ...]] = ()
    #: Version of the detector's code and state format; bump when scores change.
    version: ClassVar[str] = "1"
    #: True when `score` is a probability of fake in [0, 1]: only then is ACC at 0.5 reported.
    scores_are_probabilities: ClassVar[bool] = False

    #: Frames per second of `frame_scores`, for detectors that explain their score over time.
    frame_rate: ClassVar[float | None] = None

    input_spec: InputSpec = InputSpec()
    #: Where the detector computes ("cpu", "cuda"); set by `to`, not an option, so checkpoints are device-free.
    device: str = "cpu"
    #: Per-epoch records of the last `fit`, for a detector that trains by epochs (JSON-serialisable);
    #: the runner keeps them in the fold's fit.json.
    history: dict | list | None = None
    #: For window-level detectors: how window logits become the clip score (metrics.AGGREGATIONS).
    aggregation: str | None = None

    # -- hyper-parameters -------------------------------------------------------------------
    def config(self) -> dict:
        """The `__init__` keyword arguments as they are now set (JSON-serialisable)."""
        params = inspect.signature(type(self).__init__).parameters
        return {
            name: getattr(self, name)
            for name, p in params.items()
            if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }

    def sources(self) -> dict:
        """What the detector reads beyond its options, identified by content (e.g. its weights by
        sha256); part of the run key and the record, so another file at the same path is another run."""
        return {}

    # -- placement and working space ---------------------------------------------------------------
    def to(self, device: str) -> "Detector":
        """Compute on `device` from now on; the runner calls this after building or loading a detector.
        Torch modules held in attributes (or in dicts of them) move with it; a detector that keeps
        modules elsewhere overrides this."""
        self.device = device
        for value in vars(self).values():
            for module in value.values() if isinstance(value, dict) else (value,):
                if hasattr(module, "parameters") and callable(getattr(module, "to", None)):
                    module.to(device)
        return self

    def use_training_dir(self, directory: Path) -> None:
        """Called by the runner before `fit` with a folder that outlives an interrupted run (it is
        removed once the fitted detector is saved): a detector whose training is long keeps its
        resumable training state there, so the same command resumes mid-training."""

    # -- media -------------------------------------------------------------------------------------
    def use_loader(self, loader: "MediaLoader") -> None:
        """Called by the runner, before fit and score, with the loader that decodes the clips. A
        detector that caches what it computes from media keys that cache on `loader.media_key`."""

    def needs_media(self, ref: "ClipRef", audio_removed: bool) -> bool:
        """False when the detector can train on or score `ref` without decoding it (its features
        are cached): the loader then hands over a Clip that carries the ref and no media."""
        return True

    # -- learning and scoring ------------------------------------------------------------------
    def fit(self, train: "ClipSet", val: "ClipSet", seed: int, device: str = "cpu") -> "Detector":
        """Learn from `train`; `val` is for model selection only (never test data)."""
        raise NotImplementedError(f"{self.name} does not train")

    def score(self, clip: "Clip") -> float:
        """One score per clip. A detector that scores windows implements `score_windows` and sets
        `aggregation` instead; the clip score is then their aggregate, named in the run record."""
        return aggregate_windows(self.score_windows(clip), self.aggregation)

    def score_windows(self, clip: "Clip") -> np.ndarray:
        """Logits of the clip's windows (e.g. one per second); see avbench.metrics.AGGREGATIONS."""
        raise NotImplementedError(f"{type(self).__name__} implements neither score nor score_windows")

    def frame_scores(self, clip: "Clip") -> np.ndarray:
        """Per-frame fakeness at `frame_rate` (a temporal explanation); the runner compares it with
        the annotated fake segments of fake clips (metric LOC_AUC)."""
        raise NotImplementedError(f"{type(self).__name__} gives no frame scores")

    def score_batch(self, clips: Iterable["Clip"]) -> list[float]:
        """Score several clips; override to batch on the device."""
        return [self.score(clip) for clip in clips]

    # -- learned state -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Learned parameters as numpy arrays; empty for a training-free detector."""
        return {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        if state:
            raise ValueError(f"{self.name} has no learned state, got {sorted(state)}")

    def save(self, directory: Path | str) -> Path:
        """Write `config.json` and `state.npz` (no pickle); returns the directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_json(directory / "config.json", {"detector": self.name, "version": self.version,
                                               "config": self.config()})
        with atomic_write(directory / "state.npz", "wb") as fh:
            np.savez(fh, **self.state_dict())
        return directory

    @classmethod
    def load(cls, directory: Path | str, expected_sha256: str | None = None) -> "Detector":
        """Rebuild a saved detector; refuses a state file whose hash differs from the expected."""
        directory = Path(directory)
        config_file, state_file = directory / "config.json", directory / "state.npz"
        for f in (config_file, state_file):
            if not f.is_file():
                raise FileNotFoundError(f"{cls.name} checkpoint is incomplete: {f} is missing")
        saved = json.loads(config_file.read_text())
        if saved.get("detector") != cls.name:
            raise ValueError(f"{directory} holds a '{saved.get('detector')}' checkpoint, not '{cls.name}'")
        if expected_sha256 and sha256_file(state_file) != expected_sha256:
            raise ValueError(f"{state_file}: sha256 does not match the expected {expected_sha256}")
        detector = cls(**saved["config"])
        with np.load(state_file, allow_pickle=False) as npz:
            detector.load_state_dict({k: npz[k] for k in npz.files})
        return detector

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"
