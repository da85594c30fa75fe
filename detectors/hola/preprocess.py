"""HOLA's inputs of one clip (spec section 1), from the harness's decoded clip.

- Frames: `frames` of the clip's 25 fps frames, one per equal segment of the whole clip: a random
  frame of each segment when training, each segment's centre frame when scoring. A clip shorter
  than `frames` repeats its last frame, and says so (a declared fallback).
- Pixels: resized to 224 x 224 (bilinear; the backbone's 160 scaled by 224/160 for another size),
  then a 160 px crop: the centre when scoring, RandomResizedCrop (scale 0.5-1, aspect 3/4-4/3) and a
  horizontal flip with p 0.5 when training; /255 and ImageNet's mean and std. (3, T, 160, 160).
- Audio, `fbank128` (what the pre-trained audio encoder reads): the whole clip's waveform minus its
  mean, Kaldi's filterbank as torchaudio.compliance.kaldi.fbank computes it with htk_compat,
  use_energy off, a Hanning window, 128 bins, no dither and a 10 ms shift (avbench.fbank, checked
  against torchaudio's values), resampled linearly in time to 256 frames (never cut to 2.56 s as
  the upstream loader does), normalised (x + 4.2677393) / (2 * 4.5689974). (1, 256, 128).
- Audio, `mfcc32` (the paper's literal input): librosa's MFCC defaults (n_fft 2048, hop 512, 128
  Slaney mels, power to dB with top_db 80, orthonormal DCT-II), 32 coefficients, averaged over 16
  equal segments: (16, 32).
- No audio: a zero waveform (the constant normalised filterbank), declared by the detector.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avbench.fbank import kaldi_fbank

SAMPLE_RATE = 16000
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The AVF-MAE++ audio normalisation (AudioSet filterbank statistics).
FBANK_MEAN, FBANK_STD = -4.2677393, 4.5689974
#: Samples of one 25 ms filterbank frame.
FRAME_SAMPLES = 400


class FrameSample(NamedTuple):
    indices: np.ndarray
    repeated: int  # trailing indices that repeat the last frame


def frame_indices(n: int, frames: int, generator: torch.Generator | None = None, offset: float = 0.5) -> FrameSample:
    """One frame in each of `frames` equal segments of n: a random one with `generator` (training),
    else the one at `offset` of each segment (0.5: its centre; other offsets make test-time views).
    n < frames: every frame, then the last repeated."""
    if n < 1:
        raise ValueError("a clip needs at least one frame")
    if n < frames:
        return FrameSample(np.minimum(np.arange(frames), n - 1), frames - n)
    edges = np.linspace(0, n, frames + 1)
    if generator is None:
        picks = edges[:-1] + offset * np.diff(edges)
    else:
        picks = edges[:-1] + torch.rand(frames, generator=generator, dtype=torch.float64).numpy() * np.diff(edges)
    return FrameSample(np.minimum(np.floor(picks).astype(np.int64), n - 1), 0)


class Crop(NamedTuple):
    """A training crop of the resized frames: top, left, height, width, and a horizontal flip."""

    top: int
    left: int
    height: int
    width: int
    flip: bool

    @classmethod
    def draw(cls, resized: int, generator: torch.Generator) -> "Crop":
        """torchvision's RandomResizedCrop rule (ten tries, then the centre) at scale 0.5-1, ratio 3/4-4/3."""
        area = resized * resized
        for _ in range(10):
            u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
            target = area * (0.5 + 0.5 * u[0])
            ratio = math.exp(math.log(3 / 4) + u[1] * (math.log(4 / 3) - math.log(3 / 4)))
            w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
            if 0 < w <= resized and 0 < h <= resized:
                return cls(int(u[2] * (resized - h + 1)), int(u[3] * (resized - w + 1)), h, w,
                           bool(torch.rand(1, generator=generator) < 0.5))
        return cls(0, 0, resized, resized, bool(torch.rand(1, generator=generator) < 0.5))


def video_tensor(frames: np.ndarray, size: int, crop: Crop | None = None) -> Tensor:
    """(T, H, W, 3) uint8 -> (3, T, size, size) float32, ImageNet-normalised: resized to
    round(size * 224 / 160) square, then the centre crop or `crop` (resized to `size`)."""
    resized = round(size * 224 / 160)
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255
    if x.shape[-2:] != (resized, resized):  # the loader resizes whole frames already (the detector's input_spec)
        x = F.interpolate(x, size=(resized, resized), mode="bilinear", align_corners=False, antialias=True)
    if crop is None:
        top = (resized - size) // 2
        x = x[..., top:top + size, top:top + size]
    else:
        x = x[..., crop.top:crop.top + crop.height, crop.left:crop.left + crop.width]
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        if crop.flip:
            x = x.flip(-1)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return ((x - mean) / std).permute(1, 0, 2, 3).contiguous()


# -- fbank128 --------------------------------------------------------------------------------------------

def fbank128(audio: np.ndarray | None, n_samples: int, frames: int = 256, bins: int = 128) -> Tensor:
    """The clip's (1, frames, bins) normalised filterbank; `audio` None: `n_samples` of silence."""
    wave = torch.zeros(max(n_samples, 1)) if audio is None else torch.from_numpy(np.asarray(audio, dtype=np.float32))
    wave = F.pad(wave - wave.mean(), (0, max(0, FRAME_SAMPLES - len(wave))))  # at least one 25 ms frame
    fbank = kaldi_fbank(wave, num_mel_bins=bins)
    fbank = F.interpolate(fbank.T[None], size=frames, mode="linear", align_corners=False)[0].T
    return ((fbank - FBANK_MEAN) / (2 * FBANK_STD))[None]


# -- mfcc32 ----------------------------------------------------------------------------------------------

def slaney_mel_banks(bins: int, n_fft: int, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """(bins, n_fft // 2 + 1) librosa.filters.mel defaults: Slaney's mel scale (linear below 1 kHz,
    logarithmic above), 0 Hz to Nyquist, each triangle normalised to unit area (norm="slaney")."""
    def to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        return np.where(f < 1000, 3 * f / 200, 15 + 27 * np.log(np.maximum(f, 1e-10) / 1000) / math.log(6.4))

    def to_hz(m):
        m = np.asarray(m, dtype=np.float64)
        return np.where(m < 15, 200 * m / 3, 1000 * np.exp(math.log(6.4) * (m - 15) / 27))

    edges = to_hz(np.linspace(to_mel(0.0), to_mel(sample_rate / 2), bins + 2))
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower = (freqs[None] - edges[:-2, None]) / np.diff(edges)[:-1, None]
    upper = (edges[2:, None] - freqs[None]) / np.diff(edges)[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return torch.from_numpy(weights).float()


def mfcc32(audio: np.ndarray | None, n_samples: int, segments: int = 16, coefficients: int = 32) -> Tensor:
    """(segments, coefficients): librosa.feature.mfcc(n_mfcc=32) of the whole clip (n_fft 2048, hop 512,
    128 mels, centred frames zero-padded), each of `segments` equal parts of its frames averaged."""
    n_fft, hop, mels = 2048, 512, 128
    wave = torch.zeros(max(n_samples, 1)) if audio is None else torch.from_numpy(np.asarray(audio, dtype=np.float32))
    padded = F.pad(wave.double(), (n_fft // 2, n_fft // 2))
    if len(padded) < n_fft:
        padded = F.pad(padded, (0, n_fft - len(padded)))
    spectrum = torch.stft(padded, n_fft, hop, window=torch.hann_window(n_fft, dtype=torch.float64), center=False,
                          return_complex=True).abs() ** 2
    db = 10 * torch.log10((slaney_mel_banks(mels, n_fft).double() @ spectrum).clamp_min(1e-10))
    db = torch.maximum(db, db.max() - 80.0)
    k, n = torch.arange(coefficients, dtype=torch.float64)[:, None], torch.arange(mels, dtype=torch.float64)[None]
    dct = torch.cos(math.pi * k * (2 * n + 1) / (2 * mels)) * math.sqrt(2 / mels)
    dct[0] /= math.sqrt(2)
    mfcc = (dct @ db).T  # (frames, coefficients)
    bounds = np.linspace(0, len(mfcc), segments + 1).astype(np.int64)
    starts = np.minimum(bounds[:-1], len(mfcc) - 1)  # a clip of fewer frames than segments repeats them
    return torch.stack([mfcc[a:max(a + 1, b)].mean(0) for a, b in zip(starts, bounds[1:])]).float()
