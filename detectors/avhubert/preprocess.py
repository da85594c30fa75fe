"""AV-HuBERT inputs as the authors' data loader builds them (avhubert/hubert_dataset.py, utils.py).

Audio: 100 Hz log filterbanks stacked by 4 to the 25 Hz video rate and normalised per frame.
Video: grey 96 x 96 mouth crops, centre-cropped to 88 and standardised.
"""

from __future__ import annotations

import numpy as np
import python_speech_features
import torch
import torch.nn.functional as F

#: Model frames per second: one per video frame, one per 4 filterbank frames.
FEATURE_RATE = 25.0
SAMPLE_RATE = 16000
STACK = 4
MOUTH_SIZE, CROP_SIZE = 96, 88
MEAN, STD = 0.421, 0.165
#: OpenCV's 8-bit BGR->GRAY: 0.299 R + 0.587 G + 0.114 B in 15-bit fixed point, rounded half up
#: (equals cv2.cvtColor exactly on all 2^24 colours, checked with opencv-python 5.0).
_GREY_WEIGHTS = np.array([9798, 19235, 3735], dtype=np.int64)   # R, G, B; sum 2^15
_GREY_SHIFT = 15


def audio_features(audio: np.ndarray, n_frames: int | None = None) -> np.ndarray:
    """float32 mono 16 kHz samples -> (104, n_frames) float32.

    n_frames is the number of video frames at 25 fps: missing frames are zero rows, extra ones are
    cut (as the authors align audio to video). None (audio only) keeps ceil(filterbank frames / 4).
    The samples are scaled to the int16 range the authors read with scipy; the per-frame
    normalisation removes the scale except where energies hit logfbank's floor (digital silence).
    """
    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError(f"audio must be mono, non-empty 1-D samples, got shape {audio.shape}")
    fbank = python_speech_features.logfbank(audio * 32768.0, samplerate=SAMPLE_RATE).astype(np.float32)  # (N, 26)
    pad = -len(fbank) % STACK
    fbank = np.concatenate([fbank, np.zeros((pad, fbank.shape[1]), np.float32)])
    stacked = fbank.reshape(-1, STACK * fbank.shape[1])     # frame 4i is features 0-25 of row i
    if n_frames is not None:
        if n_frames > len(stacked):
            stacked = np.concatenate([stacked, np.zeros((n_frames - len(stacked), stacked.shape[1]), np.float32)])
        stacked = stacked[:n_frames]
    normed = F.layer_norm(torch.from_numpy(stacked), stacked.shape[1:], eps=1e-5).numpy()
    return np.ascontiguousarray(normed.T)


def grey(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (...) uint8 grey, bit-exact with cv2.cvtColor(BGR image, COLOR_BGR2GRAY)."""
    if rgb.dtype != np.uint8 or rgb.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB (..., 3), got {rgb.dtype} {rgb.shape}")
    weighted = rgb.astype(np.int64) @ _GREY_WEIGHTS
    return ((weighted + (1 << (_GREY_SHIFT - 1))) >> _GREY_SHIFT).astype(np.uint8)


def mouth_features(mouths: np.ndarray) -> np.ndarray:
    """(T, S, S, 3) uint8 RGB mouth crops -> (1, T, 88, 88) float32, the model's video input per clip.

    Crops that are not 96 x 96 (the authors' ROI size) are resized with antialiased bilinear
    interpolation of the grey values before the centre crop.
    """
    if mouths.ndim != 4 or mouths.shape[1] != mouths.shape[2]:
        raise ValueError(f"mouths must be (T, S, S, 3) square crops, got shape {mouths.shape}")
    x = torch.from_numpy(grey(mouths)).float()                 # (T, S, S), 0..255
    if x.shape[-1] != MOUTH_SIZE:
        x = F.interpolate(x[:, None], size=(MOUTH_SIZE, MOUTH_SIZE), mode="bilinear", align_corners=False,
                          antialias=True)[:, 0]
    off = (MOUTH_SIZE - CROP_SIZE) // 2
    x = x[:, off:off + CROP_SIZE, off:off + CROP_SIZE] / 255.0
    return ((x - MEAN) / STD)[None].numpy().astype(np.float32)
