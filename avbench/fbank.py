"""Kaldi's log-Mel filterbank in torch, the audio input of the AudioMAE-style encoders (HAVIC, HOLA).

torchaudio cannot be installed beside avbench's torch, so `kaldi_fbank` is written here; it equals
torchaudio.compliance.kaldi.fbank(htk_compat=True, use_energy=False, window_type='hanning',
num_mel_bins=N, dither=0.0, frame_shift=10) with its other defaults (25 ms frames, snip_edges,
per-frame DC removal, pre-emphasis 0.97, power spectrum, 20 Hz to Nyquist), which
tests/test_havic_model.py checks against values torchaudio computed (tests/data/havic).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

SAMPLE_RATE = 16000


@lru_cache(maxsize=8)
def mel_banks(num_bins: int, n_fft: int, sample_rate: int, low_freq: float = 20.0) -> Tensor:
    """Kaldi's triangular filters on the mel scale, (num_bins, n_fft // 2 + 1); the Nyquist bin gets 0.
    Computed in float32 in Kaldi's (and torchaudio's) order of operations, so the bands match bit for bit.
    Built once per geometry: every window of every clip uses the same bank (callers must not modify it)."""
    mel_low, mel_high = (1127.0 * math.log(1.0 + f / 700.0) for f in (low_freq, sample_rate / 2))
    delta = (mel_high - mel_low) / (num_bins + 1)
    index = torch.arange(num_bins, dtype=torch.float32)[:, None]
    left, centre, right = mel_low + index * delta, mel_low + (index + 1.0) * delta, mel_low + (index + 2.0) * delta
    mel = 1127.0 * (1.0 + sample_rate / n_fft * torch.arange(n_fft // 2, dtype=torch.float32) / 700.0).log()
    weights = torch.minimum((mel - left) / (centre - left), (right - mel) / (right - centre)).clamp_min(0.0)
    return F.pad(weights, (0, 1))


def kaldi_fbank(waveform: Tensor, sample_rate: int = SAMPLE_RATE, num_mel_bins: int = 128,
                frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0) -> Tensor:
    """(N,) float waveform -> (frames, num_mel_bins) log-Mel energies, as torchaudio's Kaldi fbank."""
    window = int(sample_rate * frame_length_ms * 0.001)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    if waveform.ndim != 1 or len(waveform) < window:
        raise ValueError(f"need a 1-D waveform of at least {window} samples, got shape {tuple(waveform.shape)}")
    frames = waveform.float().unfold(0, window, shift)
    frames = frames - frames.mean(dim=1, keepdim=True)
    frames = frames - 0.97 * torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = frames * torch.hann_window(window, periodic=False, device=frames.device)
    n_fft = 1 << (window - 1).bit_length()
    power = torch.fft.rfft(frames, n=n_fft).abs().pow(2)
    energies = power @ mel_banks(num_mel_bins, n_fft, sample_rate).to(power.device).T
    return energies.clamp_min(torch.finfo(torch.float32).eps).log()
