"""HAVIC training (seed paper 000, Sec. 3.2-3.3, supplement B): losses, SpecAugment, windows, both loops.

Pre-training (`pretrain`) teaches `HAVICPretrain` on real clips with L_rec + 0.01 L_cl + 1.0 L_cross;
fine-tuning (`finetune`) trains `HAVIC`'s three heads with BCE and keeps the epoch that scores best on
the validation clips. Each epoch, each training clip gives one random window of `cfg.n_frames` face
frames at 5 fps and the matching audio, cut exactly as inference cuts them (preprocess.clip_windows).
Both loops run on avbench.training's Trainer (seeded random state, bf16 autocast on CUDA, gradient
clipping, resumable last.pt, selection on validation only); this module keeps HAVIC's losses, masks,
windows and batches.

Where the paper is silent the authors' release decides, each place marked "release" below:
- L_rec averages the squared error over all tokens, visible ones included (rec_tokens="all"; the
  paper's Eq. 1 over masked tokens is rec_tokens="masked"); targets are the raw patches (pixels in
  [0, 1], normalised fbank), not normalised per patch; the decoder layers are averaged.
- L_cl uses the mean of each segment's last-layer visible patch tokens; its two directions are
  averaged, which is the paper's 1/(2BT) per direction, summed.
- Pre-training normalises the fbank with AudioSet's statistics (-5.081, 4.4849), fine-tuning and
  inference with (-6.9960, 3.1205); pre-training has no SpecAugment.
- Pre-training lr: from lr/25 up to lr, then cosine down to lr/25/1e4, per step (the release's
  OneCycleLR; the paper says "linear warm-up", so the warm-up here is linear); gradients clipped at 1.
- Fine-tuning: AdamW betas (0.95, 0.999) and weight decay 0.05 for both groups; warm restarts every 10
  epochs (T_mult 1, eta_min 1e-9), stepped once per epoch; gradients clipped at 1; sampling weighted by
  the inverse frequency of the (audio label, video label) combination, with replacement.
- SpecAugment: one frequency and one time mask (torchaudio's rule) on the training fbank; the release
  masks the raw log-Mel with 0 before normalising, i.e. the normalised value (0 - mean) / std here.
- Model selection: the release keeps the epoch of best validation AUC over windows; here the AUC is
  over clips scored as inference scores them (sigmoid of the mean window logit), ties and one-class
  validation sets broken by the validation loss.
Not reproduced: the release's optional extra augmentations (fbank noise, flips, crops, colour jitter).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avbench.clips import ClipError, ClipRef
from avbench.training import (Selection, Trainer, autocast, balanced_draw, chunks, clips_digest, holdout,
                              labels_of, use_grad_checkpointing)

from .model import (HAVIC, HAVICConfig, HAVICLogits, HAVICPretrain, PretrainOutput, patchify_audio, patchify_video,
                    segment_mask, tube_mask)
from .preprocess import FINETUNE_FBANK, PRETRAIN_FBANK, clip_windows, window_fbank, window_plan

if TYPE_CHECKING:
    from avbench.loader import ClipSet

log = logging.getLogger(__name__)

#: Decoded faces and audio of training clips kept in memory (beyond it, clips are reloaded from the media cache).
MEMORY_BYTES = 2 * 2**30
#: Modules that pre-training trains and fine-tuning starts from (lower learning rate); the rest is new.
PRETRAINED_PARTS = ("audio_encoder.", "visual_encoder.", "AudioVisualInteractionModule.")


# -- losses ---------------------------------------------------------------------------------------------

def soft_negative_weights(batch: int, segments: int, device: torch.device | str | None = None) -> Tensor:
    """w of Eq. 2 for all (sample, segment) pairs, (B*T, B*T) ordered sample-major: 1 - 2 sigmoid(-|t - t'|)
    for two segments of the same sample, 1 for the positive pair and for other samples."""
    t = torch.arange(segments, dtype=torch.float32, device=device)
    within = 1 - 2 * torch.sigmoid(-(t[:, None] - t[None, :]).abs())
    within.fill_diagonal_(1.0)
    sample = torch.arange(batch, device=device).repeat_interleave(segments)
    same = sample[:, None] == sample[None, :]
    return torch.where(same, within.repeat(batch, batch), torch.ones((), device=device))


def contrastive_loss(video_segments: Tensor, audio_segments: Tensor, temperature: float = 0.07) -> Tensor:
    """L_cl (Eq. 3) in both directions: (B, T, D) segment features, cosine similarity over temperature,
    each positive against every (sample, segment) of the other modality with the soft weights of Eq. 2
    in the denominator (as log-weights inside a logsumexp), 1/(2BT) per direction, summed."""
    b, t, _ = video_segments.shape
    v = F.normalize(video_segments.float().flatten(0, 1), dim=-1)
    a = F.normalize(audio_segments.float().flatten(0, 1), dim=-1)
    sim = v @ a.T / temperature  # rows: visual anchors (i, t); columns: audio (j, t')
    log_w = soft_negative_weights(b, t, sim.device).log()  # symmetric, so it serves both directions

    def one_way(s: Tensor) -> Tensor:
        return (torch.logsumexp(s + log_w, dim=1) - s.diagonal()).sum() / (2 * b * t)

    return one_way(sim) + one_way(sim.T)


def _reconstruction(predictions: Sequence[Tensor], target: Tensor, keep: Tensor, rec_tokens: str) -> Tensor:
    """Mean over decoder layers of the squared error to `target`, over all tokens or the masked ones."""
    target = target.float()
    if rec_tokens == "all":
        return torch.stack([F.mse_loss(p.float(), target) for p in predictions]).mean()
    masked = torch.ones(target.shape[:2], dtype=torch.bool, device=target.device).scatter_(1, keep, False)
    return torch.stack([(p.float() - target).square()[masked].mean() for p in predictions]).mean()


def pretrain_losses(out: PretrainOutput, audio: Tensor, video: Tensor, cfg: HAVICConfig, *, temperature: float = 0.07,
                    rec_tokens: str = "all", rec_weight: float = 1.0, cl_weight: float = 0.01,
                    cross_weight: float = 1.0) -> dict[str, Tensor]:
    """The three pre-training losses and their weighted sum (Eq. 5), in float32.

    rec: L_rec summed over video and audio (each the mean over decoder layers of the MSE to
    `patchify_*`, over all tokens as the release does, or rec_tokens="masked" as Eq. 1); cl: L_cl;
    cross: MSE of the cross-modal reconstructions to the gradient-free targets, summed over modalities.
    """
    if rec_tokens not in ("all", "masked"):
        raise ValueError(f"rec_tokens must be 'all' or 'masked', got {rec_tokens!r}")
    rec = (_reconstruction(out.video_recons, patchify_video(video, cfg), out.video_keep, rec_tokens)
           + _reconstruction(out.audio_recons, patchify_audio(audio, cfg), out.audio_keep, rec_tokens))
    cl = contrastive_loss(out.video_segments, out.audio_segments, temperature)
    cross = (F.mse_loss(out.video_from_audio.float(), out.video_target.float())
             + F.mse_loss(out.audio_from_video.float(), out.audio_target.float()))
    return {"rec": rec, "cl": cl, "cross": cross, "total": rec_weight * rec + cl_weight * cl + cross_weight * cross}


def finetune_loss(logits: HAVICLogits, label: Tensor, audio_label: Tensor, video_label: Tensor) -> Tensor:
    """BCE-with-logits of the main head against the clip label, plus the audio head against the audio
    label and the visual head against the video label (each a batch mean), summed."""
    def bce(x: Tensor, y: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(x.float().squeeze(-1), y.float())

    return bce(logits.main, label) + bce(logits.audio, audio_label) + bce(logits.visual, video_label)


# -- augmentation ---------------------------------------------------------------------------------------

def spec_augment(fbank: Tensor, freq_mask: int, time_mask: int, generator: torch.Generator | None = None,
                 mask_value: float = 0.0) -> Tensor:
    """SpecAugment as torchaudio's FrequencyMasking then TimeMasking, one mask each per sample: width
    w = U[0, 1) * param, start = floor(U[0, 1) * (size - w)), the bins [start, start + floor(w)) set to
    `mask_value`. fbank (B, frames, mel) or (frames, mel); a new tensor is returned. The random numbers
    come from `generator` (a CPU generator), sample by sample."""
    x = fbank.clone() if fbank.ndim == 3 else fbank[None].clone()
    frames, mels = x.shape[1:]
    for sample in x:
        for param, size, axis in ((freq_mask, mels, 1), (time_mask, frames, 0)):
            if param <= 0:
                continue
            u = torch.rand(2, generator=generator, dtype=torch.float64)
            width = float(u[0]) * min(param, size)
            start = int(float(u[1]) * (size - width))
            sample.narrow(axis, start, int(width)).fill_(mask_value)
    return x if fbank.ndim == 3 else x[0]


def label_combinations(refs: Sequence[ClipRef]) -> list[tuple[int, int]]:
    """The (audio label, video label) of each clip, the groups fine-tuning balances (release); an
    unknown modality label stands for the clip label."""
    return [(_label(r.audio_label, r.label), _label(r.video_label, r.label)) for r in refs]


def _label(value: int | None, fallback: int) -> int:
    return fallback if value is None else int(value)


# -- clips and windows ------------------------------------------------------------------------------------

@dataclass
class _Entry:
    ref: ClipRef
    plan: list[tuple[int, tuple[int, int]]]
    arrays: tuple[np.ndarray, np.ndarray] | None  # (faces, audio) when kept in memory


class ClipStore:
    """The clips of a ClipSet as training examples, one window at a time.

    Each clip is loaded once on first use: one that fails to load, has no audio or is too short for a
    window is recorded in `clips.failures` with its reason (never dropped silently) and left out. Faces
    and audio are kept in memory up to `memory_bytes`; other clips are loaded again, through the
    loader's media cache, when a window of theirs is needed. The fbank of every window of a validation
    clip, the same at every epoch, is kept too while the budget allows.
    """

    def __init__(self, clips: "ClipSet", cfg: HAVICConfig, *, pad_short: bool = False, memory_bytes: int = MEMORY_BYTES):
        self.clips, self.cfg, self.pad_short = clips, cfg, pad_short
        self.memory_left = memory_bytes
        self.entries: list[_Entry] = []
        self._seen: dict[str, int | None] = {}
        self._all_fbanks: dict[int, Tensor] = {}

    def usable(self, select: Callable[[ClipRef], bool] | None = None) -> list[int]:
        """Indices (into `entries`) of the clips that can train, loading the ones not seen yet."""
        found = []
        for ref in self.clips.refs:
            if select is not None and not select(ref):
                continue
            if ref.clip_id not in self._seen:
                self._seen[ref.clip_id] = self._admit(ref)
            if self._seen[ref.clip_id] is not None:
                found.append(self._seen[ref.clip_id])
        return found

    def _admit(self, ref: ClipRef) -> int | None:
        try:
            faces, audio = self._load(ref)
            plan = window_plan(len(faces), len(audio), self.cfg, pad_short=self.pad_short, source=str(ref.path))
        except ClipError as exc:
            self.clips.failures[ref.clip_id] = exc
            return None
        arrays = None
        if faces.nbytes + audio.nbytes <= self.memory_left:
            arrays, self.memory_left = (faces, audio), self.memory_left - faces.nbytes - audio.nbytes
        self.entries.append(_Entry(ref, plan, arrays))
        return len(self.entries) - 1

    def _load(self, ref: ClipRef) -> tuple[np.ndarray, np.ndarray]:
        clip = self.clips.loader.load(ref, self.clips.spec, self.clips.remove_audio)
        if clip.faces is None:
            raise ClipError("no_face", f"{ref.path}: the loader gave no face crops ({self.clips.spec})")
        if clip.audio is None or clip.audio_removed:
            raise ClipError("no_audio", f"{ref.path}: HAVIC trains on clips with audio")
        return clip.faces, clip.audio

    def arrays(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        entry = self.entries[i]
        return entry.arrays if entry.arrays is not None else self._load(entry.ref)

    def n_windows(self, i: int) -> int:
        return len(self.entries[i].plan)

    def window(self, i: int, w: int, fbank_norm: tuple[float, float] = FINETUNE_FBANK) -> tuple[Tensor, Tensor]:
        """Window w of clip i: video (3, n_frames, S, S) uint8 and fbank (audio_frames, mel_bins)."""
        faces, audio = self.arrays(i)
        start, (a, b) = self.entries[i].plan[w]
        n = self.cfg.n_frames
        if len(faces) < n:  # pad_short: the last frame repeated, all the audio
            faces = np.concatenate([faces, np.repeat(faces[-1:], n - len(faces), axis=0)])
        frames = torch.from_numpy(np.array(faces[start:start + n], dtype=np.uint8))  # a copy of this window only
        return frames.permute(3, 0, 1, 2), window_fbank(audio[a:b], self.cfg, fbank_norm)

    def all_windows(self, i: int) -> tuple[Tensor, Tensor]:
        """Every window of clip i as inference cuts them: (W, 3, n_frames, S, S) uint8, (W, frames, mel)."""
        faces, audio = self.arrays(i)
        if i in self._all_fbanks:
            video, _ = clip_windows(faces, None, self.cfg, pad_short=self.pad_short)
            return video, self._all_fbanks[i]
        video, fbank = clip_windows(faces, audio, self.cfg, source=str(self.entries[i].ref.path),
                                    pad_short=self.pad_short)
        size = fbank.numel() * fbank.element_size()
        if size <= self.memory_left:
            self._all_fbanks[i], self.memory_left = fbank, self.memory_left - size
        return video, fbank

    def batch(self, jobs: Sequence[tuple[int, int]], fbank_norm: tuple[float, float]) -> tuple[Tensor, Tensor]:
        """Windows (clip, window) stacked: video (B, 3, T, S, S) uint8 and fbank (B, frames, mel), on the CPU."""
        pairs = [self.window(i, w, fbank_norm) for i, w in jobs]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def _as_store(clips: "ClipSet | ClipStore", cfg: HAVICConfig, pad_short: bool) -> ClipStore:
    return clips if isinstance(clips, ClipStore) else ClipStore(clips, cfg, pad_short=pad_short)


def _to_model(video: Tensor, device: torch.device) -> Tensor:
    """uint8 face windows -> float in [0, 1] on the device, as inference does."""
    return video.to(device).float().div_(255.0)


# -- schedules ---------------------------------------------------------------------------------------------

class WarmupCosine:
    """Pre-training lr factor per optimiser step: linear from `start` to 1 over `warmup` steps, then
    cosine from 1 to `end` at step `total` (the release: start 1/25, end 1/25/1e4)."""

    def __init__(self, warmup: int, total: int, start: float = 1 / 25, end: float = 1 / 25 / 1e4):
        self.warmup, self.total, self.start, self.end = warmup, total, start, end

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.start + (1 - self.start) * step / self.warmup
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return self.end + (1 - self.end) * 0.5 * (1 + math.cos(math.pi * progress))


# -- pre-training --------------------------------------------------------------------------------------------

def _clip_ids(store: ClipStore, indices: Sequence[int]) -> str:
    return clips_digest(store.entries[i].ref for i in indices)


def pretrain(model: HAVICPretrain, clips: "ClipSet | ClipStore", *, seed: int = 0, device: str = "cpu",
             epochs: int = 200, batch_size: int = 112, lr: float = 1.5e-4, warmup_epochs: float = 20.0,
             weight_decay: float = 0.05, betas: tuple[float, float] = (0.95, 0.999), grad_clip: float = 1.0,
             temperature: float = 0.07, rec_tokens: str = "all", rec_weight: float = 1.0, cl_weight: float = 0.01,
             cross_weight: float = 1.0, real_only: bool = True, pad_short: bool = False,
             grad_checkpointing: bool = False, directory: Path | str | None = None,
             on_step: Callable[[int, int, int], None] | None = None,
             on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Pre-train `model` in place on the real clips of `clips` (all of them with real_only=False); returns
    the history, one {epoch, loss, rec, cl, cross, lr, clips, seconds, ...} per epoch.

    AdamW (lr, betas, weight decay), the warm-up-then-cosine schedule of `WarmupCosine` per step (a
    warm-up longer than the run is cut to it), masks drawn from the run's seeded generator, bf16
    autocast on CUDA. The model of the last epoch is kept (the authors release their 200th epoch).
    With `directory`, each epoch ends by writing `directory/last.pt`, and a run finds it and goes on.
    on_step(epoch, step, steps) and on_epoch(record) report progress.
    """
    cfg = model.cfg
    store = _as_store(clips, cfg, pad_short)
    usable = store.usable((lambda r: r.label == 0) if real_only else None)
    if not usable:
        reasons = Counter(e.reason for e in store.clips.failures.values())
        raise ValueError(f"no {'real ' if real_only else ''}clip to pre-train on "
                         f"({len(store.clips.refs)} clips given; failed: {dict(reasons) or 'none'})")
    dev = torch.device(device)
    model.to(dev)
    if grad_checkpointing:
        use_grad_checkpointing(model)
    steps = math.ceil(len(usable) / batch_size)
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, betas=betas,
                                  weight_decay=weight_decay)
    schedule = WarmupCosine(min(round(warmup_epochs * steps), epochs * steps), epochs * steps)
    task = _Pretraining(model, store, usable, batch_size, dev, dict(
        temperature=temperature, rec_tokens=rec_tokens, rec_weight=rec_weight, cl_weight=cl_weight,
        cross_weight=cross_weight))
    key = {"kind": "pretrain", "config": cfg.as_dict(), "seed": seed, "epochs": epochs, "batch_size": batch_size,
           "lr": lr, "warmup_epochs": warmup_epochs, "weight_decay": weight_decay, "betas": list(betas),
           "grad_clip": grad_clip, "temperature": temperature, "rec_tokens": rec_tokens,
           "weights": [rec_weight, cl_weight, cross_weight], "clips": _clip_ids(store, usable)}
    trainer = Trainer(epochs=epochs, grad_clip=grad_clip, schedule_every="step")
    return trainer.fit(model, optimiser, torch.optim.lr_scheduler.LambdaLR(optimiser, schedule), task, seed=seed,
                       device=dev, directory=directory, key=key, name="HAVIC pre-training", on_step=on_step,
                       on_epoch=on_epoch)


class _Pretraining:
    """Each epoch: the usable clips in a random order, one random window each, in batches; masks drawn per batch."""

    def __init__(self, model: HAVICPretrain, store: ClipStore, usable: list[int], batch_size: int, dev: torch.device,
                 loss_options: dict):
        self.model, self.store, self.usable, self.batch_size, self.dev = model, store, usable, batch_size, dev
        self.loss_options = loss_options

    def epoch_jobs(self, generator: torch.Generator) -> list:
        order = [self.usable[k] for k in torch.randperm(len(self.usable), generator=generator).tolist()]
        return chunks([(i, int(torch.randint(self.store.n_windows(i), (1,), generator=generator))) for i in order],
                      self.batch_size)

    def make_batch(self, job) -> tuple[Tensor, Tensor]:
        return self.store.batch(job, PRETRAIN_FBANK)

    def losses(self, batch: tuple[Tensor, Tensor], job, generator: torch.Generator) -> dict[str, Tensor]:
        video, audio = batch
        cfg, b = self.model.cfg, len(video)
        video_keep, audio_keep = tube_mask(b, cfg, generator), segment_mask(b, cfg, generator)
        video, audio = _to_model(video, self.dev), audio.to(self.dev)
        with autocast(self.dev):
            out = self.model(audio, video, video_keep=video_keep.to(self.dev), audio_keep=audio_keep.to(self.dev))
        return pretrain_losses(out, audio, video, cfg, **self.loss_options)

    def validate(self, record: dict) -> None:
        return None  # pre-training keeps its last epoch


# -- fine-tuning ---------------------------------------------------------------------------------------------

def _labels(refs: Sequence[ClipRef]) -> tuple[Tensor, Tensor, Tensor]:
    """(label, audio label, video label) float tensors; an unknown modality label is the clip label."""
    return (torch.tensor([float(r.label) for r in refs]),
            torch.tensor([float(_label(r.audio_label, r.label)) for r in refs]),
            torch.tensor([float(_label(r.video_label, r.label)) for r in refs]))


def evaluate(model: HAVIC, store: ClipStore, indices: Sequence[int], *, device: str = "cpu",
             batch_size: int = 8) -> dict:
    """Validation as inference scores: every window of each clip, the clip's logit = mean window logit.
    Returns {"logits": per clip, "auc": clip-level AUC (None with one class), "loss": fine-tuning loss
    averaged over windows}."""
    from sklearn.metrics import roc_auc_score

    dev = torch.device(device)
    model.eval()
    clip_logits, total, count = [], 0.0, 0
    with torch.inference_mode():
        for i in indices:
            videos, audios = store.all_windows(i)
            labels = [t.expand(1) for t in _labels([store.entries[i].ref])]
            window_logits = []
            for start in range(0, len(videos), batch_size):
                video, audio = _to_model(videos[start:start + batch_size], dev), audios[start:start + batch_size].to(dev)
                with autocast(dev):
                    heads = model.heads(audio, video)
                n = len(video)
                total += finetune_loss(heads, *(t.expand(n).to(dev) for t in labels)).item() * n
                count += n
                window_logits.append(heads.main.float()[:, 0].cpu())
            clip_logits.append(torch.cat(window_logits).mean().item())
    labels = np.array([store.entries[i].ref.label for i in indices])
    auc = float(roc_auc_score(labels, clip_logits)) if len(set(labels.tolist())) == 2 else None
    return {"logits": clip_logits, "auc": auc, "loss": total / max(count, 1)}


#: Fine-tuning keeps the epoch of highest validation AUC; equal AUC, or none (one class), goes to the lower loss.
SELECTION = Selection("auc", "max", tie_break=("loss", "min"))


def split_validation(train: ClipStore, val: ClipStore | None, seed: int) -> tuple[ClipStore, list[int], ClipStore, list[int]]:
    """(train store, train clips, validation store, validation clips). Without usable validation clips, a
    seeded hold-out of the training clips (`avbench.training.holdout`: by label, whole identities where
    the index has them) takes their place (a warning says so)."""
    usable = train.usable()
    checked = val.usable() if val is not None else []
    if checked:
        return train, usable, val, checked
    why = "no validation clips were given" if val is None or not val.clips.refs else \
        f"none of the {len(val.clips.refs)} validation clips can be used"
    refs = [train.entries[i].ref for i in usable]
    keep, held = holdout(labels_of(refs), seed, identities=[r.identity for r in refs])
    log.warning("HAVIC fine-tuning: %s; model selection uses a seeded stratified hold-out of %d of the %d "
                "training clips instead", why, len(held), len(usable))
    return train, [usable[k] for k in keep], train, [usable[k] for k in held]


def finetune(model: HAVIC, train: "ClipSet | ClipStore", val: "ClipSet | ClipStore | None", *, seed: int = 0,
             device: str = "cpu", epochs: int = 50, batch_size: int = 32, lr: float = 1e-5, head_lr: float = 1e-4,
             weight_decay: float = 0.05, betas: tuple[float, float] = (0.95, 0.999), restart_epochs: int = 10,
             grad_clip: float = 1.0, spec_freq_mask: int = 20, spec_time_mask: int = 100, eval_batch_size: int = 8,
             pad_short: bool = False, grad_checkpointing: bool = False, directory: Path | str | None = None,
             on_step: Callable[[int, int, int], None] | None = None,
             on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Fine-tune `model` in place and leave it with the weights of its best validation epoch; returns the
    history, one {epoch, loss, lr, head_lr, val_auc, val_loss, val_clips, best, clips, seconds, ...} per epoch.

    AdamW with two groups: the pre-trained encoders and interaction module at `lr`, the token reducers,
    layer weights and heads at `head_lr`; warm restarts every `restart_epochs`; class-balanced sampling
    (`label_combinations`, seeded, with replacement); one random window per drawn clip with SpecAugment;
    loss `finetune_loss`; selection on the validation clips only (`evaluate`, `SELECTION`); bf16 autocast
    on CUDA. Resumable through `directory` as `pretrain`.
    """
    cfg = model.cfg
    train_store = _as_store(train, cfg, pad_short)
    val_store = None if val is None else _as_store(val, cfg, pad_short)
    train_store, train_idx, val_store, val_idx = split_validation(train_store, val_store, seed)
    if not val_idx:
        log.warning("HAVIC fine-tuning: no clip to select a model on; the last epoch is kept")
    if not train_idx:
        reasons = Counter(e.reason for e in train_store.clips.failures.values())
        raise ValueError(f"no training clip can be used ({len(train_store.clips.refs)} given; failed: {dict(reasons)})")
    dev = torch.device(device)
    model.to(dev)
    if grad_checkpointing:
        use_grad_checkpointing(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    base = [p for n, p in named if n.startswith(PRETRAINED_PARTS)]
    head = [p for n, p in named if not n.startswith(PRETRAINED_PARTS)]
    optimiser = torch.optim.AdamW([{"params": base, "lr": lr}, {"params": head, "lr": head_lr, "name": "head"}],
                                  betas=betas, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimiser, T_0=restart_epochs, T_mult=1,
                                                                     eta_min=1e-9)
    task = _FineTuning(model, train_store, train_idx, val_store, val_idx, batch_size, eval_batch_size, dev,
                       (spec_freq_mask, spec_time_mask))
    key = {"kind": "finetune", "config": cfg.as_dict(), "seed": seed, "epochs": epochs, "batch_size": batch_size,
           "lr": lr, "head_lr": head_lr, "weight_decay": weight_decay, "betas": list(betas),
           "restart_epochs": restart_epochs, "grad_clip": grad_clip, "spec": [spec_freq_mask, spec_time_mask],
           "train": _clip_ids(train_store, train_idx), "val": _clip_ids(val_store, val_idx)}
    trainer = Trainer(epochs=epochs, grad_clip=grad_clip, schedule_every="epoch", select=SELECTION)
    return trainer.fit(model, optimiser, scheduler, task, seed=seed, device=dev, directory=directory, key=key,
                       name="HAVIC fine-tuning", on_step=on_step, on_epoch=on_epoch)


class _FineTuning:
    """Each epoch: len(train) clips drawn balanced over (audio, video) labels, one random window each,
    SpecAugment on its fbank; validation scores every window of each validation clip."""

    def __init__(self, model: HAVIC, store: ClipStore, train_idx: list[int], val_store: ClipStore, val_idx: list[int],
                 batch_size: int, eval_batch_size: int, dev: torch.device, spec: tuple[int, int]):
        self.model, self.store, self.train_idx, self.dev = model, store, train_idx, dev
        self.val_store, self.val_idx = val_store, val_idx
        self.batch_size, self.eval_batch_size, self.spec = batch_size, eval_batch_size, spec
        refs = [store.entries[i].ref for i in train_idx]
        self.groups, self.labels = label_combinations(refs), _labels(refs)
        self.mask_value = -FINETUNE_FBANK[0] / FINETUNE_FBANK[1]  # the raw log-Mel value 0, normalised

    def epoch_jobs(self, generator: torch.Generator) -> list:
        drawn = balanced_draw(self.groups, generator)
        return chunks([(k, int(torch.randint(self.store.n_windows(self.train_idx[k]), (1,), generator=generator)))
                       for k in drawn], self.batch_size)

    def make_batch(self, job) -> tuple[Tensor, Tensor]:
        return self.store.batch([(self.train_idx[k], w) for k, w in job], FINETUNE_FBANK)

    def losses(self, batch: tuple[Tensor, Tensor], job, generator: torch.Generator) -> dict[str, Tensor]:
        video, audio = batch
        audio = spec_augment(audio, *self.spec, generator, self.mask_value)
        picked = torch.tensor([k for k, _ in job])
        video, audio = _to_model(video, self.dev), audio.to(self.dev)
        with autocast(self.dev):
            heads = self.model.heads(audio, video)
        return {"total": finetune_loss(heads, *(t[picked].to(self.dev) for t in self.labels))}

    def validate(self, record: dict) -> dict | None:
        if not self.val_idx:
            return None
        result = evaluate(self.model, self.val_store, self.val_idx, device=self.dev, batch_size=self.eval_batch_size)
        return {"auc": result["auc"], "loss": result["loss"], "clips": len(self.val_idx)}
