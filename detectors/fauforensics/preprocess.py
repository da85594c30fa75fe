"""FauForensics' inputs as the authors' data loader makes them (spec section 3), from the harness's crops.

Audio: 16 kHz mono, a 1 s window of exactly 16,000 samples (zero-padded), its power spectrogram
(n_fft 512, periodic Hann window of 320 samples padded centrally to 512, hop 160, centred frames
with reflect padding), 80 HTK mel bands over 0-8000 Hz without filter normalisation, the first
100 frames, dB relative to the window's maximum floored at -80, then (dB + 40) / 40: values in
[-1, 1], laid out (frames, mels). This is not Whisper's log-Mel, although Whisper's encoder reads it.

Video: the harness's square face crops (resized to `FACE_SIZE`, as the authors' 224 px face
videos), centre crop 140 then bilinear resize to 112 (with antialiasing) for evaluation; training
takes a centre 160, a random 140, the resize, and a horizontal flip with p = 0.5, one draw per
clip; pixels / 255, then ImageNet's mean and std. Fewer than `frames` frames are zero-padded at
the end after normalisation; more are cut.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

SAMPLE_RATE = 16000
N_FFT, WIN_LENGTH, HOP = 512, 320, 160
#: The face crops the loader cuts (the authors' AV_stream_224 face videos).
FACE_SIZE = 224
CENTRE, CROP = 160, 140
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filters(n_mels: int = 80, n_freqs: int = N_FFT // 2 + 1, sample_rate: int = SAMPLE_RATE,
                f_min: float = 0.0, f_max: float | None = None) -> Tensor:
    """(n_freqs, n_mels) triangular HTK-scale filters, unnormalised (peak 1 at each band's centre)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = np.linspace(0, sample_rate // 2, n_freqs)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    rising = (freqs[:, None] - edges[None, :-2]) / (edges[1:-1] - edges[:-2])[None]
    falling = (edges[None, 2:] - freqs[:, None]) / (edges[2:] - edges[1:-1])[None]
    return torch.from_numpy(np.maximum(0.0, np.minimum(rising, falling))).float()


def power_spectrogram(wave: Tensor) -> Tensor:
    """(N_FFT / 2 + 1, frames) |STFT|^2 of a 1-D wave: centred frames (reflect padding), hop 160, a
    periodic Hann window of 320 samples in the middle of each 512-sample frame."""
    window = torch.hann_window(WIN_LENGTH, periodic=True)
    return torch.stft(wave, N_FFT, HOP, WIN_LENGTH, window, center=True, pad_mode="reflect",
                      return_complex=True).abs().square()


def log_mel(window: np.ndarray, n_mels: int = 80, frames: int = 100) -> Tensor:
    """One window's (frames, n_mels) spectrogram in [-1, 1]; `window` is cut or zero-padded to
    frames * HOP samples (1 s for 100 frames)."""
    samples = frames * HOP
    wave = torch.zeros(samples)
    piece = torch.from_numpy(np.asarray(window, dtype=np.float32)[:samples])
    wave[:len(piece)] = piece
    mel = (mel_filters(n_mels).T @ power_spectrogram(wave))[:, :frames]
    db = 10 * torch.log10(mel.clamp_min(1e-10)) - 10 * math.log10(max(float(mel.max()), 1e-10))
    return ((db.clamp_min(-80.0) + 40.0) / 40.0).T.contiguous()


def face_frames(faces: np.ndarray, frames: int, size: int = 112, crop: tuple[int, int, bool] | None = None) -> Tensor:
    """(T, S, S, 3) uint8 face crops -> (3, frames, size, size) normalised. `crop`: training's draw
    (top, left of the 140 px crop inside the centre 160, horizontal flip); None: evaluation's centre."""
    x = torch.from_numpy(np.ascontiguousarray(faces[:frames])).permute(0, 3, 1, 2).float().div_(255.0)
    x = _resize(x, FACE_SIZE) if x.shape[-1] != FACE_SIZE else x
    if crop is None:
        x = _centre(x, CROP)
    else:
        top, left, flip = crop
        if not (0 <= top <= CENTRE - CROP and 0 <= left <= CENTRE - CROP):
            raise ValueError(f"a training crop starts within {CENTRE - CROP} px of the centre {CENTRE}, got {crop}")
        x = _centre(x, CENTRE)[..., top:top + CROP, left:left + CROP]
        if flip:
            x = x.flip(-1)
    x = _resize(x, size)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    x = (x - mean) / std
    if len(x) < frames:
        x = torch.cat([x, x.new_zeros(frames - len(x), *x.shape[1:])])
    return x.transpose(0, 1).contiguous()


def _centre(x: Tensor, size: int) -> Tensor:
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top:top + size, left:left + size]


def _resize(x: Tensor, size: int) -> Tensor:
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
