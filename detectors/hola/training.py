"""HOLA fine-tuning and PSSI on avbench.training's Trainer (spec section 4).

Fine-tuning, where the paper is silent (the spec's defaults):
- cross-entropy on two classes, no label smoothing, no class balancing (the ratio is recorded);
- AdamW, betas (0.9, 0.999), eps 1e-8, weight decay 0.02 (none on biases, norms, position and
  region tokens), peak lr 1.5e-4 absolute (`lr_scale: linear256` multiplies it by batch / 256 as
  upstream does), cosine per step to 1e-6, no warm-up; layer-wise decay 0.75 over the encoders'
  blocks (a block at depth i of D learns at 0.75 ** (D + 1 - i) of the heads' rate); bf16 autocast
  on CUDA; no gradient clipping;
- augmentation: one random frame per segment, RandomResizedCrop and a horizontal flip (preprocess.py);
  upstream's random erasing, mixup, cutmix and label smoothing are flags, off (Regularisation;
  RandAugment is not offered);
- selection: the epoch of best AUC on a dev slice held out from the training clips (2% of whole
  speakers, seeded), never on a split the protocol reports.

PSSI (self-training on pseudo-labels, transductive when its pool is a test set): after
fine-tuning, each round scores the pool, keeps the clips the model is sure of (P(fake) >= 1 - tau:
fake, <= tau: real), and trains on the training clips plus those for `epochs_per_round` epochs
from the current weights at peak lr 1.5e-5, selecting on the dev slice; the pseudo-labels are
recomputed each round (`accumulate` keeps every earlier round's too). The number of rounds is fixed
beforehand (`rounds`), or with `select_rounds="dev"` the round of best dev AUC is kept. The pool is
an avbench.loader.UnlabeledPool: the detector never sees its labels.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avbench.clips import FRAMES_REPEATED, SILENT_TRACK, ClipError
from avbench.training import Selection, Trainer, autocast, chunks, clips_digest, erasing_rectangle, holdout

from .model import HOLA
from .preprocess import Crop, FrameSample, fbank128, frame_indices, mfcc32, video_tensor

if TYPE_CHECKING:
    from avbench.clips import Clip
    from avbench.loader import ClipSet, UnlabeledPool

SELECTION = Selection("auc", "max", tie_break=("loss", "min"))
#: Share of the training speakers held out as the dev slice.
DEV_FRACTION = 0.02


class Sampling(NamedTuple):
    """How a clip becomes the model's inputs (the spec's `temporal_mode`). uniform (default): one
    frame per equal segment of the whole clip and the whole clip's audio; scoring averages P(fake)
    over `tta_views` grids shifted within their segments. window: clips of 2.56 s like the
    pre-training's (16 frames `frame_stride` apart and their audio), every `hop` = half a window
    (the last one flush with the clip's end); training draws one window of each clip (labelled as
    the clip: a fake window may lack the fake segment), scoring takes the `aggregation` (max or
    mean) of the windows' P(fake)."""

    mode: str = "uniform"
    tta_views: int = 1
    frame_stride: int = 4
    aggregation: str = "max"


def window_starts(n: int, span: int) -> list[int]:
    """First frame of each window of `span` frames over n, every span // 2 and one flush with the end."""
    if n <= span:
        return [0]
    starts = list(range(0, n - span + 1, max(1, span // 2)))
    return starts + ([n - span] if starts[-1] != n - span else [])


def clip_inputs(clip: "Clip", model: HOLA, generator: torch.Generator | None = None, random_erasing: float = 0.0,
                offset: float = 0.5, sampling: Sampling = Sampling(), window: int | None = None
                ) -> tuple[Tensor, Tensor, tuple]:
    """(video (3, T, S, S), audio (1, frames, bins) or (16, 32) under mfcc32, fallbacks) of one view
    of a clip. `generator` draws a training view (frames, window, crop, erasing); without it, the
    frames at `offset` of their segments (uniform) or the window starting at frame `window`."""
    cfg = model.cfg
    if clip.frames is None or not len(clip.frames):
        raise ValueError(f"{clip.ref.path}: HOLA needs the clip's frames; load it with the detector's input_spec")
    frames, size = cfg.video.input_size[0], cfg.video.input_size[1]
    n, fps = len(clip.frames), clip.fps or 25.0
    audio = None if clip.audio_removed or clip.audio is None or not len(clip.audio) else clip.audio
    if sampling.mode == "window":
        span = frames * sampling.frame_stride
        starts = window_starts(n, span)
        first = starts[int(torch.randint(len(starts), (1,), generator=generator))] if generator is not None else window
        wanted = first + np.arange(frames) * sampling.frame_stride
        sample = FrameSample(np.minimum(wanted, n - 1), int((wanted > n - 1).sum()))
        a, b = (round(f / fps * clip.sample_rate) for f in (first, first + span))
        audio = None if audio is None else audio[a:b]
        samples = b - a
    else:
        sample = frame_indices(n, frames, generator, offset)
        samples = round(n / fps * clip.sample_rate)
    crop = None if generator is None else Crop.draw(round(size * 224 / 160), generator)
    video = video_tensor(clip.frames[sample.indices], size, crop)
    if generator is not None and random_erasing and bool(torch.rand(1, generator=generator) < random_erasing):
        video = erase(video, generator)
    if audio is not None and not len(audio):
        audio = None
    if cfg.audio_frontend == "mfcc32":
        spectrum = mfcc32(audio, samples)
    else:
        spectrum = fbank128(audio, samples, *cfg.audio.input_size)
    fallbacks = ((FRAMES_REPEATED,) if sample.repeated else ()) + ((SILENT_TRACK,) if audio is None else ())
    return video, spectrum, fallbacks


def clip_views(clip: "Clip", model: HOLA, sampling: Sampling) -> tuple[list[tuple[Tensor, Tensor]], tuple]:
    """The evaluation views of a clip (its tta grids, or its windows) and the fallbacks they needed."""
    if sampling.mode == "window":
        span = model.cfg.video.input_size[0] * sampling.frame_stride
        parts = [clip_inputs(clip, model, sampling=sampling, window=w) for w in window_starts(len(clip.frames), span)]
    else:
        parts = [clip_inputs(clip, model, offset=(v + 0.5) / sampling.tta_views, sampling=sampling)
                 for v in range(sampling.tta_views)]
    return [(v, a) for v, a, _ in parts], tuple(f for _, _, fs in parts for f in fs)


def clip_probabilities(model: HOLA, clips: Iterable["Clip"], sampling: Sampling, batch_size: int,
                       device: torch.device) -> list[float]:
    """Each clip's P(fake): the mean over its tta views, or the aggregation of its windows' (all views
    of all clips batched as they come; each clip declares the fallbacks its views needed)."""
    counts: list[int] = []

    def views():
        for clip in clips:
            inputs, fallbacks = clip_views(clip, model, sampling)
            clip.declare(*fallbacks)
            counts.append(len(inputs))
            yield from inputs

    p = fake_probabilities(model, views(), batch_size, device)
    parts = torch.split(p, counts) if counts else ()
    reduce = torch.max if sampling.mode == "window" and sampling.aggregation == "max" else torch.mean
    return [float(reduce(part)) for part in parts]


def fake_probabilities(model: HOLA, inputs: Iterable[tuple[Tensor, Tensor]], batch_size: int,
                       device: torch.device) -> Tensor:
    """Softmax P(fake) of each (video, audio) pair, float64 on the CPU, in batches of `batch_size`
    as the inputs come (a large pool or dev slice is never held in memory at once)."""
    out, batch = [], []
    model.eval()

    def flush():
        with torch.inference_mode(), autocast(device):
            logits = model(torch.stack([v for v, _ in batch]).to(device), torch.stack([a for _, a in batch]).to(device))
        out.append(logits.double().softmax(-1)[:, 1].cpu())
        batch.clear()

    for pair in inputs:
        batch.append(pair)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


class Regularisation(NamedTuple):
    """Upstream's fine-tuning regularisers, each off at 0 (the spec's default: crop and flip only).
    random_erasing: probability of one rectangle (2-33% of the frame, aspect 0.3-3.3) of N(0, 1)
    noise on the normalised frames, the same on every frame; mixup / cutmix: Beta(alpha, alpha)
    mixing of a batch with its reverse, one of the two per batch (even odds when both are on):
    mixup mixes video and audio alike, cutmix cuts one box out of every frame and the same share
    of the audio's time axis (our reading for two modalities); label_smoothing of the targets."""

    random_erasing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    label_smoothing: float = 0.0


def erase(video: Tensor, generator: torch.Generator) -> Tensor:
    """One random-erasing rectangle (timm's, max area 1/3) of N(0, 1) noise, the same in every frame
    of (3, T, S, S)."""
    box = erasing_rectangle(video.shape[-1], generator, 1 / 3)
    if box is None:
        return video
    top, left, h, w = box
    video = video.clone()
    video[..., top:top + h, left:left + w] = torch.randn(video.shape[0], 1, h, w, generator=generator)
    return video


def mix(video: Tensor, audio: Tensor, labels: Tensor, reg: Regularisation, generator: torch.Generator
        ) -> tuple[Tensor, Tensor, Tensor]:
    """(video, audio, soft targets (B, 2)) of a batch mixed with its reverse, per `reg`."""
    targets = F.one_hot(labels, 2).float() * (1 - reg.label_smoothing) + reg.label_smoothing / 2
    if not (reg.mixup or reg.cutmix) or len(labels) < 2:
        return video, audio, targets
    use_cutmix = reg.cutmix > 0 and (reg.mixup == 0 or bool(torch.rand(1, generator=generator) < 0.5))
    alpha = reg.cutmix if use_cutmix else reg.mixup
    gamma = lambda: torch._standard_gamma(torch.tensor([alpha], dtype=torch.float64), generator=generator)  # noqa: E731
    a, b = gamma(), gamma()
    lam = float(a / (a + b))
    flipped = (video.flip(0), audio.flip(0))
    if use_cutmix:
        size, steps = video.shape[-1], audio.shape[-2]
        side = round(size * math.sqrt(1 - lam))
        top, left = (int(torch.randint(size - side + 1, (1,), generator=generator)) for _ in range(2))
        video = video.clone()
        video[..., top:top + side, left:left + side] = flipped[0][..., top:top + side, left:left + side]
        span = round(steps * side * side / (size * size))
        start = int(torch.randint(steps - span + 1, (1,), generator=generator))
        audio = audio.clone()
        audio[..., start:start + span, :] = flipped[1][..., start:start + span, :]
        lam = 1 - side * side / (size * size)
    else:
        video, audio = lam * video + (1 - lam) * flipped[0], lam * audio + (1 - lam) * flipped[1]
    return video, audio, lam * targets + (1 - lam) * targets.flip(0)


class Example(NamedTuple):
    """One training clip: how to load it, its label (given or pseudo) and its speaker."""

    load: Callable[[], "Clip"]
    label: int
    identity: str
    clip_id: str  # the clip's id, or a pool token (what clips_digest reads)


class HOLATraining:
    """The TrainingTask: examples drawn in a seeded order each epoch, one random view each."""

    def __init__(self, model: HOLA, examples: list[Example], dev: list[Example], batch_size: int,
                 device: torch.device, eval_batch_size: int, regularisation: Regularisation = Regularisation(),
                 sampling: Sampling = Sampling()):
        self.model, self.examples, self.dev_examples = model, examples, dev
        self.batch_size, self.eval_batch_size, self.dev = batch_size, eval_batch_size, device
        self.regularisation, self.sampling = regularisation, sampling

    def epoch_jobs(self, generator: torch.Generator) -> list[list[tuple[int, int]]]:
        order = torch.randperm(len(self.examples), generator=generator).tolist()
        jobs = [(k, int(torch.randint(2**31 - 1, (1,), generator=generator))) for k in order]
        if len(jobs) % self.batch_size == 1 and len(jobs) > 1:
            jobs = jobs[:-1]  # a batch of one sample: the BatchNorm of the projection cannot train on it
        return chunks(jobs, self.batch_size)

    def make_batch(self, job: Sequence[tuple[int, int]]):
        videos, audios = [], []
        for k, view_seed in job:
            video, audio, _ = clip_inputs(self.examples[k].load(), self.model, torch.Generator().manual_seed(view_seed),
                                          self.regularisation.random_erasing, sampling=self.sampling)
            videos.append(video)
            audios.append(audio)
        return torch.stack(videos), torch.stack(audios), torch.tensor([self.examples[k].label for k, _ in job])

    def losses(self, batch, job, generator) -> dict[str, Tensor]:
        video, audio, targets = mix(*batch, self.regularisation, generator)
        with autocast(self.dev):
            logits = self.model(video.to(self.dev), audio.to(self.dev))
        return {"total": F.cross_entropy(logits.float(), targets.to(self.dev))}

    def validate(self, record: dict) -> dict | None:
        if not self.dev_examples:
            return None
        from sklearn.metrics import roc_auc_score

        p = np.array(clip_probabilities(self.model, (e.load() for e in self.dev_examples), self.sampling,
                                        self.eval_batch_size, self.dev))
        labels = np.array([e.label for e in self.dev_examples])
        loss = float(-np.mean(np.log(np.clip(np.where(labels == 1, p, 1 - p), 1e-12, None))))
        auc = float(roc_auc_score(labels, p)) if len(set(labels.tolist())) == 2 else None
        return {"auc": auc, "loss": loss, "clips": len(labels)}


# -- optimiser and schedule -----------------------------------------------------------------------------

def parameter_groups(model: HOLA, weight_decay: float, layer_decay: float) -> list[dict]:
    """AdamW groups by (layer, decay): lr_scale = layer_decay ** (num_layers - layer_id) (the heads at
    1), weight decay on matrices and kernels only."""
    groups: dict[tuple[int, bool], dict] = {}
    top = model.num_layers
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layer = model.layer_id(name)
        decay = p.ndim > 1 and not name.endswith(("lg_region_tokens", "cls_token", "pos_embed"))
        group = groups.setdefault((layer, decay), {"params": [], "weight_decay": weight_decay if decay else 0.0,
                                                   "lr_scale": layer_decay ** (top - layer),
                                                   "name": f"layer{layer}_{'decay' if decay else 'no_decay'}"})
        group["params"].append(p)
    return [groups[k] for k in sorted(groups, key=lambda k: (-k[0], not k[1]))]  # the heads' group first: "lr"


def cosine(steps: int, peak: float, floor: float) -> Callable[[int], float]:
    """Multiplier of the peak lr at each step: cosine from 1 to floor / peak over `steps`."""
    low = floor / peak

    def factor(step: int) -> float:
        return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / max(steps, 1)))
    return factor


def train_epochs(model: HOLA, task: HOLATraining, *, epochs: int, lr: float, min_lr: float, weight_decay: float,
                 layer_decay: float, seed: int, device: torch.device, directory: Path | None, key: dict,
                 name: str) -> list[dict]:
    groups = parameter_groups(model, weight_decay, layer_decay)
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    optimiser = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    steps = max(1, len(task.epoch_jobs(torch.Generator().manual_seed(0)))) * epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, cosine(steps, lr, min_lr))
    trainer = Trainer(epochs=epochs, schedule_every="step", select=SELECTION)
    return trainer.fit(model, optimiser, scheduler, task, seed=seed, device=device, directory=directory, key=key,
                       name=name)


# -- fine-tuning and PSSI --------------------------------------------------------------------------------

def labelled_examples(clips: "ClipSet") -> list[Example]:
    """The clips of a set that load, each loaded again through the loader (and its cache) when needed."""
    examples = []
    for ref, clip in clips.results():
        if not isinstance(clip, ClipError):
            examples.append(Example(lambda ref=ref: clips.loader.load(ref, clips.spec, clips.remove_audio), ref.label,
                                    ref.identity, ref.clip_id))
    return examples


def split_dev(examples: list[Example], seed: int) -> tuple[list[Example], list[Example]]:
    """(train, dev): the dev slice is DEV_FRACTION of whole speakers, seeded (avbench.training.holdout)."""
    keep, held = holdout(np.array([e.label for e in examples]), seed, fraction=DEV_FRACTION,
                         identities=[e.identity for e in examples])
    return [examples[i] for i in keep], [examples[i] for i in held]


class Recipe(NamedTuple):
    epochs: int
    batch_size: int
    lr: float
    min_lr: float
    weight_decay: float
    layer_decay: float
    eval_batch_size: int
    regularisation: Regularisation = Regularisation()
    sampling: Sampling = Sampling()


def finetune(model: HOLA, train: "ClipSet", *, seed: int, device: str, recipe: Recipe, directory: Path | None
             ) -> tuple[list[dict], list[Example], list[Example]]:
    """Fine-tune in place on the training clips minus the dev slice; (history, train examples, dev)."""
    dev_device = torch.device(device)
    model.to(dev_device)
    examples, dev = split_dev(labelled_examples(train), seed)
    if len(examples) < 2 or not dev:
        raise ValueError(f"HOLA needs training clips of two speakers at least ({len(examples)} usable of "
                         f"{len(train.refs)}; failed: {sorted({e.reason for e in train.failures.values()})})")
    task = HOLATraining(model, examples, dev, recipe.batch_size, dev_device, recipe.eval_batch_size,
                        recipe.regularisation, recipe.sampling)
    key = {"kind": "hola", "config": model.cfg.as_dict(), "seed": seed, **recipe._asdict(),
           "train": clips_digest(examples), "dev": clips_digest(dev)}
    history = train_epochs(model, task, epochs=recipe.epochs, lr=recipe.lr, min_lr=recipe.min_lr,
                           weight_decay=recipe.weight_decay, layer_decay=recipe.layer_decay, seed=seed,
                           device=dev_device, directory=directory, key=key, name="HOLA")
    return history, examples, dev


class PSSI(NamedTuple):
    rounds: int
    tau: float
    epochs_per_round: int
    lr: float
    accumulate: bool
    select_rounds: str  # "fixed" | "dev"


def pseudo_label_rounds(model: HOLA, examples: list[Example], dev: list[Example], pool: "UnlabeledPool", *,
                        seed: int, device: str, recipe: Recipe, pssi: PSSI, directory: Path | None
                        ) -> tuple[list[dict[str, int]], list[dict]]:
    """PSSI's rounds in place; (each round's pseudo-labels {token: 0|1}, each round's history)."""
    dev_device = torch.device(device)
    rounds: list[dict[str, int]] = []
    histories: list[dict] = []
    kept: dict[str, int] = {}
    best = None
    for k in range(pssi.rounds):
        scored = score_pool(model, pool, recipe.sampling, recipe.eval_batch_size, dev_device)
        labels = {t: int(p >= 0.5) for t, p in scored.items() if p >= 1 - pssi.tau or p <= pssi.tau}
        kept = {**kept, **labels} if pssi.accumulate else labels
        rounds.append(dict(labels))
        pseudo = [Example(lambda t=t: pool.load(t), label, "", t) for t, label in kept.items()]
        task = HOLATraining(model, examples + pseudo, dev, recipe.batch_size, dev_device, recipe.eval_batch_size,
                            recipe.regularisation, recipe.sampling)
        key = {"kind": "hola_pssi", "round": k + 1, "config": model.cfg.as_dict(), "seed": seed,
               "pseudo": clips_digest(pseudo), **pssi._asdict()}
        history = train_epochs(model, task, epochs=pssi.epochs_per_round, lr=pssi.lr, min_lr=recipe.min_lr,
                               weight_decay=recipe.weight_decay, layer_decay=recipe.layer_decay, seed=seed + k + 1,
                               device=dev_device, directory=None if directory is None else directory / f"round{k + 1}",
                               key=key, name=f"HOLA PSSI round {k + 1}")
        dev_auc = max((r.get("val_auc") or 0.0 for r in history), default=0.0)
        histories.append({"round": k + 1, "pseudo_labels": len(labels), "trained_on": len(pseudo),
                          "dev_auc": dev_auc, "history": history})
        if pssi.select_rounds == "dev" and (best is None or dev_auc > best[0]):
            best = (dev_auc, k + 1, {n: v.detach().clone() for n, v in model.state_dict().items()})
    if best is not None:
        model.load_state_dict(best[2])
        rounds = rounds[:best[1]]
    return rounds, histories


def score_pool(model: HOLA, pool: "UnlabeledPool", sampling: Sampling, batch_size: int,
               device: torch.device) -> dict[str, float]:
    """P(fake) of every pool clip that loads, by token, as scoring computes it."""
    tokens: list[str] = []

    def clips():
        for token, clip in pool.clips():
            tokens.append(token)
            yield clip

    return dict(zip(tokens, clip_probabilities(model, clips(), sampling, batch_size, device)))
