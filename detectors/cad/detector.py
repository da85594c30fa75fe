"""The registered detectors `cad` (the paper's size, from the CLIP and Whisper weight files) and
`cad_tiny` (the CPU twin on the harness's tiny backbones)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from avbench.detector import Detector, InputSpec
from avbench.io import sha256_file_cached
from avbench.metrics import AGGREGATIONS, aggregate_windows

from . import training
from .model import CAD, WEIGHTS_HINT, CADConfig, backbone_files

if TYPE_CHECKING:
    from avbench.clips import Clip
    from avbench.loader import ClipSet

#: CADConfig fields a user sets as detector options (-o NAME=VALUE): the ablation switches of Tables 4-5.
ABLATIONS = ("video_only", "audio_only", "use_align_loss", "use_cross_attention", "freeze_align", "use_distill",
             "distill_loss", "kd_direction", "align_on", "align_video_tokens")
#: How Tables 4-5 name the model whose one option differs from the full CAD (leaderboards/published.csv).
ABLATION_ROWS = {("video_only", True): "CAD only video", ("use_align_loss", False): "CAD w/o alignment",
                 ("use_cross_attention", False): "CAD w/o cross attention",
                 ("freeze_align", False): "CAD w/o frozen model", ("use_distill", False): "CAD w/o distillation",
                 ("distill_loss", "kl"): "CAD SimSiam replaced by KL"}
#: Key of the state file that records what each backbone was built from.
BACKBONE_KEY = "backbone."


class CADDetector(Detector):
    """CAD (seed paper 004, Du et al.) behind score(clip): cross-modal alignment (KL between frozen
    CLIP and frozen Whisper features through cross-attention) and distillation between a CLIP with
    spatio-temporal adapters and a Whisper with LoRA, read by one classifier head.

    A clip is read as 25 fps 224 px face crops (centre crops where no face is found, declared) and
    16 kHz audio. Each started 30 s of the clip is a sample: 16 frames in four groups of four spread
    over its frames (a shorter clip repeats its last frame, declared) and its audio as Whisper's
    30 s log-Mel with the valid frames masked. score = the `aggregation` of the samples' fake
    logits (default mean_prob: the mean of their softmax P(fake)); only the head is used, the
    losses are training-only. A clip without audio (a +missing_audio protocol, or a dataset with
    no audio track such as FaceForensics++ and Celeb-DF) is scored on a silent track of its length
    with the padding mask as usual, declared `silent_track` (the paper does not say how it tested on
    FaceShifter and Celeb-DF).

    Options:
    - clip_weights: open_clip's ViT-B-16 openai weights (open_clip_model.safetensors of the hub repo
      timm/vit_base_patch16_clip_224.openai: the file, its folder or the hub id once cached);
      whisper_weights: openai-whisper's small.pt (or "small" once in whisper's cache). Their sha256
      go into the saved state and are checked when it is loaded: a model trained on other backbone
      files is refused. random_init: the paper's sizes with random backbones (benchmarks only).
    - the ablations of Tables 4-5 (CADConfig): video_only, audio_only, use_align_loss,
      use_cross_attention, freeze_align (false: "w/o frozen model"), use_distill, distill_loss
      (simsiam | kl), kd_direction (symmetric | audio_to_video), align_on (all | real_only),
      align_video_tokens (cls | patch). A model with one of the paper's ablations is matched to its
      published row (ABLATION_ROWS); other combinations to none.
    - aggregation (metrics.AGGREGATIONS), max_windows (30 s windows scored per clip; None: all).
    - epochs, train_batch_size, lr, weight_decay, augment: training (training.py: Adam, constant
      lr, StA's augmentations, best validation AUC); batch_size: samples per forward pass when
      scoring; seed: initialisation of everything no weights file sets.
    """

    name: ClassVar[str] = "cad"
    modalities: ClassVar[tuple[str, ...]] = ("audio", "video")
    trains: ClassVar[bool] = True
    published_as: ClassVar[tuple[str, ...]] = ("CAD",)
    version: ClassVar[str] = "1"
    scores_are_probabilities: ClassVar[bool] = True
    #: Training options left unset take these (StA's settings, spec section 4).
    training_defaults: ClassVar[dict] = {"epochs": 30, "train_batch_size": 8, "lr": 2e-4}

    def __init__(self, clip_weights: str | None = None, whisper_weights: str | None = None, random_init: bool = False,
                 video_only: bool = False, audio_only: bool = False, use_align_loss: bool = True,
                 use_cross_attention: bool = True, freeze_align: bool = True, use_distill: bool = True,
                 distill_loss: str = "simsiam", kd_direction: str = "symmetric", align_on: str = "all",
                 align_video_tokens: str = "cls", aggregation: str = "mean_prob", max_windows: int | None = None,
                 epochs: int | None = None, train_batch_size: int | None = None, lr: float | None = None,
                 weight_decay: float = 5e-4, augment: bool = True, batch_size: int = 8, seed: int = 0):
        given = {"epochs": epochs, "train_batch_size": train_batch_size, "lr": lr}
        epochs, train_batch_size, lr = (self.training_defaults[k] if v is None else v for k, v in given.items())
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation is one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
        for option, value in (("epochs", epochs), ("train_batch_size", train_batch_size), ("batch_size", batch_size),
                              ("max_windows", 1 if max_windows is None else max_windows)):
            if value < 1:
                raise ValueError(f"{option} must be >= 1, got {value}")
        self.clip_weights, self.whisper_weights = (None if w is None else str(w) for w in (clip_weights, whisper_weights))
        self.random_init = bool(random_init)
        self.video_only, self.audio_only, self.use_align_loss = video_only, audio_only, use_align_loss
        self.use_cross_attention, self.freeze_align, self.use_distill = use_cross_attention, freeze_align, use_distill
        self.distill_loss, self.kd_direction, self.align_on = distill_loss, kd_direction, align_on
        self.align_video_tokens, self.aggregation, self.max_windows = align_video_tokens, aggregation, max_windows
        self.epochs, self.train_batch_size, self.lr = epochs, train_batch_size, lr
        self.weight_decay, self.augment, self.batch_size, self.seed = weight_decay, bool(augment), batch_size, seed
        self.cfg = self.model_config()  # every option checked now, before any clip
        self.published_as = self.paper_rows()
        self.input_spec = InputSpec(fps=None if audio_only else 25.0, audio=not video_only,
                                    face_size=None if audio_only else 224, frames=audio_only,
                                    no_face="fail" if audio_only else "centre_crop")
        self._model: CAD | None = None

    def paper_rows(self) -> tuple[str, ...]:
        """The published names of this model: the class's for the full CAD, the ablation's row when
        exactly one of the paper's ablations is set (ABLATION_ROWS), none for any other combination."""
        changed = [(name, getattr(self, name)) for name in ABLATIONS if getattr(self, name) != getattr(CADConfig, name)]
        if not type(self).published_as or not changed:
            return type(self).published_as
        return (ABLATION_ROWS[changed[0]],) if len(changed) == 1 and changed[0] in ABLATION_ROWS else ()

    def model_config(self) -> CADConfig:
        ablations = {name: getattr(self, name) for name in ABLATIONS}
        if self.random_init:
            return CADConfig(random_init=True, seed=self.seed, **ablations)
        missing = [option for option, path, used in (("clip_weights", self.clip_weights, not self.audio_only),
                                                     ("whisper_weights", self.whisper_weights, not self.video_only))
                   if used and path is None]
        if missing:
            raise FileNotFoundError(f"{self.name} needs its backbones' weights: give "
                                    + ", ".join(f"-o {m}=PATH" for m in missing) + f" ({WEIGHTS_HINT})")
        return CADConfig(clip_weights=self.clip_weights, whisper_weights=self.whisper_weights, seed=self.seed,
                         **ablations)

    # -- the network ---------------------------------------------------------------------------------------
    @property
    def model(self) -> CAD:
        if self._model is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                self._model = CAD(self.cfg)
            self._model.to(self.device).eval()
        return self._model

    def prepare(self, training: bool) -> None:
        """Before the first clip: the backbone files are found and read (strictly loaded)."""
        self.model

    def backbones(self) -> dict[str, str]:
        """What each backbone is built from: its file's sha256, or how it was made without one."""
        if self.cfg.tiny_backbones or self.cfg.random_init:
            kind = "tiny" if self.cfg.tiny_backbones else "random_init"
            return {name: f"{kind}(seed={self.seed})" for name, used in
                    (("clip", not self.cfg.audio_only), ("whisper", not self.cfg.video_only)) if used}
        return {name: sha256_file_cached(path) for name, path in backbone_files(self.cfg).items()}

    def sources(self) -> dict:
        return self.backbones()

    # -- training ------------------------------------------------------------------------------------------
    def fit(self, train: "ClipSet", val: "ClipSet", seed: int, device: str | None = None) -> "CADDetector":
        if device is not None:
            self.to(device)
        self.history = training.fit(
            self.model, train, val, seed=seed, device=self.device, epochs=self.epochs,
            batch_size=self.train_batch_size, lr=self.lr, weight_decay=self.weight_decay, augment=self.augment,
            eval_batch_size=self.batch_size, directory=self.training_dir)
        self._model.eval()
        return self

    # -- scoring -------------------------------------------------------------------------------------------
    def score(self, clip: "Clip") -> float:
        return self.score_batch([clip])[0]

    def score_batch(self, clips) -> list[float]:
        """The windows of all `clips` in batches of `batch_size` on the device, then each clip's aggregate."""
        clips = list(clips)
        samples = [training.clip_samples(clip, self.cfg, self.max_windows) for clip in clips]
        for clip, sample in zip(clips, samples):
            clip.declare(*sample.fallbacks)
        stacked = training.Samples(*(None if parts[0] is None else torch.cat(parts) for parts in
                                     ([s.frames for s in samples], [s.mel for s in samples],
                                      [s.valid for s in samples])), ())
        p = training.fake_probabilities(self.model, stacked, self.batch_size, torch.device(self.device)).numpy()
        p = np.clip(p, 1e-12, 1 - 1e-12)
        logits = np.split(np.log(p) - np.log1p(-p), np.cumsum([len(s.valid) for s in samples])[:-1])
        return [float(1 / (1 + np.exp(-aggregate_windows(x, self.aggregation)))) for x in logits]

    # -- learned state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """The trainable tensors only, and what each backbone was built from (BACKBONE_KEY + name)."""
        state = {k: v.detach().cpu().numpy() for k, v in self.model.trainable_state_dict().items()}
        return state | {BACKBONE_KEY + name: np.array(source) for name, source in self.backbones().items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Refuses a state trained on other backbone files (or none of theirs) before loading it strictly."""
        saved = {k[len(BACKBONE_KEY):]: str(v) for k, v in state.items() if k.startswith(BACKBONE_KEY)}
        here = self.backbones()
        if saved != here:
            raise ValueError(f"{self.name}: the state was trained on backbones {saved}, these options build {here}; "
                             "give the weight files it was trained on")
        self.model.load_trainable_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()
                                              if not k.startswith(BACKBONE_KEY)})


class CADTinyDetector(CADDetector):
    """CAD at `CADConfig.tiny()` (harness tiny CLIP and Whisper, every CAD size shrunk, 16 frames a
    sample as the paper): trains and scores the demo corpus on a CPU in minutes. Given
    clip_weights and whisper_weights (tiny towers saved to files), it reads them as the full model
    reads its own, sha256 included."""

    name: ClassVar[str] = "cad_tiny"
    published_as: ClassVar[tuple[str, ...]] = ()
    #: A few epochs at a learning rate a small random network learns with.
    training_defaults: ClassVar[dict] = {"epochs": 3, "train_batch_size": 4, "lr": 1e-3}

    def model_config(self) -> CADConfig:
        files = self.clip_weights is not None or self.whisper_weights is not None
        return CADConfig.tiny(seed=self.seed, tiny_backbones=not files, clip_weights=self.clip_weights,
                              whisper_weights=self.whisper_weights, **{name: getattr(self, name) for name in ABLATIONS})

