"""CAD's inputs of one sample (spec section 2), from the harness's decoded clip.

- Frames: 16 in four groups of four consecutive frames spread over the clip (IDForge stores its
  frames that way; elsewhere the same layout over the decoded 25 fps frames). A clip shorter than
  16 frames repeats its last frame, and says how many times, so the detector can declare it.
- Faces: the harness's 224 px face crops, as CLIP's eval transform prepares an image: shorter side
  to 224 (bicubic), centre crop, /255, OpenAI's mean and std.
- Audio: 16 kHz mono from the clip's start, padded or cut to Whisper's 30 s window, its 80-band
  log-Mel (openai-whisper's own functions); the encoder's 50 Hz frames past the audio are padding.
- Clips over 30 s: consecutive 30 s windows, each a sample of its own (`clip_windows`).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

FRAMES, GROUPS = 16, 4
WINDOW_SECONDS = 30
FACE_SIZE = 224
SAMPLE_RATE = 16000
#: Whisper encoder frames per 30 s window (50 Hz: one per 320 samples).
AUDIO_CTX, SAMPLES_PER_FRAME = 1500, 320
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class FrameSample(NamedTuple):
    indices: np.ndarray  # (frames,) into the clip's frames
    repeated: int  # trailing indices that repeat the last frame (clips shorter than `frames`)


def frame_indices(n: int, frames: int = FRAMES, groups: int = GROUPS) -> FrameSample:
    """`groups` runs of frames // groups consecutive frames, run g starting at round(g * (n - run) /
    (groups - 1)): the first run at the clip's start, the last at its end. The starts' fractional
    parts are thirds for four groups, so Python's rounding of halves never matters there."""
    if n < 1 or frames % groups:
        raise ValueError(f"need at least one frame and frames divisible by groups, got n={n}, {frames}/{groups}")
    if n < frames:
        return FrameSample(np.minimum(np.arange(frames), n - 1), frames - n)
    run = frames // groups
    starts = [round(g * (n - run) / max(groups - 1, 1)) for g in range(groups)]
    return FrameSample(np.array([start + i for start in starts for i in range(run)]), 0)


class Window(NamedTuple):
    frames: FrameSample  # indices into the whole clip's frames
    audio: slice  # the window's samples


def clip_windows(n_frames: int, n_samples: int, fps: float = 25.0, frames: int = FRAMES) -> list[Window]:
    """The samples one clip is scored with: one per started 30 s of its duration (the longer of its
    audio and video). Window w holds the audio of [30 w, 30 (w + 1)) s and `frames` frames laid out as
    `frame_indices` over the frames of that span (the clip's last frame when its video ends sooner;
    none for a clip decoded without video)."""
    samples = SAMPLE_RATE * WINDOW_SECONDS
    duration = max(n_samples / SAMPLE_RATE, n_frames / fps)
    windows = []
    for w in range(max(1, math.ceil(duration / WINDOW_SECONDS))):
        if n_frames:
            first = min(round(w * WINDOW_SECONDS * fps), n_frames - 1)
            stop = max(first + 1, min(n_frames, round((w + 1) * WINDOW_SECONDS * fps)))
            sample = frame_indices(stop - first, frames)
            sample = FrameSample(sample.indices + first, sample.repeated)
        else:
            sample = FrameSample(np.zeros(0, dtype=np.int64), 0)
        windows.append(Window(sample, slice(w * samples, (w + 1) * samples)))
    return windows


def clip_frames(faces: np.ndarray, indices: Sequence[int], size: int = FACE_SIZE) -> Tensor:
    """(T, H, W, 3) uint8 crops -> (len(indices), 3, size, size) float32, CLIP-normalised."""
    x = torch.from_numpy(np.ascontiguousarray(faces[np.asarray(indices)])).permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        x = F.interpolate(x, size=(max(size, round(h * scale)), max(size, round(w * scale))), mode="bicubic",
                          align_corners=False, antialias=True).clamp(0, 255)  # bicubic overshoots; PIL clips too
        top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
        x = x[..., top:top + size, left:left + size]
    mean, std = torch.tensor(CLIP_MEAN)[:, None, None], torch.tensor(CLIP_STD)[:, None, None]
    return (x / 255 - mean) / std


def whisper_mel(audio: np.ndarray, n_mels: int = 80) -> tuple[Tensor, int]:
    """(log-Mel (n_mels, 3000), n_a): the audio padded or cut to 30 s, and its valid encoder frames
    n_a = min(1500, ceil(samples / 320)), at least 1 so no attention row is fully masked."""
    from whisper.audio import N_SAMPLES, log_mel_spectrogram, pad_or_trim

    wave = torch.from_numpy(np.asarray(audio, dtype=np.float32))
    mel = log_mel_spectrogram(pad_or_trim(wave, N_SAMPLES), n_mels)
    return mel, min(AUDIO_CTX, max(1, math.ceil(len(wave) / SAMPLES_PER_FRAME)))


def audio_padding(valid: Tensor | Sequence[int]) -> Tensor:
    """(B,) valid encoder frames -> (B, 1500) bool, True on padding (MultiheadAttention's key_padding_mask)."""
    return torch.arange(AUDIO_CTX)[None] >= torch.as_tensor(valid)[:, None]
