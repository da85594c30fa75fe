"""HOLA stage 1 (seed paper 003, section 3.1; ../shared/specs/HOLA.md sections 3 and 7): AVF-MAE++ base
pre-training, masked audio-visual autoencoding of real clips, on avbench.training's Trainer.

One step, for a batch of real clips (each a 2.56 s window: 16 frames at stride 4 of the 25 fps video,
224 px then a 160 px crop, ImageNet's mean and std; the window's audio as the backbone's filterbank,
(1, 256, 128)):
1. encoder masks: video tube masking at 90% (the same spatial positions visible at every tubelet
   step), audio random masking at 81.25%, both *balanced over the LG regions* (the same visible
   count in every region, which the local-global encoders need; `tube_mask`, `random_region_mask`);
2. the two `LGEncoder`s read only their visible tokens; the outputs of blocks {3, 6, 9} are kept
   (after the encoder's final norm, as upstream reads them);
3. hierarchical audio-visual InfoNCE on those blocks: per block, the mean over the visible tokens of
   each modality, L2-normalised, cosine / 0.07, cross-entropy against the matching clip of the other
   modality in the batch, both directions averaged, summed over the blocks; weight 0.0025;
4. the cross-modal fusion module (`Fusion`, 2 layers, pre-training only, described there);
5. dual masking: each decoder reads the fused visible tokens (projected to its width, plus a sinusoid
   of their positions) and one mask token at every *decoder-kept* position (video: the running cell,
   a 2x2 cell with 2 of its 4 positions kept, its phase moving one step per tubelet step; audio:
   random), 50% each; the kept positions are the ones it reconstructs;
6. decoders of depth 4 (width 384, 6 heads): block 0 self-attention, blocks 1-3 also cross-attend
   to the encoder's block outputs {9, 6, 3} (deepest first; projected and position-embedded as the
   decoder's inputs);
7. loss: MSE per token (mean over the patch's values) at the positions both encoder-masked and
   decoder-kept, averaged over them, video + audio, + 0.0025 x InfoNCE. Targets: each patch
   normalised by its own mean and (unbiased) std per channel (+1e-6), video from the un-normalised
   pixels in [0, 1]; `use_frame_diff_as_target`: in each tubelet the second frame's normalised
   values minus the first frame's.

Optimisation (upstream's 181w base scripts): AdamW betas (0.9, 0.95), weight decay 0.05 (none on
biases, norms, messenger and mask tokens, timm's rule), lr = base lr x batch / 256, linear warm-up
from 0 then cosine to min lr (also x batch / 256), per step; 100 epochs of lr 1.5e-4, warm-up 10.
The model of the last epoch is kept. `pretrain` writes `<out>/encoders.safetensors` in AVF-MAE++'s
layout (`encoder.*`, `encoder_audio.*`, read back by checkpoint.load_avfmae) and `<out>/pretrain.json`.

Upstream's run_mae_pretraining_av.py defaults also hold here: no gradient clipping, drop-path 0 in
the encoders while pre-training (EncoderConfig's 0.1 is the fine-tuning value).

Where spec and upstream differ or are silent, ours (each also in PretrainConfig or an argument):
- region-balanced encoder masks (upstream's masks are not; see backbone.py on what its encoder does);
- the fusion module's layout (`Fusion`; the spec reports the released fusion code broken, and its
  joint token's output is unused in upstream's pre-training forward: a simpler module of the same
  parts, self + cross attention, gated mixing, a refined joint token);
- the filterbank of the window resampled to 256 frames (2.56 s gives 254; upstream zero-pads 2);
- augmentation: upstream's multi-scale crop (side 1, .875, .75 or .66 of the 224 px frame, height
  and width at most one scale apart) at a uniformly drawn position (upstream's GroupMultiScaleCrop
  picks among fixed positions), resized to 160, no flip; roll_mag_aug on the window's waveform (a
  uniform circular shift, gain Beta(10, 10) + 0.5);
- the last, partial batch of an epoch is kept (upstream drops it), as in the other families;
- the InfoNCE negatives are the other clips of the batch on the same device (as upstream under DDP);
- a clip shorter than the window (2.56 s of video and of audio) is left out as `too_short` unless
  pad_short (its last frame repeated, its audio zero-padded).
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avbench.clips import ClipError, ClipRef
from avbench.detector import InputSpec
from avbench.training import Trainer, autocast, chunks, clips_digest

from .backbone import Attention, EncoderConfig, LGEncoder, Mlp, sinusoid_table
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, SAMPLE_RATE, Crop, fbank128, video_tensor

if TYPE_CHECKING:
    from avbench.loader import ClipSet

log = logging.getLogger(__name__)

WEIGHTS = "encoders.safetensors"
RECORD = "pretrain.json"
#: upstream's GroupMultiScaleCrop scales of the frame side
CROP_SCALES = (1.0, 0.875, 0.75, 0.66)


# -- configuration ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PretrainConfig:
    """Stage-1 settings. `PretrainConfig()` is AVF-MAE++ base as HOLA uses it (spec section 3, upstream
    `pretrain_hicmae_dim512_patch16_160_a256` with the 181w scripts' flags); `tiny()` the CPU twin of
    spec section 7. Every switch defaults on as the spec says. Learning rates are *base* values:
    the optimiser runs at lr x batch_size / 256 (`effective_lr`)."""

    video: EncoderConfig = field(default_factory=lambda: EncoderConfig.video_base(drop_path=0.0))
    audio: EncoderConfig = field(default_factory=lambda: EncoderConfig.audio_base(drop_path=0.0))
    # inputs: video.input_size[0] frames at this stride of the 25 fps video, and the same span of audio
    frame_stride: int = 4
    fps: float = 25.0
    roll_mag_aug: bool = True
    # encoder masks (visible share = 1 - ratio, the same whole number in every LG region)
    video_mask_ratio: float = 0.9  # tube
    audio_mask_ratio: float = 0.8125  # random; the paper's 0.80 leaves 3.2 of 16 tokens per region
    # decoder (dual) masks; off: each decoder reconstructs every encoder-masked position (VideoMAE)
    dual_masking: bool = True
    video_decoder_mask_ratio: float = 0.5  # running cell
    audio_decoder_mask_ratio: float = 0.5  # random
    # cross-modal fusion (pre-training only)
    use_fusion: bool = True
    fusion_depth: int = 2
    fusion_heads: int = 8
    fusion_joint_token: bool = True
    # decoders
    decoder_depth: int = 4
    decoder_dim: int = 384
    decoder_heads: int = 6
    decoder_mlp_ratio: float = 4.0
    use_skips: bool = True
    skip_blocks: tuple[int, ...] = (3, 6, 9)  # encoder blocks (0-based); decoder block i >= 1 reads the i-th deepest
    # targets
    normalize_targets: bool = True
    use_frame_diff_as_target: bool = True
    # hierarchical audio-visual InfoNCE
    use_nce: bool = True
    nce_blocks: tuple[int, ...] = (3, 6, 9)
    nce_temperature: float = 0.07
    nce_weight: float = 0.0025
    # optimisation
    epochs: int = 100
    batch_size: int = 164  # upstream's per GPU (x 8 GPUs = 1312); the batch here is the whole step's
    lr: float = 1.5e-4
    min_lr: float = 1e-5
    warmup_epochs: float = 10.0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = None

    @classmethod
    def tiny(cls, **changes) -> "PretrainConfig":
        """The CPU twin: tiny encoders (backbone.py), 4 frames at stride 4 (0.64 s, so that the demo
        corpus's 2 s clips hold windows at several offsets), masks
        50% / 50%, decoders of depth 2 and width 16, one skip and one InfoNCE level at encoder block 0,
        a fusion of 2 layers of 2 heads; 3 epochs of batch 2 at a base lr of 0.1 (7.8e-4 applied)."""
        sizes = dict(video=EncoderConfig.video_tiny(drop_path=0.0), audio=EncoderConfig.audio_tiny(drop_path=0.0),
                     frame_stride=4, video_mask_ratio=0.5, audio_mask_ratio=0.5, fusion_heads=2,
                     decoder_depth=2, decoder_dim=16, decoder_heads=2, decoder_mlp_ratio=2.0, skip_blocks=(0,),
                     nce_blocks=(0,), epochs=3, batch_size=2, lr=0.1, warmup_epochs=0.0)
        return cls(**{**sizes, **changes})

    @classmethod
    def from_dict(cls, d: dict) -> "PretrainConfig":
        """The inverse of `as_dict` (pretrain.json's config back to a config)."""
        d = dict(d)
        for name in ("video", "audio"):
            if isinstance(d.get(name), dict):
                d[name] = EncoderConfig(**d[name])
        for name in ("skip_blocks", "nce_blocks", "betas"):
            if name in d:
                d[name] = tuple(d[name])
        return cls(**d)

    def __post_init__(self):
        for name in ("skip_blocks", "nce_blocks", "betas"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        problems = []
        if self.video.modality != "video" or self.audio.modality != "audio":
            problems.append("video and audio must be a video and an audio EncoderConfig")
        else:
            problems += self._mask_problems()
            depth = min(self.video.depth, self.audio.depth)
            for name in ("skip_blocks", "nce_blocks"):
                blocks = getattr(self, name)
                if any(not 0 <= b < depth for b in blocks) or len(set(blocks)) < len(blocks):
                    problems.append(f"{name} {blocks} must be distinct encoder blocks in 0..{depth - 1}")
            if self.use_skips and len(self.skip_blocks) != self.decoder_depth - 1:
                problems.append(f"decoder blocks 1..{self.decoder_depth - 1} each read one skip: skip_blocks needs "
                                f"{self.decoder_depth - 1} blocks, got {self.skip_blocks} (or use_skips=False)")
            if self.use_nce and not self.nce_blocks:
                problems.append("use_nce needs at least one nce_blocks level")
            if self.use_fusion and self.video.dim != self.audio.dim:
                problems.append(f"the fusion module needs one width (video {self.video.dim}, audio {self.audio.dim})")
            if self.use_fusion and (self.fusion_depth < 1 or self.video.dim % self.fusion_heads):
                problems.append(f"fusion_depth must be >= 1 and dim {self.video.dim} divide by fusion_heads")
        if self.decoder_depth < 1 or self.decoder_dim % self.decoder_heads:
            problems.append(f"decoder_depth must be >= 1 and decoder_dim {self.decoder_dim} divide by decoder_heads "
                            f"{self.decoder_heads}")
        if self.frame_stride < 1 or self.fps <= 0:
            problems.append("frame_stride must be >= 1 and fps > 0")
        if self.nce_temperature <= 0 or self.nce_weight < 0:
            problems.append("nce_temperature must be > 0 and nce_weight >= 0")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.min_lr < 0 or self.warmup_epochs < 0:
            problems.append("epochs and batch_size must be >= 1, lr > 0, min_lr and warmup_epochs >= 0")
        if len(self.betas) != 2:
            problems.append(f"betas are two numbers, got {self.betas}")
        if problems:
            raise ValueError("invalid PretrainConfig: " + "; ".join(problems))

    def _mask_problems(self) -> list[str]:
        """Each ratio must leave a whole, non-zero number of tokens where the masker counts them."""
        problems = []
        v, a = self.video, self.audio
        per_step = v.region[1] * v.region[2]  # a region's spatial positions at one tubelet step
        why = ("the local-global encoder needs the same whole number of visible tokens in every LG region "
               "(tokens of a region x (1 - ratio) must be whole)")
        for ratio, count, what, name in (
                (self.video_mask_ratio, per_step, f"video tube masking keeps of the {per_step} spatial positions of "
                                                  f"an LG region ({v.region[1]}x{v.region[2]} tokens) per tubelet step",
                 "video_mask_ratio"),
                (self.audio_mask_ratio, a.region_tokens, f"audio random masking keeps of the {a.region_tokens} tokens "
                                                         f"of an LG region ({a.region[0]}x{a.region[1]})",
                 "audio_mask_ratio")):
            kept = count * (1 - ratio)
            if not 0 < ratio < 1 or abs(kept - round(kept)) > 1e-6 or round(kept) < 1:
                problems.append(f"{name} {ratio}: {what} {kept:g}; {why}, e.g. "
                                f"{', '.join(f'{1 - k / count:g}' for k in range(1, min(count, 4)))}")
        if self.dual_masking:
            dropped = 4 * self.video_decoder_mask_ratio
            if abs(dropped - round(dropped)) > 1e-6 or not 1 <= round(dropped) <= 3:
                problems.append(f"video_decoder_mask_ratio {self.video_decoder_mask_ratio}: the running cell drops a "
                                f"whole number of the 4 positions of its 2x2 cell (0.25, 0.5 or 0.75)")
            if v.grid[1] % 2 or v.grid[2] % 2:
                problems.append(f"the running cell tiles 2x2 cells: the video token grid {v.grid[1:]} must be even")
            kept = a.num_tokens * (1 - self.audio_decoder_mask_ratio)
            if abs(kept - round(kept)) > 1e-6 or not 1 <= round(kept) <= a.num_tokens:
                problems.append(f"audio_decoder_mask_ratio {self.audio_decoder_mask_ratio} keeps {kept:g} of the "
                                f"{a.num_tokens} audio tokens: it must keep a whole number >= 1")
        return problems

    # -- derived sizes -------------------------------------------------------------------------------------
    @property
    def frames(self) -> int:
        return self.video.input_size[0]

    @property
    def crop(self) -> int:
        return self.video.input_size[1]

    @property
    def resize(self) -> int:
        """The square the frames are resized to before the crop: 224 for 160 (spec section 1)."""
        return round(self.crop * 224 / 160)

    @property
    def window_frames(self) -> int:
        """Video frames one window spans: frames x stride (64 = 2.56 s at 25 fps)."""
        return self.frames * self.frame_stride

    @property
    def window_seconds(self) -> float:
        return self.window_frames / self.fps

    @property
    def window_samples(self) -> int:
        return round(self.window_seconds * SAMPLE_RATE)

    @property
    def input_spec(self) -> InputSpec:
        """What the loader decodes: 25 fps frames resized to `resize` square (as the HOLA detector's), audio."""
        return InputSpec(fps=self.fps, audio=True, frame_size=self.resize)

    def effective_lr(self, batch_size: int | None = None) -> tuple[float, float]:
        """(peak, final) learning rates applied: the base values x batch / 256 (upstream's rule)."""
        scale = (batch_size or self.batch_size) / 256
        return self.lr * scale, self.min_lr * scale

    def as_dict(self) -> dict:
        d = asdict(self)
        d["video"], d["audio"] = self.video.as_dict(), self.audio.as_dict()
        for name in ("skip_blocks", "nce_blocks", "betas"):
            d[name] = list(d[name])
        return d


# -- masks --------------------------------------------------------------------------------------------------

def _config(encoder: LGEncoder | EncoderConfig) -> EncoderConfig:
    return encoder.cfg if isinstance(encoder, LGEncoder) else encoder


def _whole(count: int, ratio: float, what: str) -> int:
    kept = count * (1 - ratio)
    if abs(kept - round(kept)) > 1e-6 or not 1 <= round(kept) <= count:
        raise ValueError(f"mask ratio {ratio} keeps {kept:g} of {count} {what}: the count must be a whole number >= 1")
    return int(round(kept))


def _balanced(groups: Tensor, kept: int, batch: int, generator: torch.Generator | None) -> Tensor:
    """(batch, n) bool: in each group of `groups` (n,) (groups numbered 0..G-1, all of one size), `kept`
    members drawn uniformly without replacement, independently per sample."""
    n = len(groups)
    size = n // (int(groups.max()) + 1)
    key = groups.double()[None] + torch.rand(batch, n, generator=generator, dtype=torch.float64)
    order = key.argsort(dim=1)  # group by group, in a random order inside each
    chosen = (torch.arange(n) % size < kept).expand(batch, -1)
    return torch.zeros(batch, n, dtype=torch.bool).scatter_(1, order, chosen)


def tube_mask(encoder: LGEncoder | EncoderConfig, batch: int, ratio: float,
              generator: torch.Generator | None = None) -> Tensor:
    """Video tube masking balanced over the LG regions: (batch, N) bool, True = visible. Per sample,
    the same spatial positions are visible at every tubelet step, and in each region's spatial slice
    (region h x w tokens) exactly (1 - ratio) x h x w of them, so every LG region keeps
    t x that many. Full size: 5 of each 5x10 half-frame, 80 of 800 tokens."""
    cfg = _config(encoder)
    steps, height, width = cfg.grid
    per_step = cfg.region[1] * cfg.region[2]
    kept = _whole(per_step, ratio, "spatial positions of an LG region per tubelet step")
    h, w = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    part = ((h // cfg.region[1]) * (width // cfg.region[2]) + w // cfg.region[2]).flatten()
    spatial = _balanced(part, kept, batch, generator)  # (batch, H*W)
    return spatial.repeat(1, steps)


def random_region_mask(encoder: LGEncoder | EncoderConfig, batch: int, ratio: float,
                       generator: torch.Generator | None = None) -> Tensor:
    """Random masking balanced over the LG regions: (batch, N) bool, True = visible, (1 - ratio) of
    each region's tokens visible, drawn uniformly per sample and region. Full-size audio at 0.8125:
    3 of each region's 16 tokens, 24 of 128."""
    cfg = _config(encoder)
    kept = _whole(cfg.region_tokens, ratio, "tokens of an LG region")
    return _balanced(cfg.region_index(), kept, batch, generator)


def running_cell_mask(encoder: LGEncoder | EncoderConfig, batch: int, ratio: float = 0.5,
                      generator: torch.Generator | None = None) -> Tensor:
    """The video decoder's running-cell mask (MAR, VideoMAE V2): (batch, N) bool, True = kept (the
    positions the decoder reconstructs). The spatial grid is tiled with 2x2 cells; in a cell, of the
    4 positions taken in a fixed cyclic order, 4 x ratio consecutive ones are dropped and the rest
    kept, and the start of that run moves one position per tubelet step from a random phase per
    sample. Every step keeps (1 - ratio) of its positions."""
    cfg = _config(encoder)
    steps, height, width = cfg.grid
    dropped = round(4 * ratio)
    if abs(4 * ratio - dropped) > 1e-6 or not 1 <= dropped <= 3 or height % 2 or width % 2:
        raise ValueError(f"the running cell drops 1-3 of 4 positions (ratio 0.25, 0.5, 0.75) on an even grid; got "
                         f"ratio {ratio}, grid {height}x{width}")
    queue = torch.arange(4) < dropped  # True = dropped
    phase = torch.randint(4, (batch,), generator=generator)
    cycle = (torch.arange(4)[None, None] + phase[:, None, None] + torch.arange(steps)[None, :, None]) % 4
    cells = queue[cycle].reshape(batch, steps, 2, 2)  # (batch, steps, 2, 2) dropped
    rows, cols = torch.arange(height) % 2, torch.arange(width) % 2
    dropped_map = cells[:, :, rows][:, :, :, cols]  # (batch, steps, H, W)
    return ~dropped_map.reshape(batch, -1)


def random_mask(num_tokens: int, batch: int, ratio: float, generator: torch.Generator | None = None) -> Tensor:
    """Plain random masking (the audio decoder's): (batch, N) bool, True = kept, (1 - ratio) x N each."""
    kept = _whole(num_tokens, ratio, "tokens")
    return _balanced(torch.zeros(num_tokens, dtype=torch.long), kept, batch, generator)


class Masks(NamedTuple):
    """One batch's masks, (B, N) bool each: encoder-visible and decoder-kept, per modality."""

    video_visible: Tensor
    video_keep: Tensor
    audio_visible: Tensor
    audio_keep: Tensor

    def to(self, device) -> "Masks":
        return Masks(*(m.to(device) for m in self))


def draw_masks(cfg: PretrainConfig, batch: int, generator: torch.Generator | None = None) -> Masks:
    """Encoder masks (tube / random, region-balanced) and decoder masks (running cell / random, or, without
    dual masking, every encoder-masked position), in that order from `generator`."""
    video_visible = tube_mask(cfg.video, batch, cfg.video_mask_ratio, generator)
    audio_visible = random_region_mask(cfg.audio, batch, cfg.audio_mask_ratio, generator)
    if cfg.dual_masking:
        video_keep = running_cell_mask(cfg.video, batch, cfg.video_decoder_mask_ratio, generator)
        audio_keep = random_mask(cfg.audio.num_tokens, batch, cfg.audio_decoder_mask_ratio, generator)
    else:
        video_keep, audio_keep = ~video_visible, ~audio_visible
    return Masks(video_visible, video_keep, audio_visible, audio_keep)


# -- targets and losses -------------------------------------------------------------------------------------

def _normalise_patches(x: Tensor) -> Tensor:
    """(B, N, P, C): each patch and channel to zero mean and unit (unbiased) std over its P values, + 1e-6."""
    return (x - x.mean(dim=-2, keepdim=True)) / (x.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6)


def video_targets(video: Tensor, cfg: EncoderConfig, normalize: bool = True, frame_diff: bool = True) -> Tensor:
    """(B, 3, T, H, W) ImageNet-normalised -> (B, N, tubelet * patch * patch * 3), tokens in raster
    order, values (frame, row, column, channel): the pixels in [0, 1] (the normalisation undone),
    normalised per patch and channel with `normalize`; with `frame_diff` every frame of a tubelet
    after the first becomes its difference from the first (after the normalisation, as upstream)."""
    b, c, t, h, w = video.shape
    p0, p = cfg.tubelet, cfg.patch
    mean = torch.tensor(IMAGENET_MEAN, device=video.device)[None, :, None, None, None]
    std = torch.tensor(IMAGENET_STD, device=video.device)[None, :, None, None, None]
    x = (video.float() * std + mean).reshape(b, c, t // p0, p0, h // p, p, w // p, p)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, -1, p0 * p * p, c)
    if normalize:
        x = _normalise_patches(x)
    if frame_diff and p0 > 1:
        x = x.reshape(b, x.shape[1], p0, p * p, c)
        x = torch.cat([x[:, :, :1], x[:, :, 1:] - x[:, :, :1]], dim=2)
    return x.reshape(b, -1, p0 * p * p * c)


def audio_targets(audio: Tensor, cfg: EncoderConfig, normalize: bool = True) -> Tensor:
    """(B, 1, time, freq) -> (B, N, patch * patch): patches in raster order (time, freq), normalised per
    patch with `normalize`."""
    b, c, t, f = audio.shape
    p = cfg.patch
    x = audio.float().reshape(b, c, t // p, p, f // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, -1, p * p, c)
    if normalize:
        x = _normalise_patches(x)
    return x.reshape(b, -1, p * p * c)


def reconstruction_loss(prediction: Tensor, target: Tensor, keep: Tensor, visible: Tensor) -> Tensor:
    """Eq. 6 as upstream computes it: prediction (B, K, P) for the decoder-kept positions of `keep`
    (B, N) in raster order; the squared error averaged over each token's P values, then over the
    tokens that are kept and encoder-masked (~visible)."""
    index = _positions(keep)
    wanted = target.float().gather(1, index[..., None].expand(-1, -1, target.shape[-1]))
    per_token = (prediction.float() - wanted).square().mean(dim=-1)
    weight = (~visible).gather(1, index).float()
    return (per_token * weight).sum() / weight.sum().clamp_min(1.0)


def info_nce(video: Tensor, audio: Tensor, temperature: float = 0.07) -> Tensor:
    """One level of the audio-visual InfoNCE: (B, D) pooled features of each modality, L2-normalised,
    logits = cosine / temperature, cross-entropy of every clip against its own other modality among
    the batch's, video->audio and audio->video averaged."""
    v, a = F.normalize(video.float(), dim=-1), F.normalize(audio.float(), dim=-1)
    logits = v @ a.T / temperature
    labels = torch.arange(len(v), device=v.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def _positions(mask: Tensor) -> Tensor:
    """(B, N) bool with the same count k per row -> (B, k) the True positions, ascending."""
    b = mask.shape[0]
    return mask.nonzero()[:, 1].reshape(b, -1)


# -- modules ------------------------------------------------------------------------------------------------

def _init_linear(module: nn.Module) -> None:
    """Upstream's pre-training initialisation: Xavier-uniform Linear weights, zero biases, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class Block(nn.Module):
    """Pre-norm transformer block: self-attention, optionally cross-attention to a context (query and
    context each layer-normed), MLP (upstream's decoder `Block` / `CSBlock`)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, cross: bool = False, eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads)
        self.cross = cross
        if cross:
            self.cross_norm_q, self.cross_norm_kv = nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps)
            self.cross_attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x))
        if self.cross:
            x = x + self.cross_attn(self.cross_norm_q(x), self.cross_norm_kv(context))
        return x + self.mlp(self.norm2(x))


class FusionBranch(nn.Module):
    """One modality's half of a fusion layer. From its tokens x and a context (the other modality's
    tokens, after the joint token when there is one):
      s = x + SA(LN x),          s = s + MLP(LN s)        (intra-modal, paper eqs. 1-2)
      c = x + CA(LN x, LN ctx),  c = c + MLP'(LN c)       (inter-modal, paper eqs. 3-4)
      out = LN(sigmoid(W_s [s; c]) * s + sigmoid(W_c [s; c]) * c)   (gated mixing)"""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, eps: float = 1e-6):
        super().__init__()
        norm = lambda: nn.LayerNorm(dim, eps=eps)  # noqa: E731
        self.self_norm, self.self_attn, self.self_mlp_norm = norm(), Attention(dim, heads), norm()
        self.self_mlp = Mlp(dim, int(dim * mlp_ratio))
        self.cross_norm_q, self.cross_norm_kv = norm(), norm()
        self.cross_attn, self.cross_mlp_norm = Attention(dim, heads), norm()
        self.cross_mlp = Mlp(dim, int(dim * mlp_ratio))
        self.gate_self, self.gate_cross = nn.Linear(2 * dim, dim), nn.Linear(2 * dim, dim)
        self.norm = norm()

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        s = x + self.self_attn(self.self_norm(x))
        s = s + self.self_mlp(self.self_mlp_norm(s))
        c = x + self.cross_attn(self.cross_norm_q(x), self.cross_norm_kv(context))
        c = c + self.cross_mlp(self.cross_mlp_norm(c))
        both = torch.cat([s, c], dim=-1)
        return self.norm(torch.sigmoid(self.gate_self(both)) * s + torch.sigmoid(self.gate_cross(both)) * c)


class Fusion(nn.Module):
    """The pre-training cross-modal fusion module (paper 3.1.1; upstream `encoder_fusion`, whose released
    block does not run, so this layout is ours). `depth` layers; in each, both modalities update at once
    from the layer's input (`FusionBranch`, own weights per modality). With `joint`, a joint token,
    Linear(2C -> C) of the two modalities' mean tokens, heads each context and is refined after every
    layer from that layer's outputs: j = LN(j + W_v attend(j, v) + W_a attend(j, a)), attend being
    single-head dot-product attention pooling (upstream's "iterative refinement"). The encoders
    fine-tuned later never see this module."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float, joint: bool = True, eps: float = 1e-6):
        super().__init__()
        self.layers = nn.ModuleList(nn.ModuleDict({"video": FusionBranch(dim, heads, mlp_ratio, eps),
                                                   "audio": FusionBranch(dim, heads, mlp_ratio, eps)})
                                    for _ in range(depth))
        self.joint = joint
        if joint:
            self.joint_in = nn.Linear(2 * dim, dim)
            self.joint_from = nn.ModuleList(nn.ModuleDict({"video": nn.Linear(dim, dim), "audio": nn.Linear(dim, dim)})
                                            for _ in range(depth))
            self.joint_norms = nn.ModuleList(nn.LayerNorm(dim, eps=eps) for _ in range(depth))

    @staticmethod
    def _attend(query: Tensor, tokens: Tensor) -> Tensor:
        weights = torch.softmax(query @ tokens.transpose(1, 2) / math.sqrt(query.shape[-1]), dim=-1)
        return weights @ tokens

    def forward(self, video: Tensor, audio: Tensor) -> tuple[Tensor, Tensor]:
        joint = self.joint_in(torch.cat([video.mean(1), audio.mean(1)], dim=-1))[:, None] if self.joint else None
        for k, layer in enumerate(self.layers):
            video_context = audio if joint is None else torch.cat([joint, audio], dim=1)
            audio_context = video if joint is None else torch.cat([joint, video], dim=1)
            video, audio = layer["video"](video, video_context), layer["audio"](audio, audio_context)
            if joint is not None:
                joint = self.joint_norms[k](joint + self.joint_from[k]["video"](self._attend(joint, video))
                                            + self.joint_from[k]["audio"](self._attend(joint, audio)))
        return video, audio


class Decoder(nn.Module):
    """A modality's MAE decoder with dual masking. Input: the (fused) visible encoder tokens, projected
    to the decoder width by `encoder_to_decoder` (no bias) plus the decoder's sinusoid at their
    positions, then `mask_token` plus the sinusoid at each decoder-kept position. Block 0 is
    self-attention; block i >= 1 also cross-attends to the i-th skip (an encoder block's normed visible
    tokens, projected and position-embedded the same way). Output: LayerNorm + Linear to the patch
    values of the mask-token outputs, (B, K, out_dim)."""

    def __init__(self, encoder_dim: int, dim: int, depth: int, heads: int, mlp_ratio: float, num_tokens: int,
                 out_dim: int, skips: int):
        super().__init__()
        self.encoder_to_decoder = nn.Linear(encoder_dim, dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, cross=1 <= i <= skips) for i in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, out_dim)
        self.num_tokens, self.dim = num_tokens, dim
        self.register_buffer("pos_embed", sinusoid_table(num_tokens, dim), persistent=False)
        _init_linear(self)
        nn.init.trunc_normal_(self.mask_token, std=0.02, a=-0.04, b=0.04)

    def _place(self, tokens: Tensor, positions: Tensor) -> Tensor:
        pos = self.pos_embed[0].to(tokens.dtype)[positions]
        return self.encoder_to_decoder(tokens) + pos

    def forward(self, tokens: Tensor, visible: Tensor, keep: Tensor, skips: Sequence[Tensor] = ()) -> Tensor:
        visible_at, keep_at = _positions(visible), _positions(keep)
        x = self._place(tokens, visible_at)
        masked = self.mask_token.to(x.dtype) + self.pos_embed[0].to(x.dtype)[keep_at]
        x = torch.cat([x, masked], dim=1)
        contexts = [self._place(s, visible_at) for s in skips]
        for i, block in enumerate(self.blocks):
            x = block(x, contexts[i - 1] if block.cross else None)
        return self.head(self.norm(x[:, -keep_at.shape[1]:]))


class AVMAE(nn.Module):
    """AVF-MAE++ pre-training network: `video_encoder` and `audio_encoder` (the LGEncoders HOLA
    fine-tunes), `fusion`, `video_decoder`, `audio_decoder`. forward(video, audio, masks) -> the
    losses {total, video, audio, nce} (float32; nce is the unweighted InfoNCE sum, 0 when off)."""

    def __init__(self, cfg: PretrainConfig):
        super().__init__()
        self.cfg = cfg
        self.video_encoder, self.audio_encoder = LGEncoder(cfg.video), LGEncoder(cfg.audio)
        self.fusion = (Fusion(cfg.video.dim, cfg.fusion_depth, cfg.fusion_heads, cfg.video.mlp_ratio,
                              cfg.fusion_joint_token) if cfg.use_fusion else None)
        if self.fusion is not None:
            _init_linear(self.fusion)
        skips = len(cfg.skip_blocks) if cfg.use_skips else 0
        v, a = cfg.video, cfg.audio
        self.video_decoder = Decoder(v.dim, cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads,
                                     cfg.decoder_mlp_ratio, v.num_tokens, 3 * v.tubelet * v.patch ** 2, skips)
        self.audio_decoder = Decoder(a.dim, cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads,
                                     cfg.decoder_mlp_ratio, a.num_tokens, a.patch ** 2, skips)

    def draw_masks(self, batch: int, generator: torch.Generator | None = None) -> Masks:
        return draw_masks(self.cfg, batch, generator)

    def _blocks(self) -> list[int]:
        cfg = self.cfg
        return sorted(set(cfg.skip_blocks if cfg.use_skips else ()) | set(cfg.nce_blocks if cfg.use_nce else ()))

    def encode(self, encoder: LGEncoder, x: Tensor, visible: Tensor) -> tuple[Tensor, dict[int, Tensor]]:
        """Visible tokens after the final norm, and the wanted blocks' outputs after the same norm."""
        blocks = self._blocks()
        if not blocks:
            return encoder(x, visible), {}
        tokens, outputs = encoder(x, visible, return_blocks=blocks)
        return tokens, {i: encoder.norm(o) for i, o in zip(blocks, outputs)}

    def forward(self, video: Tensor, audio: Tensor, masks: Masks) -> dict[str, Tensor]:
        cfg = self.cfg
        v_tokens, v_blocks = self.encode(self.video_encoder, video, masks.video_visible)
        a_tokens, a_blocks = self.encode(self.audio_encoder, audio, masks.audio_visible)
        nce = video.new_zeros((), dtype=torch.float32)
        if cfg.use_nce:
            for i in cfg.nce_blocks:
                nce = nce + info_nce(v_blocks[i].mean(1), a_blocks[i].mean(1), cfg.nce_temperature)
        if self.fusion is not None:
            v_tokens, a_tokens = self.fusion(v_tokens, a_tokens)
        deep = sorted(cfg.skip_blocks, reverse=True) if cfg.use_skips else []  # decoder block 1 reads the deepest
        v_pred = self.video_decoder(v_tokens, masks.video_visible, masks.video_keep, [v_blocks[i] for i in deep])
        a_pred = self.audio_decoder(a_tokens, masks.audio_visible, masks.audio_keep, [a_blocks[i] for i in deep])
        v_target = video_targets(video, cfg.video, cfg.normalize_targets, cfg.use_frame_diff_as_target)
        a_target = audio_targets(audio, cfg.audio, cfg.normalize_targets)
        v_loss = reconstruction_loss(v_pred, v_target, masks.video_keep, masks.video_visible)
        a_loss = reconstruction_loss(a_pred, a_target, masks.audio_keep, masks.audio_visible)
        total = v_loss + a_loss + (cfg.nce_weight * nce if cfg.use_nce else 0.0)
        return {"total": total, "video": v_loss, "audio": a_loss, "nce": nce}


# -- clips and windows --------------------------------------------------------------------------------------

class Window(NamedTuple):
    """One training example drawn for an epoch: the clip (index into the usable clips), its first frame,
    the crop, and roll_mag_aug's shift (samples) and gain."""

    clip: int
    start: int
    crop: Crop
    shift: int
    gain: float


def multiscale_crop(resized: int, generator: torch.Generator) -> Crop:
    """Upstream's GroupMultiScaleCrop rule on a `resized` square: height and width each one of
    CROP_SCALES x the side, at most one scale apart, at a uniform position; no flip."""
    sizes = [int(resized * s) for s in CROP_SCALES]
    pairs = [(h, w) for i, h in enumerate(sizes) for j, w in enumerate(sizes) if abs(i - j) <= 1]
    h, w = pairs[int(torch.randint(len(pairs), (1,), generator=generator))]
    top = int(torch.randint(resized - h + 1, (1,), generator=generator))
    left = int(torch.randint(resized - w + 1, (1,), generator=generator))
    return Crop(top, left, h, w, False)


def beta_10_10(generator: torch.Generator) -> float:
    """A Beta(10, 10) draw from `generator`: G1 / (G1 + G2), each Gamma(10, 1) the sum of 10 exponentials."""
    u = torch.rand(2, 10, generator=generator, dtype=torch.float64).clamp_min(1e-300)
    g = -u.log().sum(dim=1)
    return float(g[0] / g.sum())


class PretrainClips:
    """The real clips of a ClipSet as pre-training windows, loaded through its loader each time a batch
    needs them (the loader's media cache makes that cheap), so memory does not grow with the corpus:
    only each usable clip's frame and sample counts are kept.

    `admit()` looks at every clip once: fakes (label 1) are skipped and counted; a clip that fails to
    load, has no audio or is too short for a window is recorded in `clips.failures` with its reason."""

    def __init__(self, clips: "ClipSet", cfg: PretrainConfig, pad_short: bool = False):
        self.clips, self.cfg, self.pad_short = clips, cfg, pad_short
        self.refs: list[ClipRef] = []
        self.lengths: list[tuple[int, int]] = []  # (frames, samples)
        self.skipped_fakes = 0
        self._admitted = False

    def admit(self) -> list[ClipRef]:
        if self._admitted:
            return self.refs
        for ref in self.clips.refs:
            if ref.label != 0:
                self.skipped_fakes += 1
                continue
            try:
                frames, audio = self._load(ref)
                self._max_start(len(frames), len(audio), ref)
            except ClipError as exc:
                self.clips.failures[ref.clip_id] = exc
                continue
            self.refs.append(ref)
            self.lengths.append((len(frames), len(audio)))
        self._admitted = True
        return self.refs

    def _load(self, ref: ClipRef) -> tuple[np.ndarray, np.ndarray]:
        clip = self.clips.loader.load(ref, self.clips.spec, self.clips.remove_audio)
        if clip.frames is None or len(clip.frames) == 0:
            raise ClipError("no_video", f"{ref.path}: the loader gave no frames ({self.clips.spec})")
        if clip.audio is None or clip.audio_removed:
            raise ClipError("no_audio", f"{ref.path}: audio-visual pre-training needs the clip's audio")
        return clip.frames, clip.audio

    def _max_start(self, n_frames: int, n_samples: int, ref: ClipRef | None = None) -> int:
        cfg = self.cfg
        by_audio = math.floor((n_samples - cfg.window_samples) * cfg.fps / SAMPLE_RATE)
        last = min(n_frames - cfg.window_frames, by_audio)
        if last < 0:
            if self.pad_short:
                return 0  # the window starts the clip; frames past its end repeat the last, audio pads with 0
            where = ref.path if ref is not None else "clip"
            raise ClipError("too_short", f"{where}: {n_frames} frames and {n_samples / SAMPLE_RATE:.2f} s of audio; a "
                                         f"pre-training window takes {cfg.window_frames} frames and "
                                         f"{cfg.window_seconds:.2f} s (pad_short pads shorter clips)")
        return last

    def draw(self, i: int, generator: torch.Generator) -> Window:
        last = self._max_start(*self.lengths[i])
        start = int(torch.randint(last + 1, (1,), generator=generator))
        crop = multiscale_crop(self.cfg.resize, generator)
        shift = int(torch.randint(self.cfg.window_samples, (1,), generator=generator))
        gain = beta_10_10(generator) + 0.5
        return Window(i, start, crop, shift, gain)

    def example(self, window: Window) -> tuple[Tensor, Tensor]:
        """One window's video (3, T, S, S) and filterbank (1, time, freq), on the CPU."""
        cfg = self.cfg
        frames, audio = self._load(self.refs[window.clip])
        index = np.minimum(window.start + cfg.frame_stride * np.arange(cfg.frames), len(frames) - 1)
        video = video_tensor(frames[index], cfg.crop, window.crop)
        a = round(window.start * SAMPLE_RATE / cfg.fps)
        wave = np.zeros(cfg.window_samples, dtype=np.float32)
        piece = np.asarray(audio[a:a + cfg.window_samples], dtype=np.float32)
        wave[:len(piece)] = piece
        if cfg.roll_mag_aug:
            wave = np.roll(wave - wave.mean(), window.shift) * np.float32(window.gain)
        fbank = fbank128(wave, len(wave), frames=cfg.audio.input_size[0], bins=cfg.audio.input_size[1])
        return video, fbank

    def batch(self, windows: Sequence[Window]) -> tuple[Tensor, Tensor]:
        pairs = [self.example(w) for w in windows]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


class _Pretraining:
    """The TrainingTask: each epoch the usable clips in a random order, one random window each, in
    batches; masks drawn per batch from the step's generator."""

    def __init__(self, model: AVMAE, data: PretrainClips, batch_size: int, dev: torch.device):
        self.model, self.data, self.batch_size, self.dev = model, data, batch_size, dev

    def epoch_jobs(self, generator: torch.Generator) -> list:
        order = torch.randperm(len(self.data.refs), generator=generator).tolist()
        return chunks([self.data.draw(i, generator) for i in order], self.batch_size)

    def make_batch(self, job) -> tuple[Tensor, Tensor]:
        return self.data.batch(job)

    def losses(self, batch: tuple[Tensor, Tensor], job, generator: torch.Generator) -> dict[str, Tensor]:
        video, audio = batch
        masks = self.model.draw_masks(len(video), generator).to(self.dev)
        video, audio = video.to(self.dev), audio.to(self.dev)
        with autocast(self.dev):
            return self.model(video, audio, masks)

    def validate(self, record: dict) -> None:
        return None  # pre-training keeps its last epoch


# -- optimisation -------------------------------------------------------------------------------------------

#: Parameters without weight decay besides biases and other 1-D tensors (upstream's no_weight_decay).
NO_DECAY = ("lg_region_tokens", "mask_token")


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: weights with `weight_decay`; biases, norms and tokens (NO_DECAY) without."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") or name.split(".")[-1] in NO_DECAY else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]


class WarmupCosine:
    """lr factor per optimiser step (upstream's cosine_scheduler): linear from 0 over `warmup` steps,
    then cosine from 1 down to `end` at step `total`."""

    def __init__(self, warmup: int, total: int, end: float):
        self.warmup, self.total, self.end = warmup, total, end

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return step / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.end + (1 - self.end) * 0.5 * (1 + math.cos(math.pi * progress))


# -- the entry ----------------------------------------------------------------------------------------------

class PretrainResult(NamedTuple):
    model: AVMAE
    history: list[dict]
    weights: Path
    record: dict


def build_model(cfg: PretrainConfig, seed: int = 0) -> AVMAE:
    """AVMAE(cfg) initialised from `seed`, leaving the caller's random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AVMAE(cfg)


def fit(model: AVMAE, clips: "ClipSet | PretrainClips", *, seed: int = 0, device: str = "cpu",
        directory: Path | str | None = None, pad_short: bool = False,
        on_step: Callable[[int, int, int], None] | None = None,
        on_epoch: Callable[[dict], None] | None = None) -> tuple[list[dict], PretrainClips]:
    """Pre-train `model` in place on the real clips with its config's recipe (module docstring); returns
    the history (one {epoch, loss, video, audio, nce, lr, no_decay_lr, clips, seconds, ...} per epoch)
    and the admitted clips. Resumable through `directory/last.pt` (the Trainer's)."""
    cfg = model.cfg
    data = clips if isinstance(clips, PretrainClips) else PretrainClips(clips, cfg, pad_short)
    refs = data.admit()
    if not refs:
        reasons = Counter(e.reason for e in data.clips.failures.values())
        raise ValueError(f"no real clip to pre-train on ({len(data.clips.refs)} clips given, {data.skipped_fakes} "
                         f"fakes skipped; failed: {dict(reasons) or 'none'})")
    if data.clips.failures:
        log.warning("HOLA pre-training: %d of %d clips cannot be used (%s)", len(data.clips.failures),
                    len(data.clips.refs), dict(Counter(e.reason for e in data.clips.failures.values())))
    log.info("HOLA pre-training on %d real clips (%d fakes skipped)", len(refs), data.skipped_fakes)
    dev = torch.device(device)
    model.to(dev)
    steps = math.ceil(len(refs) / cfg.batch_size)
    peak, final = cfg.effective_lr()
    optimiser = torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=peak, betas=cfg.betas)
    total = cfg.epochs * steps
    schedule = WarmupCosine(min(round(cfg.warmup_epochs * steps), total), total, final / peak)
    key = {"kind": "hola-pretrain", "config": cfg.as_dict(), "seed": seed, "pad_short": pad_short,
           "clips": clips_digest(refs)}
    trainer = Trainer(epochs=cfg.epochs, grad_clip=cfg.grad_clip, schedule_every="step")
    history = trainer.fit(model, optimiser, torch.optim.lr_scheduler.LambdaLR(optimiser, schedule),
                          _Pretraining(model, data, cfg.batch_size, dev), seed=seed, device=dev, directory=directory,
                          key=key, name="HOLA pre-training", on_step=on_step, on_epoch=on_epoch)
    return history, data


def pretrain(clips: "ClipSet", out: Path | str, cfg: PretrainConfig | None = None, *, seed: int = 0,
             device: str = "cpu", pad_short: bool = False, model: AVMAE | None = None,
             on_step: Callable[[int, int, int], None] | None = None,
             on_epoch: Callable[[dict], None] | None = None) -> PretrainResult:
    """Pre-train on the real clips of `clips` (`fit`, state in `out/last.pt`, so a run started again goes
    on where it stopped, and a finished one is not redone), then write, each atomically:
    - `out/encoders.safetensors`: checkpoint.encoder_state of the two encoders (`encoder.*`,
      `encoder_audio.*`), which checkpoint.load_avfmae reads, and `-o weights=` of the hola detectors;
    - `out/pretrain.json`: the config, seed, the clips (digest, count, fakes skipped, failures with
      their reasons), the history, and the weights file's name and sha256."""
    from avbench.weights import safetensors_bytes

    from avbench.io import atomic_write, sha256_file, write_json

    from .checkpoint import encoder_state

    cfg = cfg or (model.cfg if model is not None else PretrainConfig())
    model = model if model is not None else build_model(cfg, seed)
    if model.cfg != cfg:
        raise ValueError("the model was built with another PretrainConfig than the one given")
    out = Path(out)
    history, data = fit(model, clips, seed=seed, device=device, directory=out, pad_short=pad_short,
                        on_step=on_step, on_epoch=on_epoch)
    state = {k: v.cpu() for k, v in encoder_state(model.video_encoder, model.audio_encoder).items()}
    weights = out / WEIGHTS
    with atomic_write(weights, "wb") as fh:
        fh.write(safetensors_bytes(state, metadata={"format": "AVF-MAE++ encoders (encoder.*, encoder_audio.*)",
                                                    "producer": "avbench hola pretrain", "seed": str(seed),
                                                    "config": json.dumps(cfg.as_dict(), sort_keys=True)}))
    peak, final = cfg.effective_lr()
    record = {
        "config": cfg.as_dict(), "seed": seed, "device": str(device), "pad_short": pad_short,
        "effective_lr": peak, "effective_min_lr": final, "epochs": cfg.epochs,
        "clips": {"digest": clips_digest(data.refs), "used": len(data.refs), "given": len(data.clips.refs),
                  "fakes_skipped": data.skipped_fakes,
                  "failed": {cid: f"{e.reason}: {e.message}" for cid, e in data.clips.failures.items()}},
        "history": history,
        "weights": {"file": WEIGHTS, "sha256": sha256_file(weights), "tensors": len(state)},
    }
    write_json(out / RECORD, record)
    return PretrainResult(model, history, weights, record)
