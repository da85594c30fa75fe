"""The registered detectors `fauforensics` (the paper's size) and `fauforensics_tiny` (the CPU twin)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from avbench.detector import ClassScores, Detector, InputSpec
from avbench.io import sha256_file_cached
from avbench.metrics import AGGREGATIONS, FOUR_CLASSES, aggregate_windows
from avbench.weights import load_strict

from . import training
from .checkpoint import init_audio, init_fau, init_video, load_authors
from .model import FauForensics, FauForensicsConfig

#: How a clip without audio (a +missing_audio protocol) is scored; see FauForensicsDetector.
WITHOUT_AUDIO = ("visual_head", "silent_track", "authors_constant")

if TYPE_CHECKING:
    from avbench.clips import Clip
    from avbench.loader import ClipSet


class FauForensicsDetector(Detector):
    """FauForensics (seed paper 002) behind score(clip).

    A clip is read as 25 fps face crops (224 px, the authors' face videos) and 16 kHz audio, at most
    `max_windows` seconds; its non-overlapping windows of `frames` video frames from t = 0 (one 1 s
    window per second at full size; a clip shorter than a window is zero-padded) are scored by the
    audio-visual head, P(fake) = softmax's fake class (four classes: 1 - P(real audio, real video)),
    and the clip score is their `aggregation` (metrics.AGGREGATIONS on the windows' logits, default
    mean_prob: the mean of the windows' P(fake); "first" scores the first window alone, as the
    authors' evaluation does for a window starting at 0). With four classes the clip's class
    probabilities are the mean of its windows' softmax (the first window's under "first") beside
    that score (ClassScores; protocols' +four_class variant).

    A clip whose audio a +missing_audio protocol removed is scored as `without_audio` says:
    "visual_head" (default) by the visual head alone, P(video fake) from the frame-by-frame
    similarities of the visual queries, which read no audio (the paper's ablation without the audio
    encoder shows the visual path alone detects fakes; this head was trained on the video label, so
    a fake whose only fake modality is the audio is scored real, as it should be once its audio is
    gone); "silent_track": the audio-visual head on a silent track (the mel front end maps silence
    to a constant 1); "authors_constant": the audio-visual head on the constant 0.5 spectrogram the
    authors' data loader gives a clip without audio. Binary models only: four classes need the audio.

    Options:
    - weights: a checkpoint in the authors' layout to score or fine-tune from (`load_authors`);
      trusted_pickle: accept a .pth that needs more than tensors (the authors' main.py writes numpy
      metrics into its checkpoints).
    - fau_weights, video_weights, audio_weights: the encoders' public weights (ME-GraphAU ResNet-50,
      pytorchvideo's ir-CSN-101 Kinetics-400, openai-whisper base) for a model trained from them;
      without them the encoders start random (the tiny twin; the full model refuses to train so).
    - fau_bn: the frozen FAU encoder's BatchNorms while training: "train" (batch statistics, running
      statistics updated, as the authors' code) or "frozen" (eval mode throughout).
    - classes: 2 (real/fake) or 4 (RARV, RAFV, FARV, FAFV); aggregation, max_windows: the clip score;
      without_audio: see above.
    - epochs, train_batch_size, lr, weight_decay, accumulate: training (AdamP, poly schedule per
      iteration; the authors': 50, 32, 1e-4, 1e-2, and 2 on LAV-DF); batch_size: windows per forward
      pass when scoring; seed: initialisation of what no weights file sets.
    Training, and what avbench does differently from the authors' code, is in training.py.
    """

    name: ClassVar[str] = "fauforensics"
    modalities: ClassVar[tuple[str, ...]] = ("audio", "video")
    trains: ClassVar[bool] = True
    published_as: ClassVar[tuple[str, ...]] = ("FauForensics",)
    version: ClassVar[str] = "1"
    scores_are_probabilities: ClassVar[bool] = True
    input_spec = InputSpec(fps=25.0, audio=True, face_size=224, frames=False, max_seconds=10.0, audio_optional=True)
    #: The full model does not train from random encoders (not the method).
    needs_encoder_weights: ClassVar[bool] = True
    #: Training options left unset take these (the authors' settings).
    training_defaults: ClassVar[dict] = {"epochs": 50, "train_batch_size": 32, "lr": 1e-4}

    def __init__(self, weights: str | None = None, fau_weights: str | None = None, video_weights: str | None = None,
                 audio_weights: str | None = None, trusted_pickle: bool = False, classes: int = 2,
                 aggregation: str = "mean_prob", max_windows: int = 10, epochs: int | None = None,
                 train_batch_size: int | None = None, lr: float | None = None, weight_decay: float = 1e-2,
                 accumulate: int = 1, fau_bn: str = "train", without_audio: str = "visual_head",
                 batch_size: int = 16, seed: int = 0):
        given = {"epochs": epochs, "train_batch_size": train_batch_size, "lr": lr}
        epochs, train_batch_size, lr = (self.training_defaults[k] if v is None else v for k, v in given.items())
        if fau_bn not in ("train", "frozen"):
            raise ValueError(f"fau_bn is 'train' (the authors' code) or 'frozen', got {fau_bn!r}")
        if without_audio not in WITHOUT_AUDIO:
            raise ValueError(f"without_audio is one of {', '.join(WITHOUT_AUDIO)}, got {without_audio!r}")
        if classes not in (2, 4):
            raise ValueError(f"classes is 2 (real/fake) or 4 (RARV, RAFV, FARV, FAFV), got {classes}")
        if aggregation not in (*AGGREGATIONS, "first"):
            raise ValueError(f"aggregation is one of {', '.join((*AGGREGATIONS, 'first'))}, got {aggregation!r}")
        for option, value in (("max_windows", max_windows), ("epochs", epochs), ("train_batch_size", train_batch_size),
                              ("accumulate", accumulate), ("batch_size", batch_size)):
            if value < 1:
                raise ValueError(f"{option} must be >= 1, got {value}")
        self.weights, self.fau_weights, self.video_weights, self.audio_weights = (
            None if w is None else str(w) for w in (weights, fau_weights, video_weights, audio_weights))
        self.trusted_pickle, self.classes, self.aggregation = bool(trusted_pickle), classes, aggregation
        self.max_windows, self.epochs, self.train_batch_size = max_windows, epochs, train_batch_size
        self.lr, self.weight_decay, self.accumulate, self.batch_size, self.seed = lr, weight_decay, accumulate, batch_size, seed
        self.fau_bn, self.without_audio = fau_bn, without_audio
        self._model: FauForensics | None = None

    @classmethod
    def model_config(cls, classes: int = 2) -> FauForensicsConfig:
        return FauForensicsConfig(classes=classes)

    # -- the network ---------------------------------------------------------------------------------------
    @property
    def model(self) -> FauForensics:
        if self._model is None:
            self._model = self._build().to(self.device).eval()
        return self._model

    def _build(self) -> FauForensics:
        cfg = self.model_config(self.classes)
        if self.weights is not None:
            model = load_authors(self.weights, config=cfg, trusted=self.trusted_pickle)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                model = FauForensics(cfg)
            for init, path in ((init_fau, self.fau_weights), (init_video, self.video_weights),
                               (init_audio, self.audio_weights)):
                if path is not None:
                    init(model, path, trusted=self.trusted_pickle)
        model.fau_bn = self.fau_bn
        return model

    def prepare(self, training: bool) -> None:
        """Read every weights file before the first clip: the model is built (files read, strictly loaded)."""
        if training and self.needs_encoder_weights and self.weights is None and None in (
                self.fau_weights, self.video_weights, self.audio_weights):
            missing = [option for option, path in (("fau_weights", self.fau_weights), ("video_weights", self.video_weights),
                                                   ("audio_weights", self.audio_weights)) if path is None]
            raise FileNotFoundError(f"{self.name} trains from its encoders' public weights; give "
                                    + ", ".join(f"-o {m}=PATH" for m in missing)
                                    + " (what each file is: detectors/fauforensics/checkpoint.py SOURCES)")
        self.model

    def sources(self) -> dict:
        """The sha256 of each weights file the options name (None for a file not there: loading says why)."""
        files = {"weights": self.weights, "fau_weights": self.fau_weights, "video_weights": self.video_weights,
                 "audio_weights": self.audio_weights}
        return {name: sha256_file_cached(path) if Path(path).is_file() else None
                for name, path in files.items() if path is not None}

    # -- training ------------------------------------------------------------------------------------------
    def fit(self, train: "ClipSet", val: "ClipSet", seed: int, device: str | None = None) -> "FauForensicsDetector":
        if device is not None:
            self.to(device)
        self.history = training.fit(
            self.model, train, val, seed=seed, device=self.device, epochs=self.epochs,
            batch_size=self.train_batch_size, lr=self.lr, weight_decay=self.weight_decay,
            accumulate=self.accumulate, max_windows=self.max_windows, eval_batch_size=self.batch_size,
            directory=self.training_dir)
        self._model.eval()
        return self

    # -- scoring -------------------------------------------------------------------------------------------
    @property
    def class_names(self) -> tuple[str, ...]:
        return FOUR_CLASSES if self.classes == 4 else ()

    def window_probabilities(self, clip: "Clip") -> np.ndarray:
        """Softmax of each window's head (W, classes): the audio-visual head, or the visual head's
        (W, 2) for a clip without audio under without_audio="visual_head"."""
        if clip.faces is None:
            raise ValueError(f"{clip.ref.path}: FauForensics needs face crops; load it with {self.input_spec}")
        cfg = self.model.cfg
        audio = None if clip.audio_removed else clip.audio
        if audio is None and self.without_audio == "visual_head" and self.classes == 4:
            raise ValueError(f"{clip.ref.path}: has no audio, and the four-class model needs it to tell the classes; "
                             "the visual head is binary")
        if audio is None and self.without_audio == "silent_track":
            audio = np.zeros(self.max_windows * cfg.frames * training.SAMPLES_PER_FRAME, dtype=np.float32)
        video, mel = training.windows_of(clip.faces, audio, cfg, self.max_windows)
        if mel is None and self.without_audio == "authors_constant":
            mel = torch.full((len(video), cfg.audio_frames, cfg.n_mels), 0.5)
        parts = []
        with torch.inference_mode():
            for s in range(0, len(video), self.batch_size):
                v = video[s:s + self.batch_size].to(self.device)
                with training.autocast(torch.device(self.device)):
                    logits = (self.model.visual_logits(v) if mel is None
                              else self.model(v, mel[s:s + self.batch_size].to(self.device)).joint)
                parts.append(logits.double().softmax(dim=-1).cpu())
        return torch.cat(parts).numpy()

    def score(self, clip: "Clip") -> "float | ClassScores":
        p = self.window_probabilities(clip)
        fake = np.clip(1 - p[:, 0], 1e-12, 1 - 1e-12)
        logits = np.log(fake) - np.log1p(-fake)
        value = logits[0] if self.aggregation == "first" else aggregate_windows(logits, self.aggregation)
        score = float(1 / (1 + np.exp(-value)))
        if self.classes == 2:
            return score
        return ClassScores(score, tuple(float(x) for x in (p[0] if self.aggregation == "first" else p.mean(axis=0))))

    # -- learned state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        with torch.device("meta"):
            model = FauForensics(self.model_config(self.classes))
        load_strict(model, {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, f"{self.name} state",
                    assign=True)
        model.fau_bn = self.fau_bn
        self._model = model.to(self.device).eval()


class FauForensicsTinyDetector(FauForensicsDetector):
    """FauForensics at `FauForensicsConfig.tiny()` (8 frames of 64 px a window): trains on a CPU in seconds."""

    name: ClassVar[str] = "fauforensics_tiny"
    published_as: ClassVar[tuple[str, ...]] = ()
    needs_encoder_weights: ClassVar[bool] = False
    #: A few epochs at a learning rate a small random network learns with.
    training_defaults: ClassVar[dict] = {"epochs": 4, "train_batch_size": 8, "lr": 1e-3}

    @classmethod
    def model_config(cls, classes: int = 2) -> FauForensicsConfig:
        return FauForensicsConfig.tiny(classes)
