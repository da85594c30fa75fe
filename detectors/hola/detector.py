"""The registered detectors `hola` (the paper's size, from an AVF-MAE++ base checkpoint) and
`hola_tiny` (the CPU twin)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from avbench.detector import Detector, InputSpec
from avbench.io import sha256_file_cached
from avbench.weights import load_strict

from . import training
from .checkpoint import load_avfmae
from .model import HOLA, HOLAConfig

if TYPE_CHECKING:
    from avbench.clips import Clip
    from avbench.loader import ClipSet, UnlabeledPool

log = logging.getLogger(__name__)

#: HOLAConfig fields a user sets as detector options: the ablation switches of Table 3 and the silent points.
MODEL_OPTIONS = ("use_icmi", "use_lgcf", "use_refiner", "audio_frontend", "lgcf_embed")
#: How Table 3 (cumulative) names each combination of the switches (use_icmi, use_lgcf, use_refiner, pssi).
TABLE_3_ROWS = {(False, False, False, False): "HOLA baseline", (True, False, False, False): "HOLA + ICMI",
                (True, True, False, False): "HOLA + ICMI + LGCF",
                (True, True, True, False): "HOLA + ICMI + LGCF + refiner",
                (True, True, True, True): "HOLA + ICMI + LGCF + refiner + PSSI"}


class HOLADetector(Detector):
    """HOLA (seed paper 003) behind score(clip): AVF-MAE++ base video and audio encoders, their patch
    tokens projected to L = 16, three ICMI layers, LGCF, the pyramid-like refiner and a two-class head.

    A clip is read as its 25 fps frames (whole frames: AV1M++ clips are face tracks), resized to
    224 x 224; 16 frames, one per equal segment of the whole clip, cropped to 160 px; its whole audio
    as the backbone's 128-bin filterbank resampled to 256 frames (preprocess.py; `audio_frontend=
    mfcc32` for the paper's MFCC input with a fresh audio encoder). score = softmax P(fake) of one
    view (the centre frame of each segment, the centre crop). A clip shorter than 16 frames repeats
    its last frame, and one without audio gets a silent track: both declared (Clip.fallbacks).

    Options:
    - weights: an AVF-MAE++ checkpoint (its `encoder.*` and `encoder_audio.*` tensors, loaded strictly;
      its sha256 is in the run's sources), e.g. from `avbench hola pretrain`; trusted_pickle: accept a
      torch file that needs more than tensors. Without weights the encoders start random: the full
      model refuses to train so (not the method), unless random_init=true (benchmarks, smoke tests).
    - use_icmi, use_lgcf, use_refiner (Table 3's ablations; all off is the spec's baseline),
      audio_frontend (fbank128 | mfcc32), lgcf_embed (none | modality | modality+sinusoid).
    - epochs, train_batch_size, lr (peak; lr_scale=linear256 multiplies it by batch / 256 as upstream),
      min_lr, weight_decay, layer_decay: fine-tuning (training.py); the epoch is chosen on a dev slice
      of 2% of the training speakers, never on a reported split. random_erasing (a probability),
      mixup and cutmix (Beta alphas), label_smoothing: upstream's regularisers, off (0) by default
      (upstream: 0.25, 0.8, 1.0, 0.1).
    - pssi: pseudo-label self-training after fine-tuning, on the protocol's unlabelled pool (off by
      default; a pool that overlaps a scored test set makes the run transductive, and it is listed
      apart); pssi_rounds (5, fixed beforehand), pssi_select (fixed | dev: keep the round of best dev
      AUC), pssi_tau (1e-6: the paper keeps the clips scored exactly 0 or 1), pssi_epochs_per_round (5),
      pssi_lr (1.5e-5), pssi_accumulate (keep earlier rounds' pseudo-labels). The tiny twin's PSSI
      defaults are the spec's: 2 rounds of 1 epoch, tau 0.45 (so that tiny models select anything).
    - temporal_mode: "uniform" (the paper's: 16 frames over the whole clip) or "window" (2.56 s
      windows like the pre-training's, every 1.28 s; window_aggregation max or mean of their P(fake)).
    - tta_views: views averaged per clip when scoring (1, the paper's: the centre frame of each
      segment; V: the frames at (v + 0.5) / V of each segment, mean of the softmax probabilities, as
      upstream's test-time augmentation over temporal offsets).
    - batch_size: clips per forward pass when scoring; seed: initialisation of what no weights set.
    """

    name: ClassVar[str] = "hola"
    modalities: ClassVar[tuple[str, ...]] = ("audio", "video")
    trains: ClassVar[bool] = True
    version: ClassVar[str] = "1"
    scores_are_probabilities: ClassVar[bool] = True
    #: Training options left unset take these (the paper's: 30 epochs, batch 64, peak lr 1.5e-4).
    training_defaults: ClassVar[dict] = {"epochs": 30, "train_batch_size": 64, "lr": 1.5e-4, "pssi_rounds": 5,
                                         "pssi_tau": 1e-6, "pssi_epochs_per_round": 5}
    #: The full model does not fine-tune from random encoders.
    needs_backbone_weights: ClassVar[bool] = True
    #: Whether the detector's rows are the paper's (Table 3 names); the tiny twin claims none.
    claims_published: ClassVar[bool] = True

    def __init__(self, weights: str | None = None, trusted_pickle: bool = False, random_init: bool = False,
                 use_icmi: bool = True, use_lgcf: bool = True, use_refiner: bool = True,
                 audio_frontend: str = "fbank128", lgcf_embed: str = "none", epochs: int | None = None,
                 train_batch_size: int | None = None, lr: float | None = None, lr_scale: str = "none",
                 min_lr: float = 1e-6, weight_decay: float = 0.02, layer_decay: float = 0.75,
                 random_erasing: float = 0.0, mixup: float = 0.0, cutmix: float = 0.0, label_smoothing: float = 0.0,
                 pssi: bool = False,
                 pssi_rounds: int | None = None, pssi_select: str = "fixed", pssi_tau: float | None = None,
                 pssi_epochs_per_round: int | None = None, pssi_lr: float = 1.5e-5, pssi_accumulate: bool = False,
                 temporal_mode: str = "uniform", window_aggregation: str = "max", tta_views: int = 1,
                 batch_size: int = 16, seed: int = 0):
        given = {"epochs": epochs, "train_batch_size": train_batch_size, "lr": lr, "pssi_rounds": pssi_rounds,
                 "pssi_tau": pssi_tau, "pssi_epochs_per_round": pssi_epochs_per_round}
        epochs, train_batch_size, lr, pssi_rounds, pssi_tau, pssi_epochs_per_round = (
            self.training_defaults[k] if v is None else v for k, v in given.items())
        if lr_scale not in ("none", "linear256"):
            raise ValueError(f"lr_scale is 'none' (the peak lr as given) or 'linear256' (x batch / 256), got {lr_scale!r}")
        if temporal_mode not in ("uniform", "window") or window_aggregation not in ("max", "mean"):
            raise ValueError(f"temporal_mode is 'uniform' or 'window', window_aggregation 'max' or 'mean'; got "
                             f"{temporal_mode!r}, {window_aggregation!r}")
        if pssi_select not in ("fixed", "dev"):
            raise ValueError(f"pssi_select is 'fixed' (pssi_rounds rounds) or 'dev' (the best dev round), got {pssi_select!r}")
        if not 0 < pssi_tau < 0.5:
            raise ValueError(f"pssi_tau is in (0, 0.5): a pseudo-label needs P(fake) >= 1 - tau or <= tau, got {pssi_tau}")
        for option, value in (("epochs", epochs), ("train_batch_size", train_batch_size), ("batch_size", batch_size),
                              ("tta_views", tta_views),
                              ("pssi_rounds", pssi_rounds), ("pssi_epochs_per_round", pssi_epochs_per_round)):
            if value < 1:
                raise ValueError(f"{option} must be >= 1, got {value}")
        self.weights = None if weights is None else str(weights)
        self.trusted_pickle, self.random_init = bool(trusted_pickle), bool(random_init)
        self.use_icmi, self.use_lgcf, self.use_refiner = use_icmi, use_lgcf, use_refiner
        self.audio_frontend, self.lgcf_embed = audio_frontend, lgcf_embed
        self.epochs, self.train_batch_size, self.lr, self.lr_scale = epochs, train_batch_size, lr, lr_scale
        self.min_lr, self.weight_decay, self.layer_decay = min_lr, weight_decay, layer_decay
        for option, value, high in (("random_erasing", random_erasing, 1.0), ("label_smoothing", label_smoothing, 1.0),
                                    ("mixup", mixup, math.inf), ("cutmix", cutmix, math.inf)):
            if not 0 <= value <= high:
                raise ValueError(f"{option} is in [0, {high:g}] (0: off), got {value}")
        self.random_erasing, self.mixup, self.cutmix, self.label_smoothing = random_erasing, mixup, cutmix, label_smoothing
        self.pssi, self.pssi_rounds, self.pssi_select, self.pssi_tau = bool(pssi), pssi_rounds, pssi_select, pssi_tau
        self.pssi_epochs_per_round, self.pssi_lr, self.pssi_accumulate = pssi_epochs_per_round, pssi_lr, pssi_accumulate
        self.temporal_mode, self.window_aggregation = temporal_mode, window_aggregation
        self.tta_views, self.batch_size, self.seed = tta_views, batch_size, seed
        self.cfg = self.model_config()  # every option checked now, before any clip
        self.uses_pool = self.pssi
        size = self.cfg.video.input_size[1]
        self.input_spec = InputSpec(fps=25.0, audio=True, frame_size=round(size * 224 / 160))
        self.published_as = self.paper_rows()
        self._model: HOLA | None = None
        self._examples: tuple[list, list] | None = None

    def model_config(self) -> HOLAConfig:
        return HOLAConfig(**{name: getattr(self, name) for name in MODEL_OPTIONS})

    def paper_rows(self) -> tuple[str, ...]:
        """The published names of this model: its row of the cumulative Table 3 (TABLE_3_ROWS; with
        PSSI also Table 1's "HOLA"), on the paper's inputs only; none for other combinations."""
        row = TABLE_3_ROWS.get((self.use_icmi, self.use_lgcf, self.use_refiner, self.pssi))
        if not self.claims_published or row is None or (self.audio_frontend, self.lgcf_embed) != ("fbank128", "none"):
            return ()
        return ("HOLA", row) if self.pssi else (row,)

    # -- the network ---------------------------------------------------------------------------------------
    @property
    def model(self) -> HOLA:
        if self._model is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                model = HOLA(self.cfg)
            if self.weights is not None:
                report = load_avfmae(model.video_encoder, model.audio_encoder, self.weights, trusted=self.trusted_pickle)
                log.info("%s: %d video and %d audio encoder tensors loaded from %s; %d pre-training tensors ignored",
                         self.name, report.video_keys, report.audio_keys, report.path, len(report.ignored))
                if report.ignored_unknown:
                    log.warning("%s: %s holds tensors of no known part, ignored: %s", self.name, report.path,
                                ", ".join(report.ignored_unknown[:20]))
            self._model = model.to(self.device).eval()
        return self._model

    def prepare(self, training: bool) -> None:
        """Before the first clip: the checkpoint is read and strictly loaded; the full model refuses to
        fine-tune from random encoders."""
        if training and self.needs_backbone_weights and self.weights is None and not self.random_init:
            raise FileNotFoundError(
                f"{self.name} fine-tunes AVF-MAE++ base encoders: give -o weights=PATH (an AVF-MAE++ checkpoint with "
                "encoder.* and encoder_audio.* tensors; its public release is unconfirmed, `avbench hola pretrain` "
                "writes one) or -o random_init=true to train from random encoders knowingly")
        self.model

    def sources(self) -> dict:
        if self.weights is None:
            return {}
        return {"weights": sha256_file_cached(self.weights) if Path(self.weights).is_file() else None}

    # -- training ------------------------------------------------------------------------------------------
    def recipe(self) -> training.Recipe:
        lr = self.lr * (self.train_batch_size / 256 if self.lr_scale == "linear256" else 1)
        return training.Recipe(self.epochs, self.train_batch_size, lr, self.min_lr, self.weight_decay,
                               self.layer_decay, self.batch_size,
                               training.Regularisation(self.random_erasing, self.mixup, self.cutmix, self.label_smoothing),
                               self.sampling())

    def sampling(self) -> training.Sampling:
        return training.Sampling(self.temporal_mode, self.tta_views, aggregation=self.window_aggregation)

    def fit(self, train: "ClipSet", val: "ClipSet", seed: int, device: str | None = None) -> "HOLADetector":
        """Fine-tune on `train` minus its dev slice (`val` is not used: the protocol's val split may be
        the reported one, as AV1M++'s is)."""
        if device is not None:
            self.to(device)
        history, examples, dev = training.finetune(self.model, train, seed=seed, device=self.device,
                                                   recipe=self.recipe(), directory=self.training_dir)
        self._examples = (examples, dev)
        labels = [e.label for e in examples]
        self.history = {"finetune": history, "effective_lr": self.recipe().lr, "total_batch": self.train_batch_size,
                        "class_ratio": {"real": labels.count(0), "fake": labels.count(1)}, "dev_clips": len(dev)}
        self._model.eval()
        return self

    def adapt(self, train: "ClipSet", val: "ClipSet", pool: "UnlabeledPool", seed: int,
              device: str | None = None) -> list[dict[str, int]]:
        """PSSI on the pool (after fit, in the same process: it trains on fit's examples plus the pool's
        pseudo-labelled clips, selecting on the same dev slice)."""
        if self._examples is None:
            raise RuntimeError(f"{self.name}: adapt follows fit")
        pssi = training.PSSI(self.pssi_rounds, self.pssi_tau, self.pssi_epochs_per_round, self.pssi_lr,
                             self.pssi_accumulate, self.pssi_select)
        rounds, histories = training.pseudo_label_rounds(
            self.model, *self._examples, pool, seed=seed, device=device or self.device, recipe=self.recipe(),
            pssi=pssi, directory=None if self.training_dir is None else self.training_dir / "pssi")
        self.history = {**(self.history or {}), "pssi": histories}
        self._model.eval()
        return rounds

    # -- scoring -------------------------------------------------------------------------------------------
    def score(self, clip: "Clip") -> float:
        return self.score_batch([clip])[0]

    def score_batch(self, clips) -> list[float]:
        """Each clip's P(fake) (training.clip_probabilities: tta views or windows), every view of every
        clip batched on the device."""
        return training.clip_probabilities(self.model, list(clips), self.sampling(), self.batch_size,
                                           torch.device(self.device))

    # -- learned state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        model = HOLA(self.cfg)
        load_strict(model, {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, f"{self.name} state")
        self._model = model.to(self.device).eval()


class HOLATinyDetector(HOLADetector):
    """HOLA at `HOLAConfig.tiny()` (4 frames of 32 px, a 32 x 16 filterbank, width 32): fine-tunes, runs
    PSSI and scores the demo corpus on a CPU in seconds."""

    name: ClassVar[str] = "hola_tiny"
    needs_backbone_weights: ClassVar[bool] = False
    claims_published: ClassVar[bool] = False
    #: A few epochs at a learning rate a small random network learns with; PSSI as the spec's tiny twin.
    training_defaults: ClassVar[dict] = {"epochs": 3, "train_batch_size": 4, "lr": 1e-3, "pssi_rounds": 2,
                                         "pssi_tau": 0.45, "pssi_epochs_per_round": 1}

    def model_config(self) -> HOLAConfig:
        return HOLAConfig.tiny(**{name: getattr(self, name) for name in MODEL_OPTIONS})
