"""A trained baseline on hand-made audio, visual and synchrony features: no network, no weights.

It says how far cheap cues go: synthetic or replaced speech tends to have a smoother, band-limited
spectrum; a re-rendered mouth tends to be blurrier, differently coloured and differently moving
than the face around it; manipulated clips tend to lose audio-visual synchrony.
"""

from __future__ import annotations

import warnings
from typing import Iterable

import numpy as np
from scipy.special import expit

from avbench.clips import Clip, ClipError
from avbench.detector import Detector, InputSpec
from avbench.detectors.avsync import AVSyncDetector, luma

N_FFT = 512  # 32 ms at 16 kHz
HOP = 160  # 10 ms
EPS = 1e-10


def _mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


def audio_features(audio: np.ndarray, sample_rate: int, n_bands: int) -> np.ndarray:
    """Spectral statistics of a mono waveform, 2 * n_bands + 7 numbers.

    - mean and std over time of the log energies of n_bands bands equally spaced on the mel
      scale from 50 Hz to Nyquist (rectangular bands of a 32 ms / 10 ms STFT);
    - mean and std of spectral flatness (geometric / arithmetic mean of the power spectrum):
      noise-like spectra are flat, harmonic ones are not;
    - mean and std of the 85% spectral roll-off, as a fraction of Nyquist;
    - the share of energy in 4-8 kHz, which band-limited synthesis lacks;
    - mean and std of the zero-crossing rate per STFT frame.
    """
    x = np.pad(audio.astype(np.float64), (0, max(0, N_FFT - len(audio))))
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP]
    power = np.abs(np.fft.rfft(frames * np.hanning(N_FFT), axis=1)) ** 2
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / sample_rate)
    nyquist = sample_rate / 2

    edges = _hz(np.linspace(_mel(50.0), _mel(nyquist), n_bands + 1))
    band = np.searchsorted(edges, freqs, side="right") - 1  # band of each bin; -1 or n_bands: outside
    log_bands = np.log(power @ (band[:, None] == np.arange(n_bands)) + EPS)

    flatness = np.exp(np.log(power + EPS).mean(axis=1)) / (power.mean(axis=1) + EPS)
    cumulative = np.cumsum(power, axis=1)
    rolloff = freqs[np.argmax(cumulative >= 0.85 * cumulative[:, -1:], axis=1)] / nyquist
    high_share = power[:, freqs >= 4000.0].sum() / (power.sum() + EPS)
    zcr = (np.diff(np.signbit(frames), axis=1) != 0).mean(axis=1)

    return np.concatenate([
        log_bands.mean(axis=0), log_bands.std(axis=0),
        [flatness.mean(), flatness.std(), rolloff.mean(), rolloff.std(), high_share, zcr.mean(), zcr.std()],
    ])


def _sharpness(gray: np.ndarray) -> float:
    """Log of the mean per-frame variance of the 4-neighbour Laplacian: low for blurred content."""
    lap = (gray[:, :-2, 1:-1] + gray[:, 2:, 1:-1] + gray[:, 1:-1, :-2] + gray[:, 1:-1, 2:]
           - 4 * gray[:, 1:-1, 1:-1])
    return float(np.log(lap.var(axis=(1, 2)).mean() + EPS))


def _motion(gray: np.ndarray) -> float:
    """Log of the mean absolute difference between consecutive frames."""
    return float(np.log(np.abs(np.diff(gray, axis=0)).mean() + EPS))


def visual_features(faces: np.ndarray, mouths: np.ndarray) -> np.ndarray:
    """Mouth-versus-face statistics of (T, S, S, 3) crops, 12 numbers.

    - sharpness (log Laplacian variance) of the mouth, of the face, and their difference;
    - mean and std of each RGB channel, mouth minus face, in [0, 1] units (a pasted or
      re-coloured mouth patch shifts them);
    - temporal frame-difference energy (log) of the mouth, of the face, and their difference.
    """
    mouth_gray, face_gray = luma(mouths), luma(faces)
    sharp_m, sharp_f = _sharpness(mouth_gray), _sharpness(face_gray)
    motion_m, motion_f = _motion(mouth_gray), _motion(face_gray)
    m, f = mouths.astype(np.float32) / 255.0, faces.astype(np.float32) / 255.0
    colour = np.concatenate([m.mean(axis=(0, 1, 2)) - f.mean(axis=(0, 1, 2)),
                             m.std(axis=(0, 1, 2)) - f.std(axis=(0, 1, 2))])
    return np.concatenate([[sharp_m, sharp_f, sharp_m - sharp_f], colour, [motion_m, motion_f, motion_m - motion_f]])


class HandcraftedDetector(Detector):
    """StandardScaler + logistic regression on audio, visual and synchrony features.

    Features per clip (the first `max_seconds`): `audio_features`, `visual_features`, and from
    `AVSyncDetector.features` the best correlation, |best offset| in frames, the correlation at
    offset 0 and the best correlation within the sync tolerance. `fit` reads the training clips
    once; validation clips only choose C from `C_grid` by validation AUC (ties go to the smaller
    C), and only when they hold both classes; otherwise `C` is used. The score is the fitted
    model's predict_proba[:, 1], computed from the saved arrays so a loaded checkpoint scores
    identically.
    """

    name = "handcrafted"
    modalities = ("audio", "video")
    trains = True
    version = "1"
    scores_are_probabilities = True

    def __init__(
        self,
        C: float = 1.0,
        C_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0),
        max_iter: int = 1000,
        n_bands: int = 20,
        face_size: int = 96,
        mouth_size: int = 64,
        max_seconds: float = 4.0,
    ):
        self.C = C
        self.C_grid = tuple(sorted(float(c) for c in C_grid))
        self.max_iter = max_iter
        self.n_bands = n_bands
        self.face_size = face_size
        self.mouth_size = mouth_size
        self.max_seconds = max_seconds
        self.input_spec = InputSpec(fps=25.0, audio=True, face_size=face_size, mouth_size=mouth_size, frames=False,
                                    max_seconds=max_seconds, audio_optional=False)
        self._sync = AVSyncDetector(mouth_size=mouth_size, max_seconds=max_seconds)
        self._state: dict[str, np.ndarray] = {}

    # -- features --------------------------------------------------------------------------
    def features(self, clip: Clip) -> np.ndarray:
        if clip.faces is None or clip.mouths is None or clip.audio is None or not clip.fps:
            raise ClipError("missing_input", f"{clip.ref.path}: handcrafted needs face and mouth crops, audio and fps")
        sync = self._sync.features(clip)  # first: it rejects clips too short for any feature
        n_frames = int(self.max_seconds * clip.fps)
        audio = clip.audio[: int(self.max_seconds * clip.sample_rate)]
        return np.concatenate([
            audio_features(audio, clip.sample_rate, self.n_bands),
            visual_features(clip.faces[:n_frames], clip.mouths[:n_frames]),
            [sync.best_corr, abs(sync.best_offset), sync.corr_at_0, sync.in_sync_corr],
        ])

    def _table(self, clips: Iterable[Clip], split: str) -> tuple[np.ndarray, np.ndarray]:
        """Features and labels of every clip; clips whose features fail are skipped with a warning."""
        rows, labels, skipped = [], [], []
        for clip in clips:
            try:
                rows.append(self.features(clip))
            except ClipError as exc:
                skipped.append(f"{clip.clip_id} ({exc.reason})")
                continue
            labels.append(clip.ref.label)
        if skipped:
            warnings.warn(f"handcrafted skipped {len(skipped)} {split} clips: {', '.join(skipped[:5])}", stacklevel=3)
        return np.array(rows), np.array(labels, dtype=int)

    # -- learning and scoring ----------------------------------------------------------------
    def fit(self, train, val, seed: int, device: str = "cpu") -> "HandcraftedDetector":
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import roc_auc_score
        from sklearn.preprocessing import StandardScaler

        x, y = self._table(train, "train")
        if len(np.unique(y)) < 2:
            raise ValueError(f"handcrafted needs real and fake training clips, got labels {sorted(set(y.tolist()))}")
        scaler = StandardScaler().fit(x)

        def fitted(C: float):
            return LogisticRegression(C=C, max_iter=self.max_iter, random_state=seed).fit(scaler.transform(x), y)

        xv, yv = self._table(val if val is not None else [], "val")
        if len(np.unique(yv)) == 2:
            auc = {C: roc_auc_score(yv, fitted(C).predict_proba(scaler.transform(xv))[:, 1]) for C in self.C_grid}
            chosen = max(self.C_grid, key=auc.get)
        else:
            chosen = self.C
        model = fitted(chosen)
        self._state = {
            "scaler_mean": scaler.mean_,
            "scaler_scale": scaler.scale_,
            "coef": model.coef_[0],
            "intercept": model.intercept_,
            "C": np.array(chosen, dtype=np.float64),
        }
        return self

    def score(self, clip: Clip) -> float:
        if not self._state:
            raise RuntimeError("handcrafted is not fitted: call fit or load a checkpoint")
        s = self._state
        z = (self.features(clip) - s["scaler_mean"]) / s["scaler_scale"]
        return float(expit(z @ s["coef"] + s["intercept"][0]))

    def state_dict(self) -> dict[str, np.ndarray]:
        return dict(self._state)

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        expected = {"scaler_mean", "scaler_scale", "coef", "intercept", "C"}
        if set(state) != expected:
            raise ValueError(f"handcrafted state needs {sorted(expected)}, got {sorted(state)}")
        self._state = {k: np.asarray(v) for k, v in state.items()}
