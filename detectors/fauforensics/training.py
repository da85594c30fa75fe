"""FauForensics training on avbench.training's Trainer (spec section 4): AdamP, the poly schedule per
iteration, one random 1 s window per clip per epoch with the authors' augmentations, the 0.8/0.1/0.1 loss.

Where avbench departs from the authors' code, by choice:
- model selection on validation clips only (the code selects on its test list): the epoch of best
  validation AUC over clips scored as inference scores them, ties to the lower validation loss; a
  seeded hold-out of whole identities of the training clips when a protocol has no validation split;
- gradients unscaled before clipping at 1.0, bf16 autocast on CUDA (the code clips fp16-scaled
  gradients, an effect that depends on the loss scale);
- the masks scale with the window: time mask up to 11 of 25 frames, frequency mask up to 26 of
  80 mel bins, in proportion for the tiny twin.
Training clips are read through the loader (and so its cache) when their window is needed, so
memory does not grow with the training set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avbench.clips import ClipError, ClipRef
from avbench.metrics import four_class_label
from avbench.training import (Selection, Trainer, autocast, chunks, clips_digest, erasing_rectangle, holdout,
                              labels_of)

from .model import FauForensics, FauForensicsConfig, loss
from .preprocess import CENTRE, CROP, log_mel, face_frames

if TYPE_CHECKING:
    from avbench.loader import ClipSet

SELECTION = Selection("auc", "max", tie_break=("loss", "min"))
SAMPLES_PER_FRAME = 640  # 16 kHz audio per 25 fps video frame


class AdamP(torch.optim.Optimizer):
    """AdamP (Heo et al., ICLR 2021): Adam whose update, for a weight whose gradient is nearly
    orthogonal to it (a scale-invariant weight, e.g. before a normalisation), is projected onto the
    tangent space and whose weight decay is scaled by wd_ratio. The authors' settings are the defaults."""

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, delta: float = 0.1, wd_ratio: float = 0.1):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, delta=delta,
                                      wd_ratio=wd_ratio))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad, state = p.grad, self.state[p]
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                state["step"] += 1
                state["exp_avg"].mul_(beta1).add_(grad, alpha=1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                correction1, correction2 = 1 - beta1 ** state["step"], 1 - beta2 ** state["step"]
                denom = (state["exp_avg_sq"].sqrt() / math.sqrt(correction2)).add_(group["eps"])
                perturb = state["exp_avg"] / denom
                wd_ratio = 1.0
                if p.dim() > 1:
                    perturb, wd_ratio = _projection(p, grad, perturb, group["delta"], group["wd_ratio"], group["eps"])
                if group["weight_decay"] > 0:
                    p.mul_(1 - group["lr"] * group["weight_decay"] * wd_ratio)
                p.add_(perturb, alpha=-group["lr"] / correction1)


def _projection(p: Tensor, grad: Tensor, perturb: Tensor, delta: float, wd_ratio: float, eps: float):
    """Remove the radial part of the update of a weight that is scale-invariant per channel or as a whole."""
    for view in (lambda x: x.reshape(x.shape[0], -1), lambda x: x.reshape(1, -1)):
        cosine = F.cosine_similarity(view(grad), view(p), dim=1, eps=eps).abs()
        if cosine.max() < delta / math.sqrt(view(p).shape[1]):
            unit = view(p) / view(p).norm(dim=1, keepdim=True).add(eps)
            perturb = perturb - (unit * (unit * view(perturb)).sum(dim=1, keepdim=True)).view_as(p)
            return perturb, wd_ratio
    return perturb, 1.0


def poly(total_steps: int, power: float = 0.9, floor: float = 1e-3):
    """The lr factor per iteration: (1 - floor)(1 - n / N)^power + floor (the code: 1e-4 down to 1e-7)."""
    return lambda step: (1 - floor) * max(0.0, 1 - step / total_steps) ** power + floor


def label_triple(ref: ClipRef, classes: int) -> tuple[int, int, int] | None:
    """(joint label, audio fake, video fake): the joint label is the clip label, or for four classes
    metrics.four_class_label, None for a clip of none of the four (not trained on); an unknown
    modality label stands for the clip label in the heads' labels."""
    a = ref.label if ref.audio_label is None else int(ref.audio_label)
    v = ref.label if ref.video_label is None else int(ref.video_label)
    joint = int(ref.label) if classes == 2 else four_class_label(ref.label, ref.video_label, ref.audio_label)
    return None if joint is None else (joint, a, v)


@dataclass
class Window:
    """One training example: a clip, where its window starts, and its augmentation draws."""

    clip: int
    start: int  # first video frame
    top: int
    left: int
    flip: bool
    erase: tuple[int, int, int, int] | None  # top, left, height, width on the model's frames
    time_mask: tuple[int, int]  # start frame, frames
    freq_mask: tuple[int, int]  # first bin, bins


def windows_of(faces: np.ndarray, audio: np.ndarray | None, cfg: FauForensicsConfig, max_windows: int
               ) -> tuple[Tensor, Tensor | None]:
    """Inference windows: non-overlapping `cfg.frames` from t = 0 (at least one, zero-padded), at most
    `max_windows`: video (W, 3, T, S, S), mel (W, audio_frames, n_mels) or None without audio."""
    n = max(1, min(max_windows, len(faces) // cfg.frames))
    video = torch.stack([face_frames(faces[w * cfg.frames:(w + 1) * cfg.frames], cfg.frames, cfg.image_size)
                         for w in range(n)])
    if audio is None:
        return video, None
    step = cfg.frames * SAMPLES_PER_FRAME
    mel = torch.stack([log_mel(audio[w * step:(w + 1) * step], cfg.n_mels, cfg.audio_frames) for w in range(n)])
    return video, mel


class FauTraining:
    """The TrainingTask: usable training clips (loaded once to know them), windows drawn per epoch."""

    def __init__(self, model: FauForensics, train: "ClipSet", val: list[tuple[ClipRef, Tensor, Tensor]],
                 batch_size: int, device: torch.device, eval_batch_size: int):
        self.model, self.cfg, self.clips, self.dev = model, model.cfg, train, device
        self.batch_size, self.eval_batch_size, self.val = batch_size, eval_batch_size, val
        self.refs: list[ClipRef] = []
        self.lengths: list[int] = []
        for ref, clip in train.results():
            if isinstance(clip, ClipError):
                continue
            if clip.faces is None or clip.audio is None or clip.audio_removed:
                train.failures[ref.clip_id] = ClipError("no_audio" if clip.faces is not None else "no_face",
                                                        f"{ref.path}: FauForensics trains on face crops with audio")
                continue
            if label_triple(ref, self.cfg.classes) is None:
                train.failures[ref.clip_id] = ClipError("no_class", f"{ref.path}: a fake of none of the four classes "
                                                        f"(video fake {ref.video_label}, audio fake {ref.audio_label})")
                continue
            self.refs.append(ref)
            self.lengths.append(len(clip.faces))
        self.labels = torch.tensor([label_triple(r, self.cfg.classes) for r in self.refs])

    def epoch_jobs(self, generator: torch.Generator) -> list[list[Window]]:
        cfg, order = self.cfg, torch.randperm(len(self.refs), generator=generator).tolist()
        t_max, f_max = round(11 * cfg.frames / 25), round(26 * cfg.n_mels / 80)

        def draw(high: int) -> int:
            return int(torch.randint(high, (1,), generator=generator))

        jobs = []
        for k in order:
            start = draw(max(1, self.lengths[k] - cfg.frames + 1))
            top, left, flip = draw(CENTRE - CROP + 1), draw(CENTRE - CROP + 1), draw(2) == 1
            erase = erasing_rectangle(self.cfg.image_size, generator, 0.33) if draw(2) == 1 else None
            t = draw(t_max + 1)
            f = draw(f_max + 1)
            jobs.append(Window(k, start, top, left, flip, erase, (draw(cfg.frames - t + 1), t),
                               (draw(cfg.n_mels - f + 1), f)))
        return chunks(jobs, self.batch_size)

    def make_batch(self, job: Sequence[Window]) -> tuple[Tensor, Tensor, Tensor]:
        cfg, videos, mels = self.cfg, [], []
        for item in job:
            clip = self.clips.loader.load(self.refs[item.clip], self.clips.spec, self.clips.remove_audio)
            faces = clip.faces[item.start:item.start + cfg.frames]
            video = face_frames(faces, cfg.frames, cfg.image_size, crop=(item.top, item.left, item.flip))
            a0 = item.start * SAMPLES_PER_FRAME
            mel = log_mel(clip.audio[a0:a0 + cfg.frames * SAMPLES_PER_FRAME], cfg.n_mels, cfg.audio_frames)
            if item.erase is not None:
                top, left, h, w = item.erase
                video[..., top:top + h, left:left + w] = 0
            start, t = item.time_mask
            video[:, start:start + t] = 0
            mel[4 * start:4 * (start + t)] = 0
            first, f = item.freq_mask
            mel[:, first:first + f] = 0
            videos.append(video)
            mels.append(mel)
        return torch.stack(videos), torch.stack(mels), self.labels[[item.clip for item in job]]

    def losses(self, batch, job, generator) -> dict[str, Tensor]:
        video, mel, labels = (t.to(self.dev) for t in batch)
        with autocast(self.dev):
            logits = self.model(video, mel)
        return {"total": loss(logits, labels[:, 0], labels[:, 1], labels[:, 2])}

    def validate(self, record: dict) -> dict | None:
        if not self.val:
            return None
        from sklearn.metrics import roc_auc_score

        scores, total, count = [], 0.0, 0
        self.model.eval()
        with torch.inference_mode():
            for ref, video, mel in self.val:
                joint, a, v = (torch.tensor([y] * len(video), device=self.dev) for y in label_triple(ref, self.cfg.classes))
                probabilities = []
                for s in range(0, len(video), self.eval_batch_size):
                    with autocast(self.dev):
                        logits = self.model(video[s:s + self.eval_batch_size].to(self.dev),
                                            mel[s:s + self.eval_batch_size].to(self.dev))
                    n = len(logits.joint)
                    total += float(loss(logits, joint[s:s + n], a[s:s + n], v[s:s + n])) * n
                    count += n
                    probabilities.append(fake_probability(logits.joint.float()))
                scores.append(float(torch.cat(probabilities).mean()))
        labels = [ref.label for ref, _, _ in self.val]
        auc = float(roc_auc_score(labels, scores)) if len(set(labels)) == 2 else None
        return {"auc": auc, "loss": total / max(count, 1), "clips": len(self.val)}


def fake_probability(joint: Tensor) -> Tensor:
    """P(fake) of each window: softmax's fake class, or 1 - P(real audio, real video) for four classes."""
    p = joint.softmax(dim=-1)
    return p[:, 1] if joint.shape[-1] == 2 else 1 - p[:, 0]


def fit(model: FauForensics, train: "ClipSet", val: "ClipSet", *, seed: int, device: str, epochs: int,
        batch_size: int, lr: float, weight_decay: float, accumulate: int, max_windows: int, eval_batch_size: int,
        directory=None) -> list[dict]:
    """Train `model` in place, leaving it with its best validation epoch; returns the history."""
    dev = torch.device(device)
    model.to(dev)
    task = FauTraining(model, train, [], batch_size, dev, eval_batch_size)
    if not task.refs:
        raise ValueError(f"no training clip can be used ({len(train.refs)} given; failed: "
                         f"{sorted({e.reason for e in train.failures.values()})})")
    val_items = [(ref, *windows_of(clip.faces, clip.audio, model.cfg, max_windows)) for ref, clip in val.results()
                 if not isinstance(clip, ClipError) and clip.faces is not None and clip.audio is not None
                 and label_triple(ref, model.cfg.classes) is not None]
    if not val_items:  # a seeded hold-out of whole identities of the training clips
        keep, held = holdout(labels_of(task.refs), seed, identities=[r.identity for r in task.refs])
        held_refs = [task.refs[i] for i in held]
        task.refs = [task.refs[i] for i in keep]
        task.lengths = [task.lengths[i] for i in keep]
        task.labels = task.labels[torch.as_tensor(keep, dtype=torch.long)]
        for ref in held_refs:
            clip = train.loader.load(ref, train.spec, train.remove_audio)
            val_items.append((ref, *windows_of(clip.faces, clip.audio, model.cfg, max_windows)))
    task.val = val_items
    optimiser = AdamP([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    steps = math.ceil(len(task.refs) / batch_size) // accumulate * epochs or 1
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, poly(steps))
    key = {"kind": "fauforensics", "config": model.cfg.as_dict(), "seed": seed, "epochs": epochs,
           "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "accumulate": accumulate,
           "train": clips_digest(task.refs), "val": clips_digest(r for r, _, _ in val_items)}
    trainer = Trainer(epochs=epochs, grad_clip=1.0, accumulate=accumulate, schedule_every="step", select=SELECTION)
    return trainer.fit(model, optimiser, scheduler, task, seed=seed, device=dev, directory=directory, key=key,
                       name="FauForensics")
