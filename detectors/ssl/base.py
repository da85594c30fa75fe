"""What every detector on frozen self-supervised features shares (seed paper 001).

`FeatureDetector` turns its options into backbones, reads their (cached) 25 Hz features for batches
of clips, and names the paper's table row its configuration reproduces. `fit_module` trains the
trained detectors on avbench.training's Trainer: Adam, mini-batches of whole clips, early stopping on
the validation loss with the best weights kept, as the paper's Supp. A describes for all of them.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Callable, ClassVar, Sequence, TypeVar

import numpy as np

from avbench.clips import Clip, ClipError
from avbench.detector import Detector
from avbench.detectors.ssl.backbones import get_backbone
from avbench.detectors.ssl.features import FEATURE_RATE, Backbone, FeatureSource, merged_spec

if TYPE_CHECKING:
    import torch

    from avbench.clips import ClipRef
    from avbench.loader import ClipSet, MediaLoader

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Clips per backbone pass while reading training and validation features.
EXTRACT_BATCH = 16

#: The paper's names for features (Tables 2 and 3), and for combinations of them (Table 3).
PAPER_FEATURE_NAMES = {
    "avhubert_a": "AV-HuBERT (A)", "avhubert_v": "AV-HuBERT (V)", "avhubert_av": "AV-HuBERT (AV)",
    "wav2vec2": "Wav2Vec2 XLS-R 2B", "clip": "CLIP ViT-L/14", "videomae": "VideoMAE-large",
}
PAPER_COMBINATION_NAMES = {
    frozenset({"avhubert_a", "avhubert_v"}): "AV-HuBERT (A+V)",
    frozenset({"avhubert_a", "clip"}): "AV-HuBERT (A) + CLIP",
    frozenset({"wav2vec2", "avhubert_v"}): "Wav2Vec2 + AV-HuBERT (V)",
    frozenset({"wav2vec2", "clip"}): "Wav2Vec2 + CLIP",
}
#: Features whose random-initialisation control the paper reports.
RANDOM_INIT_REPORTED = frozenset({"AV-HuBERT (A)", "AV-HuBERT (V)", "AV-HuBERT (A+V)"})


def paper_name(features: Sequence[str], random_init: bool) -> str | None:
    """The paper's row name for a detector on `features`, or None if the paper has no such row."""
    name = (PAPER_FEATURE_NAMES.get(features[0]) if len(features) == 1
            else PAPER_COMBINATION_NAMES.get(frozenset(features)))
    if name is None or not random_init:
        return name
    return f"{name} (random init.)" if name in RANDOM_INIT_REPORTED else None


class FeatureDetector(Detector):
    """A detector on the 25 Hz features of one or more frozen backbones.

    Options shared by every subclass (keyword arguments of its `__init__`):
    features: backbone names (avbench.detectors.ssl.backbones.BACKBONES).
    weights: where each backbone's weights are, {backbone: path}, or one path for all of them
    (the three AV-HuBERT streams share a checkpoint); None with `tiny`.
    layer: the backbones' layer (None: their default, the last). random_init: each backbone's
    architecture with random parameters, the paper's control. tiny: small random backbones
    that run offline. seed: the training seed, and the seed of tiny or random backbones.

    `aligned` detectors use several backbones' features frame by frame together, so each clip's
    features are trimmed at the end to the shortest (the paper's choice); the others take each
    backbone's features at its own length. `device` is where features and models are computed:
    the device given to `fit`, else "cpu"; it is not an option, so a checkpoint is device-free.
    """

    trains = True
    frame_rate = FEATURE_RATE
    aligned: ClassVar[bool] = True
    #: Fewest feature frames a clip must give (fewer: ClipError "too_short").
    min_frames: ClassVar[int] = 1
    #: Options that choose inputs or engineering, not the method: they never stop a detector from
    #: reproducing the paper's row (the features and random_init name the row instead).
    free_options: ClassVar[frozenset[str]] = frozenset({"features", "weights", "random_init", "tiny", "seed", "batch_size"})
    #: How the paper trained the method when its tables qualify the row by it (avbench.leaderboard.REGIMES).
    paper_regime: ClassVar[str | None] = None

    def __init__(self, features: Sequence[str], weights: dict[str, str] | str | None = None, layer: int | None = None,
                 random_init: bool = False, tiny: bool = False, seed: int = 0):
        if isinstance(features, str) or not features:
            raise ValueError(f"features must be a non-empty list of backbone names, got {features!r}")
        self.features = tuple(features)
        self.weights = dict(weights) if isinstance(weights, dict) else weights
        self.layer, self.random_init, self.tiny, self.seed = layer, random_init, tiny, seed
        self.device = "cpu"
        self.backbones: list[Backbone] = [
            get_backbone(name, weights=self._weights_of(name), layer=layer, tiny=tiny, random_init=random_init, seed=seed)
            for name in self.features]
        self.input_spec = merged_spec(self.backbones)
        self._sources = [FeatureSource(b) for b in self.backbones]

    def _weights_of(self, backbone: str) -> str | None:
        if isinstance(self.weights, dict):
            return self.weights.get(backbone)
        return self.weights

    # -- the paper's rows ----------------------------------------------------------------------
    @property
    def published_as(self) -> tuple[str, ...]:
        """The paper's name for this configuration: none for tiny backbones, for a combination or
        random control the paper did not run, or when a method option departs from its default."""
        if self.tiny or self.departs_from_defaults():
            return ()
        name = paper_name(self.features, self.random_init)
        if name and self.paper_regime:
            name = f"{name} [{self.paper_regime}]"
        return (name,) if name else ()

    def departs_from_defaults(self) -> bool:
        """True if an option outside free_options differs from its default (the preset's, for a named variant)."""
        defaults = {k: p.default for k, p in inspect.signature(type(self).__init__).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        return any(_plain(value) != _plain(defaults.get(key)) for key, value in self.config().items()
                   if key not in self.free_options)

    def sources(self) -> dict:
        """Each backbone as used (weights, layer, seed of a random one) and its fingerprint, which hashes the weights."""
        return {b.name: {**b.describe(), "fingerprint": b.fingerprint()} for b in self.backbones}

    # -- features ------------------------------------------------------------------------------
    def prepare(self, training: bool) -> None:
        """Build each backbone on the detector's device (weights read and checked) before the first
        clip; seconds for a large backbone, paid once per run even when every feature is cached."""
        for backbone in self.backbones:
            backbone.model(self.device)

    def use_loader(self, loader: "MediaLoader") -> None:
        self._sources = [FeatureSource(b, loader) for b in self.backbones]

    def needs_media(self, ref: "ClipRef", audio_removed: bool) -> bool:
        return not all(source.cached(ref, audio_removed) for source in self._sources)

    def clip_features(self, clips: Sequence[Clip]) -> list[tuple[np.ndarray, ...]]:
        """Per clip, one (T, D) array per backbone; one backbone pass over the whole batch.
        Raises ClipError for a clip that gives fewer than `min_frames` frames."""
        per_backbone = [source.features(clips, self.device) for source in self._sources]
        out = []
        for clip, arrays in zip(clips, zip(*per_backbone)):
            if self.aligned:
                n = min(len(a) for a in arrays)
                arrays = tuple(a[:n] for a in arrays)
            if min(len(a) for a in arrays) < self.min_frames:
                raise ClipError("too_short", f"{clip.ref.path}: gives {min(len(a) for a in arrays)} {FEATURE_RATE:g} Hz "
                                             f"frames of {', '.join(self.features)} features, {self.name} needs {self.min_frames}")
            out.append(arrays)
        return out

    def collect(self, clips: "ClipSet") -> tuple[list[tuple[np.ndarray, ...]], list["ClipRef"]]:
        """Features and refs of every usable clip of a ClipSet, read once before training. A clip
        whose features fail is recorded in `clips.failures` (the runner reports them) and left out."""
        features: list[tuple[np.ndarray, ...]] = []
        refs: list[ClipRef] = []
        batch: list[Clip] = []

        def flush():
            try:
                found = list(zip(batch, self.clip_features(batch)))
            except ClipError:  # one bad clip: read them one by one to keep the others
                found = []
                for clip in batch:
                    try:
                        found.append((clip, self.clip_features([clip])[0]))
                    except ClipError as err:
                        log.warning("%s: %s", self.name, err.message)
                        clips.failures[clip.ref.clip_id] = err
            for clip, f in found:
                features.append(f)
                refs.append(clip.ref)
            batch.clear()

        for clip in clips:
            batch.append(clip)
            if len(batch) == EXTRACT_BATCH:
                flush()
        if batch:
            flush()
        return features, refs


# -- training ------------------------------------------------------------------------------------------
def pad(arrays: Sequence[np.ndarray], device: str) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(B, T_max, D) float32 zero-padded at the end, and the (B, T_max) mask of real frames."""
    import torch

    n = max(len(a) for a in arrays)
    x = np.zeros((len(arrays), n, arrays[0].shape[1]), dtype=np.float32)
    mask = np.zeros((len(arrays), n), dtype=bool)
    for i, a in enumerate(arrays):
        x[i, :len(a)] = a
        mask[i, :len(a)] = True
    return torch.from_numpy(x).to(device), torch.from_numpy(mask).to(device)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Each frame (row) scaled to unit length; all-zero frames stay zero."""
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def fit_module(module: "torch.nn.Module", loss: Callable[["torch.nn.Module", list[T]], "torch.Tensor"],
               train: Sequence[T], val: Sequence[T], *, lr: float, batch_size: int, max_epochs: int, patience: int,
               seed: int, schedule: str | None = None) -> list[dict]:
    """Train `module` with Adam on avbench.training's Trainer; returns the history, one
    {epoch, loss, val_loss, lr, best, ...} per epoch.

    loss(module, items) is the mean loss of a mini-batch of training or validation items (clips).
    Each epoch visits the training items in a seeded random order, in mini-batches of `batch_size`,
    then computes the validation loss without gradients. Training stops after `patience` epochs
    without a better validation loss, or after `max_epochs`, and the module keeps the weights of its
    best epoch. schedule: None, "cosine" (annealed to 0 over max_epochs) or "plateau" (x0.1 after 5
    epochs without a better validation loss). Without validation items the training loss stands in.
    """
    import torch

    from avbench.training import Selection, Trainer

    optimiser = torch.optim.Adam(module.parameters(), lr=lr)
    if schedule is None:
        scheduler, every = None, "epoch"
    elif schedule == "cosine":
        scheduler, every = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max_epochs), "epoch"
    elif schedule == "plateau":
        scheduler, every = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=0.1, patience=5), "plateau"
    else:
        raise ValueError(f"schedule must be None, 'cosine' or 'plateau', got {schedule!r}")
    if not val:
        log.warning("no validation clips: early stopping watches the training loss")
    trainer = Trainer(epochs=max_epochs, schedule_every=every, select=Selection("loss", "min"), patience=patience)
    device = next(module.parameters()).device
    return trainer.fit(module, optimiser, scheduler, _ItemTask(module, loss, train, val, batch_size), seed=seed,
                       device=device, name=type(module).__name__)


class _ItemTask:
    """Mini-batches of whole items (clips' features) in a seeded order; validation by mean loss."""

    def __init__(self, module, loss, train: Sequence, val: Sequence, batch_size: int):
        self.module, self.loss, self.train, self.val, self.batch_size = module, loss, train, val, batch_size

    def epoch_jobs(self, generator) -> list[list]:
        import torch

        order = torch.randperm(len(self.train), generator=generator).tolist()
        return [[self.train[i] for i in order[k:k + self.batch_size]] for k in range(0, len(order), self.batch_size)]

    def make_batch(self, job: list) -> list:
        return job

    def losses(self, batch: list, job: list, generator) -> dict:
        return {"total": self.loss(self.module, batch)}

    def validate(self, record: dict) -> dict:
        import torch

        if not self.val:
            return {"loss": record["loss"]}
        self.module.eval()
        with torch.no_grad():
            total = sum(self.loss(self.module, self.val[k:k + self.batch_size]).item() * len(self.val[k:k + self.batch_size])
                        for k in range(0, len(self.val), self.batch_size))
        return {"loss": total / len(self.val)}


def state_to_numpy(module: "torch.nn.Module", prefix: str = "") -> dict[str, np.ndarray]:
    return {prefix + k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def load_numpy_state(module: "torch.nn.Module", state: dict[str, np.ndarray], prefix: str = "") -> None:
    """Load the arrays under `prefix` strictly: a missing or unexpected parameter is an error."""
    import torch

    module.load_state_dict({k[len(prefix):]: torch.from_numpy(np.asarray(v)) for k, v in state.items()
                            if k.startswith(prefix)}, strict=True)


def _plain(value):
    """Options compared as JSON would store them (a tuple option comes back from config.json as a list)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value
