"""The HAVIC detectors: `havic` (the paper's model, the authors' weights) and `havic_tiny` (tests).

A clip is scored the authors' way: its 5 fps face crops (at most 10 s) and audio are cut into windows
of 16 frames with a stride of 2 (`preprocess.clip_windows`), all windows of a batch of clips run
through the model together, and the clip's score is the sigmoid of the mean of its windows' main-head
logits (aggregation "mean_logit"; the authors' release averages probabilities instead, the paper says
logits). Under a missing-audio protocol (`clip.audio_removed`) the visual head alone scores the
windows, as in the paper's supplement (D.2). On CUDA the forward pass runs under bf16 autocast (the
release used fp16 autocast); on the CPU in fp32.

Departures from the release, declared: faces are cropped by the harness from dlib's 68 landmarks, not
by RetinaFace boxes scaled by 1.3; where the release drops a video with any faceless frame, the harness
gives such a frame the nearest frame's face and fails a clip without any face (reason no_face); a clip
shorter than one window (3.2 s), which the release drops, fails with reason `too_short`, or, with
pad_short=True, is padded by repeating its last frame.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Sequence

import numpy as np
import torch

from avbench.detector import Detector, InputSpec
from avbench.metrics import aggregate_windows

from .checkpoint import load_official, load_strict
from .model import HAVIC, HAVICConfig
from .preprocess import clip_windows

if TYPE_CHECKING:
    from avbench.clips import Clip
    from avbench.loader import ClipSet

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


class HAVICDetector(Detector):
    """HAVIC (seed paper 000). Options: weights (path of the authors' fine-tuning checkpoint, or None for
    a random initialisation from `seed`), weights_sha256, device ("auto": CUDA when available), batch_size
    (windows per forward pass), pad_short (see the module docstring)."""

    name: ClassVar[str] = "havic"
    modalities: ClassVar[tuple[str, ...]] = ("audio", "video")
    trains: ClassVar[bool] = True
    published_as: ClassVar[tuple[str, ...]] = ("HAVIC",)
    version: ClassVar[str] = "1"
    scores_are_probabilities: ClassVar[bool] = True
    aggregation = "mean_logit"
    input_spec = InputSpec(fps=5.0, audio=True, face_size=224, max_seconds=10.0, audio_optional=True)

    @classmethod
    def model_config(cls) -> HAVICConfig:
        return HAVICConfig.base()

    def __init__(self, weights: str | None = None, weights_sha256: str | None = None, device: str = "auto",
                 batch_size: int = 8, pad_short: bool = False, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.weights = None if weights is None else str(weights)
        self.weights_sha256 = weights_sha256
        self.device = device
        self.batch_size = batch_size
        self.pad_short = pad_short
        self.seed = seed
        self._model: HAVIC | None = None

    # -- the network ------------------------------------------------------------------------------
    @property
    def model(self) -> HAVIC:
        """The network on its device, built on first use: from `weights` if given, else randomly (seeded)."""
        if self._model is None:
            self._place(self._build(load_weights=True))
        return self._model

    def _build(self, load_weights: bool) -> HAVIC:
        if load_weights and self.weights is not None:
            return load_official(self.weights, sha256=self.weights_sha256, config=self.model_config())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return HAVIC(self.model_config()).eval()

    def _place(self, model: HAVIC) -> None:
        self._model = model.to(self.torch_device).eval()

    @property
    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    # -- scoring ----------------------------------------------------------------------------------
    def windows(self, clip: "Clip") -> tuple[torch.Tensor, torch.Tensor | None]:
        """The clip's model inputs: video windows and audio windows (None when the audio was removed)."""
        if clip.faces is None:
            raise ValueError(f"{clip.ref.path}: the clip carries no face crops; load it with {self.input_spec}")
        audio = None if clip.audio_removed else clip.audio
        if audio is None and not clip.audio_removed:
            raise ValueError(f"{clip.ref.path}: the clip carries no audio and was not marked audio_removed")
        return clip_windows(clip.faces, audio, self.model_config(), source=str(clip.ref.path), pad_short=self.pad_short)

    def window_logits(self, clips: Sequence[tuple[torch.Tensor, torch.Tensor | None]]) -> list[np.ndarray]:
        """Per clip, its windows' main-head logits (visual head for a clip whose audio is None), from
        `windows` outputs; windows of all clips are batched together on the device."""
        model, device = self.model, self.torch_device
        results: list[list[torch.Tensor]] = [[] for _ in clips]
        for visual_only in (False, True):
            pairs = [(c, w) for c, (video, audio) in enumerate(clips) if (audio is None) == visual_only
                     for w in range(len(video))]
            for start in range(0, len(pairs), self.batch_size):
                batch = pairs[start:start + self.batch_size]
                video = torch.stack([clips[c][0][w] for c, w in batch]).to(device).float().div_(255.0)
                with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda"):
                    if visual_only:
                        logits = model.visual_logits(video)
                    else:
                        logits = model(torch.stack([clips[c][1][w] for c, w in batch]).to(device), video)
                for (c, _), value in zip(batch, logits.float().cpu()[:, 0]):
                    results[c].append(value)
        return [torch.stack(r).numpy().astype(np.float64) for r in results]

    def score_windows(self, clip: "Clip") -> np.ndarray:
        return self.window_logits([self.windows(clip)])[0]

    def score(self, clip: "Clip") -> float:
        return self.score_batch([clip])[0]

    def score_batch(self, clips: Sequence["Clip"]) -> list[float]:
        """sigmoid(mean of the window logits) of each clip; windows of all clips share the batches."""
        logits = self.window_logits([self.windows(clip) for clip in clips])
        return [_sigmoid(aggregate_windows(x, self.aggregation)) for x in logits]

    # -- learning and state -----------------------------------------------------------------------
    def fit(self, train: "ClipSet", val: "ClipSet", seed: int, device: str = "cpu") -> "HAVICDetector":
        raise NotImplementedError("HAVIC pre-training and fine-tuning are not implemented yet; score with the "
                                  "authors' weights: --checkpoint PATH or --option weights=PATH")

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: v.detach().float().cpu().numpy() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        with torch.device("meta"):  # the state replaces every tensor: no random initialisation needed
            model = HAVIC(self.model_config())
        load_strict(model, {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, f"{self.name} state",
                    assign=True)
        self._place(model)

    @classmethod
    def load(cls, path: Path | str, expected_sha256: str | None = None) -> "HAVICDetector":
        """A saved detector directory (config.json + state.npz), or a weights file in the authors' format."""
        path = Path(path)
        if path.is_file() and path.suffix in WEIGHT_SUFFIXES:
            return cls(weights=str(path), weights_sha256=expected_sha256)
        if path.is_file():
            raise ValueError(f"{path}: not a {cls.name} checkpoint; give a weights file ({', '.join(WEIGHT_SUFFIXES)}) "
                             f"or a directory saved by avbench")
        return super().load(path, expected_sha256)


class HAVICTinyDetector(HAVICDetector):
    """HAVIC at `HAVICConfig.tiny()` (32 px faces, 8-frame windows): fast enough for tests on a CPU."""

    name: ClassVar[str] = "havic_tiny"
    published_as: ClassVar[tuple[str, ...]] = ()
    input_spec = InputSpec(fps=5.0, audio=True, face_size=HAVICConfig.tiny().image_size, max_seconds=10.0,
                           audio_optional=True)

    @classmethod
    def model_config(cls) -> HAVICConfig:
        return HAVICConfig.tiny()


def _sigmoid(x: float) -> float:
    return 0.5 * (1.0 + math.tanh(x / 2.0))  # no overflow for large |x|
