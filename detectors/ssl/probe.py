"""Linear probes on frozen self-supervised features, and their late fusion (seed paper 001, Sec. 3, 3.1).

A probe scores each 25 Hz frame with a linear layer on its L2-normalised feature and pools the
frame logits over the clip (eq. 1: log-sum-exp, so one fake stretch is enough to call a clip
fake). It learns from video labels only, yet its frame logits localise what it finds (the paper's
temporal explanations, measured here as LOC_AUC). With several backbones the detector is the
paper's late fusion (Table 3): one probe per backbone, each trained alone, probabilities averaged.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from avbench.clips import Clip
from avbench.detectors.ssl.base import FeatureDetector, fit_module, l2_normalise, load_numpy_state, pad, state_to_numpy
from avbench.training import holdout, labels_of

POOLINGS = ("lse", "mean", "max")


def pool_logits(logits: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, T) frame logits -> (B,) clip logits over the real frames (mask) of each clip."""
    if pooling == "lse":
        return logits.masked_fill(~mask, -torch.inf).logsumexp(dim=1)
    if pooling == "max":
        return logits.masked_fill(~mask, -torch.inf).amax(dim=1)
    return (logits * mask).sum(dim=1) / mask.sum(dim=1)


class LinearProbe(FeatureDetector):
    """Linear probe on frozen features, log-sum-exp pooled over time; several features: late fusion.

    pooling: "lse" (the paper's eq. 1), "mean" or "max" of the frame logits. Training (Supp. A):
    binary cross-entropy of the pooled logit against the video label, Adam (lr), mini-batches of
    `batch_size` clips padded and masked, up to `max_epochs` epochs with early stopping after
    `patience` epochs without a lower validation loss, the best epoch's weights kept. Without
    validation clips from the protocol, a stratified 10% of the training clips, drawn with the
    seed, stands in for them. The score is sigmoid(pooled logit), a probability of fake (for
    several probes, the mean of theirs); frame scores are the frame logits w.x_t + b at 25 Hz
    (averaged over the probes, over the frames all backbones cover).
    """

    scores_are_probabilities = True
    aligned = False  # each probe reads its own backbone at its own length

    def __init__(self, features: Sequence[str], pooling: str = "lse", lr: float = 1e-3, batch_size: int = 32,
                 max_epochs: int = 100, patience: int = 10, weights: dict[str, str] | str | None = None,
                 layer: int | None = None, random_init: bool = False, tiny: bool = False, seed: int = 0):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        super().__init__(features, weights=weights, layer=layer, random_init=random_init, tiny=tiny, seed=seed)
        self.pooling, self.lr, self.batch_size, self.max_epochs, self.patience = pooling, lr, batch_size, max_epochs, patience
        self._probes: dict[str, torch.nn.Linear] = {}
        #: Per backbone, the training history of its probe (fit only; not saved).
        self.history: dict[str, list[dict]] = {}

    # -- training --------------------------------------------------------------------------------
    def fit(self, train, val, seed: int, device: str = "cpu") -> "LinearProbe":
        torch.manual_seed(seed)
        self.device = device
        train_x, train_refs = self.collect(train)
        val_x, val_refs = self.collect(val) if len(val) else ([], [])
        train_y, val_y = labels_of(train_refs), labels_of(val_refs)
        if not val_x:
            keep, held = holdout(train_y, seed, identities=[r.identity for r in train_refs])
            val_x, val_y = [train_x[i] for i in held], train_y[held]
            train_x, train_y = [train_x[i] for i in keep], train_y[keep]
        if set(train_y.tolist()) != {0, 1}:
            raise ValueError(f"{self.name}: training needs real and fake clips, got labels {sorted(set(train_y.tolist()))}")
        self._probes, self.history = {}, {}
        for j, backbone in enumerate(self.features):
            items = [(l2_normalise(x[j]), float(y)) for x, y in zip(train_x, train_y)]
            val_items = [(l2_normalise(x[j]), float(y)) for x, y in zip(val_x, val_y)]
            probe = torch.nn.Linear(items[0][0].shape[1], 1).to(device)
            self.history[backbone] = fit_module(probe, self._loss, items, val_items, lr=self.lr,
                                                batch_size=self.batch_size, max_epochs=self.max_epochs,
                                                patience=self.patience, seed=seed)
            self._probes[backbone] = probe
        return self

    def _loss(self, probe: torch.nn.Linear, batch: list[tuple[np.ndarray, float]]) -> torch.Tensor:
        x, mask = pad([f for f, _ in batch], self.device)
        labels = torch.tensor([y for _, y in batch], dtype=torch.float32, device=self.device)
        return F.binary_cross_entropy_with_logits(pool_logits(probe(x).squeeze(-1), mask, self.pooling), labels)

    # -- scoring ---------------------------------------------------------------------------------
    def _frame_logits(self, features: list[tuple[np.ndarray, ...]], j: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._probes:
            raise RuntimeError(f"{self.name} is not fitted: call fit or load a checkpoint")
        x, mask = pad([l2_normalise(f[j]) for f in features], self.device)
        with torch.no_grad():
            return self._probes[self.features[j]](x).squeeze(-1), mask

    def score_batch(self, clips: Sequence[Clip]) -> list[float]:
        features = self.clip_features(clips)
        probabilities = []
        for j in range(len(self.features)):
            logits, mask = self._frame_logits(features, j)
            probabilities.append(torch.sigmoid(pool_logits(logits, mask, self.pooling)))
        return torch.stack(probabilities).mean(dim=0).cpu().tolist()

    def score(self, clip: Clip) -> float:
        return self.score_batch([clip])[0]

    def frame_scores(self, clip: Clip) -> np.ndarray:
        (features,) = self.clip_features([clip])
        n = min(len(f) for f in features)
        logits = [self._frame_logits([features], j)[0][0, :n] for j in range(len(self.features))]
        return torch.stack(logits).mean(dim=0).cpu().numpy()

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: v for backbone, probe in self._probes.items() for k, v in state_to_numpy(probe, f"{backbone}.").items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        expected = {f"{b}.{p}" for b in self.features for p in ("weight", "bias")}
        if set(state) != expected:
            raise ValueError(f"{self.name}: state has {sorted(state)}, expected {sorted(expected)}")
        self._probes = {}
        for backbone in self.features:
            probe = torch.nn.Linear(state[f"{backbone}.weight"].shape[1], 1)
            load_numpy_state(probe, state, f"{backbone}.")
            self._probes[backbone] = probe.to(self.device).eval()
