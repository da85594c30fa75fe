"""Training-free audio-visual synchrony: does the mouth move with the voice, and at which lag?

The classic correlation approach: a per-frame mouth signal is correlated with the audio energy
envelope (Hershey & Movellan 2000, "Audio Vision: Using audio-visual synchrony to locate sounds";
Slaney & Covell 2001, "FaceSync: A linear operator for measuring synchronization of video facial
images and audio tracks"), searched over audio-visual offsets like SyncNet (Chung & Zisserman 2016,
"Out of time: automated lip sync in the wild") but with hand-made instead of learned features.

A real talking face correlates best near offset 0. Replaced audio or a re-driven mouth correlates
weakly at every offset; shifted audio correlates well, but away from offset 0. The score rises in
both cases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.special import expit

from avbench.clips import Clip, ClipError
from avbench.detector import Detector, InputSpec

#: "opening": darkness of the crop's central area, a proxy for how open the mouth is; it pairs
#: with the audio envelope itself. "motion": mean absolute frame difference of the crop; it pairs
#: with the envelope's absolute rate of change, and head motion leaks into it (on the demo corpus
#: "opening" separates real from fake almost perfectly, "motion" far less).
VISUAL_FEATURES = ("opening", "motion")

#: Fewer frames than this leave too little signal for a correlation to mean anything.
MIN_FRAMES = 10


@dataclass(frozen=True)
class SyncFeatures:
    best_corr: float  # highest Pearson correlation over all searched offsets
    best_offset: int  # offset of best_corr in frames; > 0 means the audio lags the video
    corr_at_0: float  # correlation with no offset
    in_sync_corr: float  # highest correlation within ±tolerance frames of offset 0


def luma(crops: np.ndarray) -> np.ndarray:
    """(T, S, S) float32 Rec. 601 luma of (T, S, S, 3) RGB crops."""
    return crops @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def mouth_signal(mouths: np.ndarray, visual_feature: str) -> np.ndarray:
    """One value per frame from (T, S, S, 3) mouth crops."""
    gray = luma(mouths)
    if visual_feature == "opening":
        s = gray.shape[1]
        centre = gray[:, s // 4: s - s // 4, s // 4: s - s // 4]
        return -centre.mean(axis=(1, 2))
    if visual_feature == "motion":
        diff = np.abs(np.diff(gray, axis=0)).mean(axis=(1, 2))
        return np.concatenate([diff[:1], diff])
    raise ValueError(f"visual_feature must be one of {VISUAL_FEATURES}, got {visual_feature!r}")


def audio_envelope(audio: np.ndarray, sample_rate: int, fps: float, n_frames: int) -> np.ndarray:
    """Log RMS of the audio in a one-frame window centred on each video frame's time."""
    hop = sample_rate / fps
    half = int(round(hop / 2))
    padded = np.pad(audio.astype(np.float64), (half, half))
    starts = np.round(np.arange(n_frames) * hop).astype(int)
    width = int(round(hop))
    windows = padded[starts[:, None] + np.arange(width)[None, :]]
    rms = np.sqrt((windows ** 2).mean(axis=1))
    return np.log(rms + 1e-4)


def band_limit(x: np.ndarray, fps: float, drift_seconds: float, smooth_frames: int) -> np.ndarray:
    """Remove slow drift (centred moving average of drift_seconds) and frame-to-frame jitter."""
    drift = uniform_filter1d(x, size=max(1, int(round(drift_seconds * fps))), mode="nearest")
    return uniform_filter1d(x - drift, size=smooth_frames, mode="nearest")


def correlation_by_offset(video: np.ndarray, audio: np.ndarray, max_offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation of video[t] with audio[t + d] for d in [-max_offset, max_offset].

    Each correlation is over the overlapping frames only; a constant overlap counts as 0.
    """
    n = len(video)
    offsets = np.arange(-max_offset, max_offset + 1)
    corrs = np.empty(len(offsets))
    for i, d in enumerate(offsets):
        v, a = (video[: n - d], audio[d:]) if d >= 0 else (video[-d:], audio[: n + d])
        v, a = v - v.mean(), a - a.mean()
        norm = np.sqrt((v * v).sum() * (a * a).sum())
        corrs[i] = (v * a).sum() / norm if norm > 1e-12 else 0.0
    return offsets, corrs


class AVSyncDetector(Detector):
    """Mouth/voice correlation over audio-visual offsets, mapped to a fake probability.

    sync = in_sync_corr - lag_weight * (best_corr - in_sync_corr)
    score = sigmoid(slope * (sync_threshold - sync))

    in_sync_corr (the best correlation within ±tolerance frames of offset 0) is the evidence that
    the streams match as they are; the gap to the best correlation anywhere is evidence that they
    match at another offset (desync). Weak correlation everywhere gives sync near 0, hence a score
    near sigmoid(slope * sync_threshold). The score lies in [0, 1] by construction but is not
    calibrated: the constants are fixed by hand, not fitted.

    Signals: the mouth signal (`visual_feature`, see VISUAL_FEATURES) and the log RMS audio
    envelope per video frame, both band-limited by `band_limit`; Pearson correlation at each
    offset is that of the z-normalised overlapping segments.
    """

    name = "avsync"
    modalities = ("audio", "video")
    trains = False
    version = "1"
    scores_are_probabilities = True

    def __init__(
        self,
        visual_feature: str = "opening",
        max_offset: int = 15,
        tolerance: int = 1,
        drift_seconds: float = 1.0,
        smooth_frames: int = 3,
        sync_threshold: float = 0.25,
        slope: float = 10.0,
        lag_weight: float = 1.0,
        mouth_size: int = 64,
        max_seconds: float | None = 8.0,
    ):
        if visual_feature not in VISUAL_FEATURES:
            raise ValueError(f"visual_feature must be one of {VISUAL_FEATURES}, got {visual_feature!r}")
        if not 0 <= tolerance <= max_offset:
            raise ValueError(f"need 0 <= tolerance <= max_offset, got {tolerance} and {max_offset}")
        self.visual_feature = visual_feature
        self.max_offset = max_offset
        self.tolerance = tolerance
        self.drift_seconds = drift_seconds
        self.smooth_frames = smooth_frames
        self.sync_threshold = sync_threshold
        self.slope = slope
        self.lag_weight = lag_weight
        self.mouth_size = mouth_size
        self.max_seconds = max_seconds
        self.input_spec = InputSpec(fps=25.0, audio=True, mouth_size=mouth_size, frames=False, max_seconds=max_seconds,
                                    audio_optional=False)

    def features(self, clip: Clip) -> SyncFeatures:
        if clip.mouths is None or clip.audio is None or not clip.fps:
            raise ClipError("missing_input", f"{clip.ref.path}: avsync needs mouth crops, audio and fps")
        n = min(len(clip.mouths), int(len(clip.audio) * clip.fps / clip.sample_rate))
        if self.max_seconds is not None:
            n = min(n, int(self.max_seconds * clip.fps))
        if n < MIN_FRAMES:
            raise ClipError("too_short", f"{clip.ref.path}: {n} frames with audio, avsync needs {MIN_FRAMES}")
        video = mouth_signal(clip.mouths[:n], self.visual_feature)
        audio = audio_envelope(clip.audio, clip.sample_rate, clip.fps, n)
        if self.visual_feature == "motion":
            audio = np.abs(np.concatenate([[0.0], np.diff(audio)]))
        video = band_limit(video, clip.fps, self.drift_seconds, self.smooth_frames)
        audio = band_limit(audio, clip.fps, self.drift_seconds, self.smooth_frames)
        # keep at least half the frames in every overlap
        offsets, corrs = correlation_by_offset(video, audio, min(self.max_offset, n // 2))
        best = int(np.argmax(corrs))
        near = np.abs(offsets) <= self.tolerance
        return SyncFeatures(
            best_corr=float(corrs[best]),
            best_offset=int(offsets[best]),
            corr_at_0=float(corrs[offsets == 0][0]),
            in_sync_corr=float(corrs[near].max()),
        )

    def score(self, clip: Clip) -> float:
        f = self.features(clip)
        sync = f.in_sync_corr - self.lag_weight * (f.best_corr - f.in_sync_corr)
        return float(expit(self.slope * (self.sync_threshold - sync)))
