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
import types
import typing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Iterable

import numpy as np

from avbench.io import atomic_write, sha256_file, write_json
from avbench.metrics import aggregate_windows

if TYPE_CHECKING:
    from avbench.clips import Clip, ClipRef
    from avbench.loader import ClipSet, MediaLoader, UnlabeledPool


@dataclass(frozen=True)
class InputSpec:
    """What the media loader must decode for a detector.

    fps: frame rate to sample video at (None: no video). audio: 16 kHz mono float32.
    frame_size: resize whole frames to this square size (None: native size).
    frame_crop: with frame_size, scale the shorter side to frame_size and cut the centre square
    (the CLIP / VideoMAE convention) instead of squeezing the whole frame into the square.
    face_size / mouth_size: square crops from 68-point landmarks (None: not needed).
    frames: keep the whole frames too; a detector that reads only crops says False, and its cache
    entries and read-ahead queue hold a fraction of the bytes (a 4 s 224 px clip: 15 MB of frames).
    max_seconds: decode at most this much from the start of the clip (None: all of it).
    audio_optional: the detector accepts `clip.audio is None`; otherwise a missing-audio
    protocol hands it a silent track of the clip's length, as HAVIC's paper does for baselines.
    no_face: what a clip in which no face is found becomes: "fail" (ClipError no_face, counted as
    failed) or "centre_crop" (face_size crops of each frame's centre square, declared as the
    clip's fallback NO_FACE_CENTRE_CROP), for a detector whose method crops faces only where it can.
    """

    fps: float | None = 25.0
    audio: bool = True
    frame_size: int | None = None
    frame_crop: bool = False
    face_size: int | None = None
    mouth_size: int | None = None
    frames: bool = True
    max_seconds: float | None = None
    audio_optional: bool = False
    no_face: str = "fail"

    @property
    def video(self) -> bool:
        return self.fps is not None

    @property
    def needs_faces(self) -> bool:
        return self.face_size is not None or self.mouth_size is not None

    def __post_init__(self):
        if self.no_face not in ("fail", "centre_crop") or self.no_face == "centre_crop" and (
                self.face_size is None or self.mouth_size is not None):
            raise ValueError(f"no_face is 'fail', or 'centre_crop' for face crops without mouth crops ({self})")
        if not self.frames and not self.needs_faces:
            raise ValueError(f"frames=False leaves nothing to decode from the video: set face_size or mouth_size ({self})")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ClassScores:
    """A multi-class detector's answer for one clip: `score`, the binary fake score every binary
    metric reads (higher = more likely fake), and `probabilities` over the detector's `class_names`."""

    score: float
    probabilities: tuple[float, ...]


class OptionError(ValueError):
    """A detector option that is unknown or not of the form its `__init__` declares (a usage error)."""


class Detector:
    """Base class of all detectors. Subclasses set the class attributes and implement `score`.

    A detector whose `__init__` takes a `seed` keyword is built by the runner with the run's seed.
    The runner's order: `__init__` (options only: a bad value raises ValueError or TypeError, read
    as a usage error), `to(device)`, `use_loader`, `prepare` (files: weights opened and verified),
    then `fit` and `score`. Everything before `fit` and `score` happens before any clip is decoded.
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
    #: Where `fit` keeps its resumable state (`use_training_dir`); None: nowhere, it starts afresh.
    training_dir: Path | None = None
    #: Per-epoch records of the last `fit`, for a detector that trains by epochs (JSON-serialisable);
    #: the runner keeps them in the fold's fit.json.
    history: dict | list | None = None
    #: For window-level detectors: how window logits become the clip score (metrics.AGGREGATIONS).
    aggregation: str | None = None
    #: () for a binary detector; metrics.FOUR_CLASSES for one that tells which modality is fake: its
    #: `score` then returns ClassScores, and only a protocol's four-class variant runs it.
    class_names: tuple[str, ...] = ()
    #: True when the detector learns from an unlabelled pool after `fit` (self-training on
    #: pseudo-labels): the runner then calls `adapt` with the protocol's pool, and refuses a protocol
    #: that names none.
    uses_pool: bool = False

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

    def prepare(self, training: bool) -> None:
        """Open and verify everything the detector reads that does not depend on a clip (weights files:
        format, hash, keys), so that a run that cannot succeed fails before its first clip is decoded.
        `training`: `fit` follows (files only fitting reads are checked too); else the detector only
        scores. Raise an error that names the file and the problem. The default reads nothing."""

    def use_training_dir(self, directory: Path) -> None:
        """Called by the runner before `fit` with a folder that outlives an interrupted run (it is
        removed once the fitted detector is saved), kept as `training_dir`: a detector whose training
        is long keeps its resumable training state there, so the same command resumes mid-training."""
        self.training_dir = Path(directory)

    # -- media -------------------------------------------------------------------------------------
    def use_loader(self, loader: "MediaLoader") -> None:
        """Called by the runner, before fit and score, with the loader that decodes the clips. A
        detector that caches what it computes from media keys that cache on `loader.media_key`."""

    def needs_media(self, ref: "ClipRef", audio_removed: bool) -> bool:
        """False when the detector can train on or score `ref` without decoding it (its features
        are cached): the loader then hands over a Clip that carries the ref and no media."""
        return True

    # -- learning and scoring ------------------------------------------------------------------
    def adapt(self, train: "ClipSet", val: "ClipSet", pool: "UnlabeledPool", seed: int,
              device: str = "cpu") -> list[dict[str, int]]:
        """After `fit`, learn from the unlabelled clips of `pool` (label-stripped: media and opaque
        tokens only). Returns, per round, the pseudo-labels it trained on ({token: 0 or 1}); the
        runner checks them against the labels it withheld and records counts and accuracy."""
        raise NotImplementedError(f"{self.name} learns from no unlabelled pool")

    def fit(self, train: "ClipSet", val: "ClipSet", seed: int, device: str = "cpu") -> "Detector":
        """Learn from `train`; `val` is for model selection only (never test data)."""
        raise NotImplementedError(f"{self.name} does not train")

    def score(self, clip: "Clip") -> "float | ClassScores":
        """One score per clip (ClassScores for a detector with `class_names`). A detector that scores
        windows implements `score_windows` and sets `aggregation` instead; the clip score is then
        their aggregate, named in the run record."""
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
        """Write `state.npz` (no pickle) and `config.json`, which records the state file's sha256 so
        that `load` refuses a state file changed or swapped since; returns the directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_write(directory / "state.npz", "wb") as fh:
            np.savez(fh, **self.state_dict())
        write_json(directory / "config.json", {"detector": self.name, "version": self.version, "config": self.config(),
                                               "state_sha256": sha256_file(directory / "state.npz")})
        return directory

    @classmethod
    def load(cls, directory: Path | str, expected_sha256: str | None = None, **options) -> "Detector":
        """Rebuild a saved detector; refuses a state file whose sha256 differs from `expected_sha256`
        or from the one its config.json recorded when it was saved. `options` replace saved ones
        (choices of how to run, such as a batch size; a change the state does not fit is refused)."""
        directory = Path(directory)
        config_file, state_file = directory / "config.json", directory / "state.npz"
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory}: not a {cls.name} checkpoint folder (config.json + state.npz)")
        for f in (config_file, state_file):
            if not f.is_file():
                raise FileNotFoundError(f"{cls.name} checkpoint is incomplete: {f} is missing")
        try:
            saved = json.loads(config_file.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{config_file}: not readable JSON ({exc})") from exc
        if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
            raise ValueError(f"{config_file}: not a detector config (expected keys detector, version, config)")
        if saved.get("detector") != cls.name:
            raise ValueError(f"{directory} holds a '{saved.get('detector')}' checkpoint, not '{cls.name}'")
        for expected, what in ((expected_sha256, "the expected"), (saved.get("state_sha256"), "the one config.json records")):
            if expected and (found := sha256_file(state_file)) != expected:
                raise ValueError(f"{state_file}: sha256 {found} does not match {what} ({expected}): the state file "
                                 "was changed or replaced since it was saved")
        detector = cls(**{**saved["config"], **options})
        try:
            with np.load(state_file, allow_pickle=False) as npz:
                state = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError) as exc:
            raise ValueError(f"{state_file}: not a readable .npz state file ({exc})") from exc
        try:
            detector.load_state_dict(state)
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise ValueError(f"{state_file}: does not fit a '{cls.name}' detector ({exc})") from exc
        return detector

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


# -- options from the command line -----------------------------------------------------------------
def option_names(cls: type[Detector]) -> list[str]:
    """The keyword arguments of a detector's `__init__`: its options."""
    params = inspect.signature(cls.__init__).parameters
    return [n for n, p in params.items() if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def parse_options(cls: type[Detector], raw: dict[str, str]) -> dict:
    """`-o KEY=VALUE` texts as the values `cls.__init__` declares: int, float, bool (true/false),
    str, None (none/null where the option allows it), lists and dicts as JSON. An unknown key or a
    text of the wrong form raises OptionError showing the expected form."""
    names = option_names(cls)
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise OptionError(f"detector '{cls.name}' has no option {', '.join(map(repr, unknown))}; "
                          f"its options: {', '.join(names)}")
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that names something only type checkers import: read values as JSON
        hints = {}
    return {key: _option_value(cls.name, key, text, hints.get(key)) for key, text in raw.items()}


_FORMS = {bool: "true or false", int: "an integer", float: "a number", str: "a text", type(None): "none",
          list: "a JSON list, e.g. [\"a\", \"b\"]", dict: "a JSON object, e.g. {\"key\": \"value\"}"}


def _option_value(detector: str, key: str, text: str, annotation):
    if annotation is None:
        return _json_or_text(text)
    kinds = _kinds(annotation)
    for kind in (type(None), bool, int, float, list, dict, str):
        if kind in kinds:
            parsed = _parse_as(kind, text)
            if parsed is not _NO:
                return parsed
    if not kinds - set(_FORMS):  # every kind is one we parse: the text fits none of them
        forms = " or ".join(_FORMS[k] for k in (bool, int, float, list, dict, str, type(None)) if k in kinds)
        raise OptionError(f"-o {key} (detector '{detector}') takes {forms}, got {text!r}")
    return _json_or_text(text)


_NO = object()


def _parse_as(kind, text: str):
    value = text.strip()
    if kind is type(None):
        return None if value.lower() in ("none", "null") else _NO
    if kind is bool:
        return {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(value.lower(), _NO)
    if kind is int:
        try:
            return int(value)
        except ValueError:
            return _NO
    if kind is float:
        try:
            number = float(value)
        except ValueError:
            return _NO
        return number if np.isfinite(number) else _NO
    if kind in (list, dict):
        parsed = _json_or_text(value)
        return parsed if isinstance(parsed, kind) else _NO
    return text if value else _NO


def _kinds(annotation) -> set:
    """The plain types an annotation admits: `int | None` -> {int, NoneType}; Sequence[str] -> {list}."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_kinds(a) for a in typing.get_args(annotation)))
    base = origin or annotation
    if base is typing.Any:
        return {object}
    if isinstance(base, type):
        import collections.abc as abc

        if issubclass(base, (dict, abc.Mapping)):
            return {dict}
        if base is not str and issubclass(base, (list, tuple, abc.Sequence)):
            return {list}
        return {base}
    return {object}


def _json_or_text(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
