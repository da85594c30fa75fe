"""HAVIC's inputs: Kaldi log-Mel filterbanks, sliding windows over a clip's face crops and audio.

The fbank is avbench.fbank's (torchaudio's Kaldi fbank, written in torch), checked against values
torchaudio computed in tests/test_havic_model.py (tests/data/havic).

Windows follow the authors' evaluation script: 16 face frames (5 fps, 3.2 s) with a stride of 2
frames; trailing frames that do not complete a stride are cut; the audio of the frames used is cut
into one segment per window, proportionally, and each segment's fbank (mean removed from the samples
first) is stretched to 1024 frames and normalised with the fine-tuning statistics.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avbench.clips import ClipError
from avbench.fbank import kaldi_fbank

from .model import HAVICConfig

SAMPLE_RATE = 16000
FPS = 5.0
#: Fine-tuning / evaluation normalisation of the fbank: (x - FBANK_MEAN) / FBANK_STD.
FBANK_MEAN = -6.9960
FBANK_STD = 3.1205
#: (mean, std) of the fbank for fine-tuning and inference, and for pre-training (AudioSet's, as the release).
FINETUNE_FBANK = (FBANK_MEAN, FBANK_STD)
PRETRAIN_FBANK = (-5.081, 4.4849)
WINDOW_STRIDE = 2  # frames between window starts (0.4 s)


def window_fbank(samples: np.ndarray | Tensor, cfg: HAVICConfig,
                 norm: tuple[float, float] = FINETUNE_FBANK) -> Tensor:
    """One window's audio input (audio_frames, mel_bins): mean removed, fbank, linear interpolation in
    time to cfg.audio_frames, normalised as (x - mean) / std with `norm`."""
    wave = torch.as_tensor(samples, dtype=torch.float32)
    fbank = kaldi_fbank(wave - wave.mean(), num_mel_bins=cfg.mel_bins)
    stretched = F.interpolate(fbank.T[None], size=cfg.audio_frames, mode="linear", align_corners=False)[0].T
    mean, std = norm
    return (stretched - mean) / std


def window_starts(n_frames: int, window: int, stride: int = WINDOW_STRIDE) -> tuple[int, list[int]]:
    """(frames used, first frame of each window): the frames that do not complete a stride are cut."""
    if n_frames < window:
        raise ValueError(f"{n_frames} frames cannot hold a window of {window}")
    used = n_frames - (n_frames - window) % stride
    return used, list(range(0, used - window + 1, stride))


def audio_bounds(n_samples: int, n_frames: int, frames_used: int, n_windows: int, window: int,
                 stride: int = WINDOW_STRIDE) -> list[tuple[int, int]]:
    """Sample range of each window's audio, by the authors' rule: the audio of the frames used is the
    same fraction of the track; a segment spans window / frames_used of it and advances by stride /
    window of a segment; a segment that would overrun the end is moved back to end there."""
    total = int(frames_used / n_frames * n_samples)
    length = int(total * window / (window + stride * (n_windows - 1)))
    step = int((stride / window) * length)
    bounds = []
    for i in range(n_windows):
        start, end = i * step, i * step + length
        if end > total:
            end, start = total, max(0, total - length)
        bounds.append((start, end))
    return bounds


def window_plan(n_frames: int, n_samples: int | None, cfg: HAVICConfig, *, source: str = "clip",
                pad_short: bool = False, stride: int = WINDOW_STRIDE) -> list[tuple[int, tuple[int, int] | None]]:
    """(first face frame, audio sample range) of each window of a clip with `n_frames` face frames and
    `n_samples` audio samples (None: no audio, no ranges).

    A clip with fewer face frames than one window raises ClipError('too_short') unless `pad_short`: its
    one window then repeats the last frame and takes all of the audio. A window whose audio is too short
    for one fbank frame raises ClipError('too_short') as well.
    """
    window = cfg.n_frames
    if n_frames < window:
        if not pad_short or n_frames == 0:
            raise ClipError("too_short", f"{source}: {n_frames} face frames at {FPS:g} fps; HAVIC needs {window} "
                                         f"({window / FPS:g} s) for one window")
        starts, used = [0], window
        bounds = None if n_samples is None else [(0, n_samples)]
    else:
        used, starts = window_starts(n_frames, window, stride)
        bounds = None if n_samples is None else audio_bounds(n_samples, n_frames, used, len(starts), window, stride)
    if bounds is None:
        return [(start, None) for start in starts]
    min_samples = math.ceil(SAMPLE_RATE * 0.025)
    short = [(a, b) for a, b in bounds if b - a < min_samples]
    if short:
        raise ClipError("too_short", f"{source}: the audio of a window spans {short[0][1] - short[0][0]} samples "
                                     f"({n_samples} in the track); an fbank needs {min_samples}")
    return list(zip(starts, bounds))


def clip_windows(faces: np.ndarray, audio: np.ndarray | None, cfg: HAVICConfig, *, source: str = "clip",
                 pad_short: bool = False, stride: int = WINDOW_STRIDE,
                 norm: tuple[float, float] = FINETUNE_FBANK) -> tuple[Tensor, Tensor | None]:
    """A clip's windows (`window_plan`): video (W, 3, n_frames, S, S) uint8, a view of `faces` (the model
    takes it divided by 255, no mean or std), and audio (W, audio_frames, mel_bins) fbank normalised with
    `norm`, or None when `audio` is None."""
    plan = window_plan(len(faces), None if audio is None else len(audio), cfg, source=source, pad_short=pad_short,
                       stride=stride)
    frames = torch.from_numpy(np.require(faces, np.uint8, ["C", "W"]))  # a read-only cache array is copied
    window = cfg.n_frames
    if len(frames) < window:  # pad_short: the last frame repeated
        frames = torch.cat([frames, frames[-1:].expand(window - len(frames), -1, -1, -1)])
    used = plan[-1][0] + window
    video = frames[:used].unfold(0, window, stride).permute(0, 3, 4, 1, 2)  # (T, S, S, 3) -> (W, 3, window, S, S)
    if audio is None:
        return video, None
    return video, torch.stack([window_fbank(audio[a:b], cfg, norm) for _, (a, b) in plan])
