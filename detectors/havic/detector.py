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

`fit` trains the method (training.py): optionally pre-training on the real training clips, then
fine-tuning with the HAA head and auxiliary heads, the model of the best validation epoch kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Sequence

import numpy as np
import torch
from scipy.special import expit

from avbench.detector import Detector, InputSpec
from avbench.io import sha256_file_cached
from avbench.metrics import aggregate_windows
from avbench.transfer import ahead_on_device

from .checkpoint import init_from_audiomae, init_from_marlin, load_official, load_pretraining, load_strict, read_state_dict, \
    transfer_pretrained
from .model import HAVIC, HAVICConfig, HAVICPretrain
from .preprocess import clip_windows

if TYPE_CHECKING:
    from avbench.clips import Clip
    from avbench.loader import ClipSet

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


class HAVICDetector(Detector):
    """HAVIC (seed paper 000): pre-trained audio and visual ViTs, holistic adaptive aggregation, three heads.

    Options (keyword arguments; a training option left None takes the variant's value from
    `training_defaults`, and the value used is what `config()` records):

    - weights, weights_sha256: the authors' fine-tuning checkpoint (or one in their format). Scored as
      is; `fit` fine-tunes further from it. Without weights the network starts randomly from `seed`.
    - pretrained, pretrained_sha256: a pre-training checkpoint in the authors' format (theirs, or the
      pretrain.safetensors of `avbench havic pretrain`); `fit` fine-tunes from its encoders and
      interaction module (checkpoint.transfer_pretrained). A sha256 given is verified on loading; the
      run records every weights file by its sha256 either way (`sources`).
    - trusted_pickle: load a .pth/.pt whose pickle holds more than tensors (e.g. training arguments);
      refused by default, since unpickling such a file can run code. Safetensors never need it.
    - pretrain_epochs: pre-train on the real training clips first, for this many epochs (continuing
      from `pretrained` if given; 0 by default with weights or pretrained); pretrain_batch_size,
      pretrain_lr, warmup_epochs: its batch size, AdamW learning rate and warm-up.
    - init_audiomae, init_marlin: AudioMAE and MARLIN checkpoints that initialise the encoders (and
      MARLIN's decoder) of a model trained from scratch, as the paper's pre-training does.
    - from_scratch: allow the full model to fine-tune from a random initialisation (not the method;
      refused otherwise).
    - epochs, train_batch_size, lr, head_lr, restart_epochs: fine-tuning: epochs, clips per step, the
      learning rates of the pre-trained parts and of the new modules, warm-restart period in epochs.
    - spec_freq_mask, spec_time_mask: SpecAugment on the training fbank (bins of 128 mel, of the
      window's fbank frames); 0 turns a mask off.
    - batch_size: windows per forward pass when scoring. pad_short: see the module docstring.
    - grad_checkpointing: recompute the encoders' block activations in the backward pass instead of
      keeping them (less memory for a larger batch, about a third more compute; same numbers).
    - seed: initialisation of a network not loaded from weights.

    Where the detector computes is set by `to(device)` (the runner does it), not by an option.
    `use_training_dir(dir)` makes `fit` resumable: pre-training and fine-tuning keep their state in
    dir/pretrain and dir/finetune after every epoch, and a fit started again goes on from there.
    """

    name: ClassVar[str] = "havic"
    modalities: ClassVar[tuple[str, ...]] = ("audio", "video")
    trains: ClassVar[bool] = True
    published_as: ClassVar[tuple[str, ...]] = ("HAVIC",)
    version: ClassVar[str] = "1"
    scores_are_probabilities: ClassVar[bool] = True
    aggregation = "mean_logit"
    input_spec = InputSpec(fps=5.0, audio=True, face_size=224, frames=False, max_seconds=10.0,
                           audio_optional=True)
    #: The paper's settings (supplement B and the authors' release).
    training_defaults: ClassVar[dict] = {
        "pretrain_epochs": 0, "pretrain_batch_size": 112, "pretrain_lr": 1.5e-4, "warmup_epochs": 20.0,
        "epochs": 50, "train_batch_size": 32, "lr": 1e-5, "head_lr": 1e-4, "restart_epochs": 10,
        "spec_freq_mask": 20, "spec_time_mask": 100,
    }
    #: Fine-tuning must start from pre-trained weights unless from_scratch (the full model only).
    needs_pretraining: ClassVar[bool] = True

    @classmethod
    def model_config(cls) -> HAVICConfig:
        return HAVICConfig.base()

    def __init__(self, weights: str | None = None, weights_sha256: str | None = None, pretrained: str | None = None,
                 pretrained_sha256: str | None = None, pretrain_epochs: int | None = None,
                 pretrain_batch_size: int | None = None, pretrain_lr: float | None = None,
                 warmup_epochs: float | None = None, init_audiomae: str | None = None, init_marlin: str | None = None,
                 from_scratch: bool = False, epochs: int | None = None, train_batch_size: int | None = None,
                 lr: float | None = None, head_lr: float | None = None, restart_epochs: int | None = None,
                 spec_freq_mask: int | None = None, spec_time_mask: int | None = None, batch_size: int = 8,
                 pad_short: bool = False, trusted_pickle: bool = False, grad_checkpointing: bool = False,
                 seed: int = 0):
        given = {"pretrain_epochs": pretrain_epochs, "pretrain_batch_size": pretrain_batch_size,
                 "pretrain_lr": pretrain_lr, "warmup_epochs": warmup_epochs, "epochs": epochs,
                 "train_batch_size": train_batch_size, "lr": lr, "head_lr": head_lr, "restart_epochs": restart_epochs,
                 "spec_freq_mask": spec_freq_mask, "spec_time_mask": spec_time_mask}
        if pretrain_epochs is None and (weights is not None or pretrained is not None):
            given["pretrain_epochs"] = 0  # a model loaded from a checkpoint is pre-trained further only when asked
        for key, value in given.items():
            setattr(self, key, self.training_defaults[key] if value is None else value)
        self.weights = None if weights is None else str(weights)
        self.weights_sha256 = weights_sha256
        self.pretrained = None if pretrained is None else str(pretrained)
        self.pretrained_sha256 = pretrained_sha256
        self.trusted_pickle = bool(trusted_pickle)
        self.init_audiomae = None if init_audiomae is None else str(init_audiomae)
        self.init_marlin = None if init_marlin is None else str(init_marlin)
        self.from_scratch = bool(from_scratch)
        self.batch_size = batch_size
        self.pad_short = pad_short
        self.grad_checkpointing = bool(grad_checkpointing)
        self.seed = seed
        self._check_options()
        self._model: HAVIC | None = None
        self._pretrained: HAVICPretrain | None = None  # loaded by `prepare`, handed to `fit`
        #: Per-epoch records of the last `fit` (pre-training and fine-tuning).
        self.history: dict[str, list[dict]] = {}

    def _check_options(self) -> None:
        problems = [f"{key} must be >= {low}, got {getattr(self, key)}" for key, low in (
            ("batch_size", 1), ("pretrain_epochs", 0), ("pretrain_batch_size", 1), ("warmup_epochs", 0),
            ("epochs", 1), ("train_batch_size", 1), ("restart_epochs", 1), ("spec_freq_mask", 0),
            ("spec_time_mask", 0)) if getattr(self, key) < low]
        problems += [f"{key} must be > 0, got {getattr(self, key)}" for key in ("pretrain_lr", "lr", "head_lr")
                     if not getattr(self, key) > 0]
        if self.weights is not None and (self.pretrained is not None or self.pretrain_epochs > 0):
            problems.append("weights is a fine-tuned model: pretrained and pretrain_epochs do not apply to it")
        if (self.init_audiomae or self.init_marlin) and (self.weights or self.pretrained):
            problems.append("init_audiomae and init_marlin initialise a model trained from scratch, "
                            "not one loaded from weights or pretrained")
        if problems:
            raise ValueError(f"{self.name}: " + "; ".join(problems))

    # -- the network ------------------------------------------------------------------------------
    @property
    def model(self) -> HAVIC:
        """The network on its device, built on first use: from `weights` if given, else randomly (seeded)."""
        if self._model is None:
            self._place(self._build(load_weights=True))
        return self._model

    def _build(self, load_weights: bool) -> HAVIC:
        if load_weights and self.weights is not None:
            return load_official(self.weights, sha256=self.weights_sha256, config=self.model_config(),
                                 trusted=self.trusted_pickle)
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

    def to(self, device: str) -> "HAVICDetector":
        self.device = str(device)
        if self._model is not None:
            self._model.to(self.torch_device)
        return self

    def prepare(self, training: bool) -> None:
        """Read every weights file the run will use before its first clip: scoring builds the model
        (`weights` loaded: format, hash, strict keys); fitting checks the options can fit, loads
        `pretrained` (kept for `fit`) or `weights`, and reads `init_audiomae` / `init_marlin`."""
        if not training:
            self.model
            return
        self.check_can_fit()
        if self.weights is not None:
            self.model
        if self.pretrained is not None and self._pretrained is None:
            self._pretrained = self._pretraining_model()
        for path in (self.init_audiomae, self.init_marlin):
            if path is not None:
                read_state_dict(path, trusted=self.trusted_pickle)

    def sources(self) -> dict:
        """The sha256 of each weights file the options name (None for a file not there yet: loading says why)."""
        files = {"weights": self.weights, "pretrained": self.pretrained, "init_audiomae": self.init_audiomae,
                 "init_marlin": self.init_marlin}
        return {name: sha256_file_cached(path) if Path(path).is_file() else None
                for name, path in files.items() if path is not None}

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
            batches = [pairs[start:start + self.batch_size] for start in range(0, len(pairs), self.batch_size)]
            host = ((torch.stack([clips[c][0][w] for c, w in batch]),  # uint8 frames: a quarter of the bytes
                     None if visual_only else torch.stack([clips[c][1][w] for c, w in batch])) for batch in batches)
            outputs = []  # kept on the device until all batches are queued: no sync between batches
            for batch, (video, audio) in zip(batches, ahead_on_device(host, device)):
                video = video.float().div_(255.0)
                with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda"):
                    logits = model.visual_logits(video) if visual_only else model(audio, video)
                outputs.append((batch, logits[:, 0].float()))
            for batch, logits in outputs:
                for (c, _), value in zip(batch, logits.cpu()):
                    results[c].append(value)
        return [torch.stack(r).numpy().astype(np.float64) for r in results]

    def score_windows(self, clip: "Clip") -> np.ndarray:
        return self.window_logits([self.windows(clip)])[0]

    def score(self, clip: "Clip") -> float:
        return self.score_batch([clip])[0]

    def score_batch(self, clips: Sequence["Clip"]) -> list[float]:
        """sigmoid(mean of the window logits) of each clip; windows of all clips share the batches."""
        logits = self.window_logits([self.windows(clip) for clip in clips])
        return [float(expit(aggregate_windows(x, self.aggregation))) for x in logits]

    # -- learning and state -----------------------------------------------------------------------
    def fit(self, train: "ClipSet", val: "ClipSet", seed: int, device: str | None = None) -> "HAVICDetector":
        """Pre-train on the real training clips if asked (pretrain_epochs), then fine-tune, selecting the
        epoch on `val` only (a seeded hold-out of `train` when `val` is empty). `device` moves the
        detector first, as `to` does."""
        from . import training

        if device is not None:
            self.to(device)
        self.check_can_fit()
        cfg, dev = self.model_config(), str(self.torch_device)
        store = training.ClipStore(train, cfg, pad_short=self.pad_short)
        directory = self.training_dir
        pretrained = self._pretraining_model()
        self.history = {}
        if self.pretrain_epochs > 0:
            self.history["pretrain"] = training.pretrain(
                pretrained, store, seed=seed, device=dev, epochs=self.pretrain_epochs,
                batch_size=self.pretrain_batch_size, lr=self.pretrain_lr, warmup_epochs=self.warmup_epochs,
                pad_short=self.pad_short, grad_checkpointing=self.grad_checkpointing,
                directory=None if directory is None else directory / "pretrain")
        model = self._finetuning_model(pretrained)
        del pretrained
        self.history["finetune"] = training.finetune(
            model, store, val, seed=seed, device=dev, epochs=self.epochs, batch_size=self.train_batch_size,
            lr=self.lr, head_lr=self.head_lr, restart_epochs=self.restart_epochs, spec_freq_mask=self.spec_freq_mask,
            spec_time_mask=self.spec_time_mask, eval_batch_size=self.batch_size, pad_short=self.pad_short,
            grad_checkpointing=self.grad_checkpointing, directory=None if directory is None else directory / "finetune")
        self._place(model)
        return self

    def check_can_fit(self) -> None:
        """Refuse to fine-tune the full model from a random initialisation unless from_scratch."""
        if (self.needs_pretraining and not self.from_scratch and self.weights is None and self.pretrained is None
                and self.pretrain_epochs == 0):
            raise ValueError(
                f"{self.name} fine-tunes a pre-trained model, and none was given. Pass -o pretrained=PATH (the authors' "
                f"pre-training checkpoint, or DIR/pretrain.safetensors from `avbench havic pretrain`), -o weights=PATH "
                f"(fine-tune further from a fine-tuned checkpoint) or -o pretrain_epochs=N (pre-train on the real "
                f"training clips first). Fine-tuning a randomly initialised ViT-B is not the method; "
                f"-o from_scratch=true does it anyway.")

    def _pretraining_model(self) -> HAVICPretrain | None:
        """The model pre-training starts from (or None when there is none): `pretrained`, or a seeded random
        one initialised from AudioMAE / MARLIN when pretrain_epochs > 0."""
        cfg = self.model_config()
        if self._pretrained is not None:
            model, self._pretrained = self._pretrained, None
            return model
        if self.pretrained is not None:
            return load_pretraining(self.pretrained, sha256=self.pretrained_sha256, config=cfg,
                                    trusted=self.trusted_pickle)
        if self.weights is not None or self.pretrain_epochs == 0:
            return None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = HAVICPretrain(cfg)
        self._initialise(model)
        return model

    def _finetuning_model(self, pretrained: HAVICPretrain | None) -> HAVIC:
        """The model fine-tuning starts from: the `weights`, or a seeded random one given the encoders and
        interaction module of `pretrained` (or, with no pre-training, AudioMAE / MARLIN encoders)."""
        if self.weights is not None:
            return self.model
        model = self._build(load_weights=False)
        if pretrained is not None:
            transfer_pretrained(pretrained.cpu(), model)
        else:
            self._initialise(model)
        return model

    def _initialise(self, model: HAVIC | HAVICPretrain) -> None:
        if self.init_audiomae is not None:
            init_from_audiomae(model, self.init_audiomae, trusted=self.trusted_pickle)
        if self.init_marlin is not None:
            init_from_marlin(model, self.init_marlin, trusted=self.trusted_pickle)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: v.detach().float().cpu().numpy() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        with torch.device("meta"):  # the state replaces every tensor: no random initialisation needed
            model = HAVIC(self.model_config())
        load_strict(model, {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, f"{self.name} state",
                    assign=True)
        self._place(model)

    @classmethod
    def load(cls, path: Path | str, expected_sha256: str | None = None, **options) -> "HAVICDetector":
        """A saved detector directory (config.json + state.npz), or a weights file in the authors' format."""
        path = Path(path)
        if path.is_file() and path.suffix in WEIGHT_SUFFIXES:
            return cls(**{**options, "weights": str(path), "weights_sha256": expected_sha256})
        if path.is_file():
            raise ValueError(f"{path}: not a {cls.name} checkpoint; give a weights file ({', '.join(WEIGHT_SUFFIXES)}) "
                             f"or a directory saved by avbench")
        return super().load(path, expected_sha256, **options)


class HAVICTinyDetector(HAVICDetector):
    """HAVIC at `HAVICConfig.tiny()` (32 px faces, 8-frame windows): fast enough for tests on a CPU."""

    name: ClassVar[str] = "havic_tiny"
    published_as: ClassVar[tuple[str, ...]] = ()
    input_spec = InputSpec(fps=5.0, audio=True, face_size=HAVICConfig.tiny().image_size, frames=False, max_seconds=10.0,
                           audio_optional=True)
    #: A few epochs at learning rates a small random network learns with; the time mask scaled from
    #: 100 of 1024 fbank frames to 6 of the tiny window's 64 (the 128 mel bins are the base's).
    training_defaults: ClassVar[dict] = {
        **HAVICDetector.training_defaults, "pretrain_epochs": 1, "pretrain_batch_size": 8, "pretrain_lr": 1e-3,
        "warmup_epochs": 0.0, "epochs": 5, "train_batch_size": 8, "lr": 1e-3, "head_lr": 1e-3, "spec_time_mask": 6,
    }
    needs_pretraining: ClassVar[bool] = False

    @classmethod
    def model_config(cls) -> HAVICConfig:
        return HAVICConfig.tiny()
