"""Training-free audio-visual alignment of AV-HuBERT features (seed paper 001, Supp. E.2, eq. 3).

AV-HuBERT learns its audio and visual streams jointly, so in a real video the audio feature of a
frame points the same way as the visual one. The fakeness of a clip is how badly they align at
the best shift within ±Δ frames:

    s(a, v) = min over δ in [-Δ, Δ] of pool_t( -cos(a_t, v_{t+δ}) ).

This generalises SpeechForensics (Δ = 15, mean pooling) and FACTOR (Δ = 0, 97th percentile).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.special import logsumexp

from avbench.clips import Clip
from avbench.detectors.ssl.base import FeatureDetector, l2_normalise

#: Pooling -> the word for it in the paper's Table 6.
POOLINGS = {"mean": "average", "max": "max", "min": "min", "lse": "log-sum-exp", "p3": "percentile-3",
            "p97": "percentile-97"}
#: The shifts of Table 6.
PUBLISHED_SHIFTS = (0, 15)


def pool(values: np.ndarray, pooling: str) -> float:
    """One number from per-frame fakeness values. "lse" is the scaled log-sum-exp of the paper, with
    the sequence length T as temperature: log(sum exp(T x)) / T, a smooth maximum (Table 6 lists it
    among the maximum variants, and its numbers follow max pooling's)."""
    if pooling == "mean":
        return float(values.mean())
    if pooling == "max":
        return float(values.max())
    if pooling == "min":
        return float(values.min())
    if pooling == "lse":
        return float(logsumexp(len(values) * values.astype(np.float64)) / len(values))
    return float(np.percentile(values, {"p3": 3, "p97": 97}[pooling]))


def shifted_fakeness(audio: np.ndarray, visual: np.ndarray, max_shift: int) -> dict[int, np.ndarray]:
    """δ -> -cos(a_t, v_{t+δ}) for every t where both frames exist (shifts with no overlap left out)."""
    similarity = l2_normalise(audio) @ l2_normalise(visual).T
    n = len(similarity)
    return {delta: -np.diagonal(similarity, offset=delta) for delta in range(-max_shift, max_shift + 1) if abs(delta) < n}


class AVHuBERTAlignment(FeatureDetector):
    """Training-free: cosine between AV-HuBERT's audio and visual frame features at the best shift.

    features: (audio, visual) streams of one audio-visual model, trimmed at the end to a common
    length. pooling: "mean", "max", "min", "lse" (scaled log-sum-exp), "p3" or "p97" (percentiles)
    of the frame values -cos(a_t, v_{t+δ}); max_shift: Δ in frames. Score: the smallest pooled
    value over δ in [-Δ, Δ]. Frame scores: -cos(a_t, v_{t+δ}) at the best δ, frame t of the audio;
    the |δ| frames at one end that have no partner take the value of their nearest neighbour.
    """

    trains = False

    def __init__(self, features: Sequence[str], pooling: str = "mean", max_shift: int = 15,
                 weights: dict[str, str] | str | None = None, layer: int | None = None, random_init: bool = False,
                 tiny: bool = False, seed: int = 0):
        if len(features) != 2:
            raise ValueError(f"alignment needs two features, audio then visual; got {list(features)}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {sorted(POOLINGS)}, got {pooling!r}")
        if max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {max_shift}")
        super().__init__(features, weights=weights, layer=layer, random_init=random_init, tiny=tiny, seed=seed)
        self.pooling, self.max_shift = pooling, max_shift

    @property
    def published_as(self) -> tuple[str, ...]:
        """Table 6's row for this pooling and shift (and Table 2's SpeechForensics, which is Δ = 15
        with mean pooling on the same features), for the paper's features only."""
        if (self.tiny or self.random_init or self.layer is not None or self.max_shift not in PUBLISHED_SHIFTS
                or self.features != ("avhubert_a", "avhubert_v")):
            return ()
        names = (f"AV-HuBERT alignment ({POOLINGS[self.pooling]} pooling, shift {self.max_shift})",)
        return names + (("SpeechForensics",) if (self.pooling, self.max_shift) == ("mean", 15) else ())

    def best_shift(self, audio: np.ndarray, visual: np.ndarray) -> tuple[float, int, np.ndarray]:
        """(score, best δ, the frame values at it)."""
        shifted = shifted_fakeness(audio, visual, self.max_shift)
        pooled = {delta: pool(values, self.pooling) for delta, values in shifted.items()}
        delta = min(pooled, key=lambda d: (pooled[d], abs(d)))  # ties: the smaller shift
        return pooled[delta], delta, shifted[delta]

    def score_batch(self, clips: Sequence[Clip]) -> list[float]:
        return [self.best_shift(*features)[0] for features in self.clip_features(clips)]

    def score(self, clip: Clip) -> float:
        return self.score_batch([clip])[0]

    def frame_scores(self, clip: Clip) -> np.ndarray:
        (features,) = self.clip_features([clip])
        _, delta, values = self.best_shift(*features)
        # values[j] pairs audio frame t = j + max(0, -δ) with visual frame t + δ
        return np.pad(values, (max(0, -delta), max(0, delta)), mode="edge")
