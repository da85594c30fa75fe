"""CAD's samples and training on avbench.training's Trainer (spec sections 2, 4 and 5).

A sample is one 30 s window of a clip: `frames` face crops laid out in four groups over the
window's frames, CLIP-normalised, and the window's audio as Whisper's 30 s log-Mel with its valid
encoder frames. Scoring reads every window of a clip (`clip_samples`); training draws one window
per clip per epoch.

Training, where the paper is silent (StA's settings, the spec's defaults):
- Adam (lr 2e-4, betas 0.9/0.999, eps 1e-8), weight decay 5e-4 as torch's Adam adds it (L2 on the
  gradient), none on norms, biases and the temporal embedding; a constant learning rate; no
  gradient clipping; bf16 autocast on CUDA;
- augmentations drawn per sample and applied identically to its frames: horizontal flip p 0.5,
  rotation within +-10 degrees p 0.5 (bilinear, black corners), Gaussian blur with an odd kernel
  of 3-7 p 0.5 (sigma from the kernel as OpenCV derives it), brightness and contrast within +-0.1
  p 0.5 (x * alpha + beta * 255, albumentations' convention), JPEG at quality 40-100 p 0.5 (the
  library default probability, the spec names none); no audio augmentation;
- selection: the epoch of best validation AUC, ties to the lower validation loss, validation clips
  scored as inference scores them; where a protocol has no validation split, a seeded hold-out
  of whole identities of the training clips (10%), never test data;
- BatchNorm (the predictors' BatchNorm1d, the adapters' BatchNorm3d) uses each device's own batch
  statistics under several GPUs (no SyncBatchNorm, as StA); a BatchNorm1d needs two samples, so
  an epoch whose last batch would hold one sample leaves that sample (drawn anew each epoch) out.
Training clips are read through the loader (and so its cache) when their batch is built, so memory
does not grow with the training set. The losses' terms (ce, kl, kd) and the entropies of the
alignment distributions P and Q are reported per epoch: near-uniform P and Q satisfy the KL term
trivially (spec section 10).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avbench.clips import FRAMES_REPEATED, SILENT_TRACK, ClipError, ClipRef
from avbench.training import Selection, Trainer, autocast, chunks, clips_digest, holdout, labels_of

from .model import CAD, CADConfig, total_loss
from .preprocess import SAMPLE_RATE, Window, audio_padding, clip_frames, clip_windows, whisper_mel

if TYPE_CHECKING:
    from avbench.clips import Clip
    from avbench.loader import ClipSet

SELECTION = Selection("auc", "max", tie_break=("loss", "min"))


class Samples(NamedTuple):
    """A clip's windows as model inputs: frames (W, T, 3, S, S) or None without video, mel (W, 80,
    3000) or None without audio, valid (W,) Whisper frames, and the fallbacks they needed."""

    frames: Tensor | None
    mel: Tensor | None
    valid: Tensor
    fallbacks: tuple[str, ...]


def window_sample(clip: "Clip", window: Window, cfg: CADConfig, augment: "Augment | None" = None
                  ) -> tuple[Tensor | None, Tensor | None, int]:
    """One window's (frames, mel, valid frames); `augment` alters the face crops first."""
    frames = mel = None
    valid = 1
    if not cfg.audio_only:
        faces = clip.faces[window.frames.indices]
        frames = clip_frames(augment.apply(faces) if augment else faces, range(len(faces)))
    if not cfg.video_only:
        mel, valid = whisper_mel(clip.audio[window.audio])
    return frames, mel, valid


def windows_of(clip: "Clip", cfg: CADConfig) -> list[Window]:
    n_frames = 0 if cfg.audio_only else len(clip.faces)
    n_samples = 0 if cfg.video_only else len(clip.audio)
    return clip_windows(n_frames, n_samples, clip.fps or 25.0, cfg.frames)


def clip_samples(clip: "Clip", cfg: CADConfig, max_windows: int | None = None) -> Samples:
    """Every window of the clip (the first `max_windows`), stacked."""
    if not cfg.audio_only and clip.faces is None:
        raise ValueError(f"{clip.ref.path}: CAD needs face crops; load it with the detector's input_spec")
    if not cfg.video_only and clip.audio is None:
        raise ValueError(f"{clip.ref.path}: CAD needs an audio track (a silent one where the clip has none)")
    if clip.sample_rate != SAMPLE_RATE:
        raise ValueError(f"{clip.ref.path}: CAD needs {SAMPLE_RATE} Hz audio, got {clip.sample_rate} Hz")
    windows = windows_of(clip, cfg)[:max_windows]
    parts = [window_sample(clip, w, cfg) for w in windows]
    fallbacks = ((FRAMES_REPEATED,) if any(w.frames.repeated for w in windows) else ()) + (
        (SILENT_TRACK,) if clip.audio_removed and not cfg.video_only else ())
    return Samples(None if cfg.audio_only else torch.stack([f for f, _, _ in parts]),
                   None if cfg.video_only else torch.stack([m for _, m, _ in parts]),
                   torch.tensor([v for _, _, v in parts]), fallbacks)


def fake_probabilities(model: CAD, samples: Samples, batch_size: int, device: torch.device) -> Tensor:
    """P(fake) of each window (W,), float64 on the CPU, from the classifier head alone."""
    out = []
    with torch.inference_mode():
        for s in range(0, len(samples.valid), batch_size):
            frames = None if samples.frames is None else samples.frames[s:s + batch_size].to(device)
            mel = None if samples.mel is None else samples.mel[s:s + batch_size].to(device)
            with autocast(device):
                logits = model(frames, mel, audio_padding(samples.valid[s:s + batch_size]).to(device)).logits
            out.append(logits.double().softmax(-1)[:, 1].cpu())
    return torch.cat(out)


# -- augmentation ----------------------------------------------------------------------------------------

class Augment(NamedTuple):
    """One sample's augmentation parameters (None: not applied), drawn in `epoch_jobs`, applied to
    each of its frames alike in `make_batch` (deterministic: it runs in the prefetch thread)."""

    flip: bool
    angle: float | None
    blur: int | None  # odd kernel size
    contrast_brightness: tuple[float, float] | None  # (alpha, beta)
    jpeg: int | None  # quality

    @classmethod
    def draw(cls, generator: torch.Generator) -> "Augment":
        u = torch.rand(10, generator=generator, dtype=torch.float64).tolist()
        return cls(flip=u[0] < 0.5,
                   angle=(u[1] * 20 - 10) if u[2] < 0.5 else None,
                   blur=(3 + 2 * min(int(u[3] * 3), 2)) if u[4] < 0.5 else None,
                   contrast_brightness=(0.9 + 0.2 * u[5], -0.1 + 0.2 * u[6]) if u[7] < 0.5 else None,
                   jpeg=(40 + min(int(u[8] * 61), 60)) if u[9] < 0.5 else None)

    def apply(self, faces: np.ndarray) -> np.ndarray:
        """(T, S, S, 3) uint8 -> the same, augmented."""
        from PIL import Image

        x = faces[:, :, ::-1] if self.flip else faces
        if self.angle is not None:
            x = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(f)).rotate(self.angle, Image.BILINEAR))
                          for f in x])
        if self.blur is not None:
            x = gaussian_blur(x, self.blur)
        if self.contrast_brightness is not None:
            alpha, beta = self.contrast_brightness
            x = np.clip(x.astype(np.float32) * alpha + beta * 255, 0, 255).round().astype(np.uint8)
        if self.jpeg is not None:
            x = np.stack([jpeg(f, self.jpeg) for f in x])
        return np.ascontiguousarray(x)


def gaussian_blur(faces: np.ndarray, kernel: int) -> np.ndarray:
    """Separable Gaussian of an odd `kernel`, sigma = 0.3 ((k - 1) / 2 - 1) + 0.8 (OpenCV's rule),
    edges reflected."""
    sigma = 0.3 * ((kernel - 1) / 2 - 1) + 0.8
    taps = torch.exp(-((torch.arange(kernel) - kernel // 2) ** 2) / (2 * sigma**2))
    taps = (taps / taps.sum()).to(torch.float32)
    x = torch.from_numpy(np.ascontiguousarray(faces)).permute(0, 3, 1, 2).float()
    c = x.shape[1]
    pad = kernel // 2
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), taps.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    x = F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), taps.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def jpeg(frame: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


# -- the training task ---------------------------------------------------------------------------------

class Job(NamedTuple):
    clip: int  # index into the task's refs
    window: int
    augment: Augment | None


class CADTraining:
    """The TrainingTask: usable training clips (loaded once to know their windows), one window of
    each clip per epoch."""

    def __init__(self, model: CAD, train: "ClipSet", batch_size: int, device: torch.device, eval_batch_size: int,
                 augment: bool):
        self.model, self.cfg, self.clips, self.dev = model, model.cfg, train, device
        self.batch_size, self.eval_batch_size, self.augment = batch_size, eval_batch_size, augment
        self.refs: list[ClipRef] = []
        self.windows: list[int] = []
        for ref, clip in train.results():
            if isinstance(clip, ClipError):
                continue
            self.refs.append(ref)
            self.windows.append(len(windows_of(clip, self.cfg)))
        self.val: list[ClipRef] = []
        self.val_clips: "ClipSet | None" = None

    def keep(self, indices: Sequence[int]) -> None:
        self.refs = [self.refs[i] for i in indices]
        self.windows = [self.windows[i] for i in indices]

    def epoch_jobs(self, generator: torch.Generator) -> list[list[Job]]:
        order = torch.randperm(len(self.refs), generator=generator).tolist()
        jobs = [Job(k, int(torch.randint(self.windows[k], (1,), generator=generator)),
                    Augment.draw(generator) if self.augment else None) for k in order]
        if len(jobs) % self.batch_size == 1 and len(jobs) > 1:
            jobs = jobs[:-1]  # a batch of one sample: BatchNorm1d cannot train on it
        return chunks(jobs, self.batch_size)

    def make_batch(self, job: Sequence[Job]):
        frames, mels, valid = [], [], []
        for item in job:
            clip = self.clips.loader.load(self.refs[item.clip], self.clips.spec, self.clips.remove_audio)
            f, m, v = window_sample(clip, windows_of(clip, self.cfg)[item.window], self.cfg, item.augment)
            frames.append(f)
            mels.append(m)
            valid.append(v)
        labels = torch.tensor([self.refs[item.clip].label for item in job])
        return (None if self.cfg.audio_only else torch.stack(frames), None if self.cfg.video_only else torch.stack(mels),
                torch.tensor(valid), labels)

    def losses(self, batch, job, generator) -> dict[str, Tensor]:
        frames, mel, valid, labels = batch
        frames = None if frames is None else frames.to(self.dev)
        mel = None if mel is None else mel.to(self.dev)
        with autocast(self.dev):
            out = self.model(frames, mel, audio_padding(valid).to(self.dev))
        terms = total_loss(out, labels.to(self.dev), self.cfg)
        figures = {"total": terms.total, "ce": terms.ce.detach(), "kl": terms.kl.detach(), "kd": terms.kd.detach()}
        if out.s_v is not None:
            figures["entropy_p"], figures["entropy_q"] = (entropy(s.detach()) for s in (out.s_v, out.s_a))
        return figures

    def validate(self, record: dict) -> dict | None:
        if not self.val:
            return None
        from sklearn.metrics import roc_auc_score

        self.model.eval()
        scores, loss, windows = [], 0.0, 0
        for ref in self.val:
            clip = self.val_clips.loader.load(ref, self.val_clips.spec, self.val_clips.remove_audio)
            samples = clip_samples(clip, self.cfg)
            p = fake_probabilities(self.model, samples, self.eval_batch_size, self.dev)
            scores.append(float(p.mean()))
            loss -= float(torch.log(p if ref.label == 1 else 1 - p).clamp_min(-100).sum())
            windows += len(p)
        labels = [ref.label for ref in self.val]
        auc = float(roc_auc_score(labels, scores)) if len(set(labels)) == 2 else None
        return {"auc": auc, "loss": loss / max(windows, 1), "clips": len(self.val)}


def entropy(logits: Tensor) -> Tensor:
    """Mean entropy (nats) of softmax over the feature axis; log(d) is uniform."""
    log_p = logits.float().log_softmax(-1)
    return -(log_p.exp() * log_p).sum(-1).mean()


def parameter_groups(model: CAD, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices and kernels; none on norms, biases and the temporal embedding."""
    decay, plain = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (plain if p.ndim <= 1 or name.endswith("temporal_embedding") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
            {"params": plain, "weight_decay": 0.0, "name": "no_decay"}]


def fit(model: CAD, train: "ClipSet", val: "ClipSet", *, seed: int, device: str, epochs: int, batch_size: int,
        lr: float, weight_decay: float, augment: bool, eval_batch_size: int, directory=None) -> list[dict]:
    """Train `model` in place, leaving it with its best validation epoch; returns the history."""
    from avbench.distributed import ranks

    world = ranks()[1]
    if batch_size < 2 * world:
        raise ValueError(f"train_batch_size {batch_size} leaves a device fewer than two samples of a batch "
                         f"({world} devices): the predictors' BatchNorm needs two")
    dev = torch.device(device)
    model.to(dev)
    task = CADTraining(model, train, batch_size, dev, eval_batch_size, augment)
    if len(task.refs) < 2:
        raise ValueError(f"CAD needs at least two usable training clips ({len(task.refs)} of {len(train.refs)}; "
                         f"failed: {sorted({e.reason for e in train.failures.values()})})")
    task.val = [ref for ref, clip in val.results() if not isinstance(clip, ClipError)]
    task.val_clips = val
    if not task.val:  # a seeded hold-out of whole identities of the training clips
        keep, held = holdout(labels_of(task.refs), seed, identities=[r.identity for r in task.refs])
        task.val, task.val_clips = [task.refs[i] for i in held], train
        task.keep(keep)
    optimiser = torch.optim.Adam(parameter_groups(model, weight_decay), lr=lr, betas=(0.9, 0.999), eps=1e-8)
    key = {"kind": "cad", "config": model.cfg.as_dict(), "seed": seed, "epochs": epochs, "batch_size": batch_size,
           "lr": lr, "weight_decay": weight_decay, "augment": augment, "train": clips_digest(task.refs),
           "val": clips_digest(task.val)}
    trainer = Trainer(epochs=epochs, select=SELECTION)
    return trainer.fit(model, optimiser, None, task, seed=seed, device=dev, directory=directory, key=key, name="CAD")
