"""Anomaly detectors trained on real clips only (seed paper 001, Sec. 3.2, Supp. A).

Both model real data and call whatever departs from it fake, so they cannot latch onto a
difference between a dataset's real and fake clips that has nothing to do with the manipulation:

- next-token prediction: a causal Transformer predicts each frame's features from the frames
  before it; the clip's score is its worst prediction error;
- audio-video synchronisation: an MLP Φ learns to tell, among the visual frames around an audio
  frame, the one recorded with it; the clip's score pools how badly its frames match.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avbench.clips import Clip
from avbench.detectors.ssl.base import FeatureDetector, fit_module, l2_normalise, load_numpy_state, pad, state_to_numpy
from avbench.training import holdout
from avbench.loader import ClipSet


def real_clips(clips: ClipSet) -> ClipSet:
    """The real clips of a ClipSet (fakes are not even decoded); failures are shared with `clips`,
    so the runner reports them."""
    reals = ClipSet([r for r in clips.refs if r.label == 0], clips.loader, clips.spec, clips.remove_audio,
                    needs_media=clips.needs_media)
    reals.failures = clips.failures
    return reals


class AnomalyDetector(FeatureDetector):
    """What both anomaly detectors share: training on the real clips of train and val, with the
    same early stopping as the probes; 10% of the real training clips, drawn with the seed, stand
    in for validation clips the protocol does not give. Subclasses give `inputs` (a clip's
    features -> a training item), `build` (the network, sized from an item), `loss`, the options
    lr, batch_size, max_epochs and patience, and their learning-rate `schedule`."""

    schedule: str | None = None
    model: nn.Module | None = None

    def fit(self, train: ClipSet, val: ClipSet, seed: int, device: str = "cpu") -> "AnomalyDetector":
        torch.manual_seed(seed)
        self.device = device
        train_x, train_refs = self.collect(real_clips(train))
        val_x = self.collect(real_clips(val))[0] if len(val) else []
        if not val_x:
            keep, held = holdout(np.zeros(len(train_x), dtype=np.int64), seed, identities=[r.identity for r in train_refs])
            train_x, val_x = [train_x[i] for i in keep], [train_x[i] for i in held]
        if not train_x:
            raise ValueError(f"{self.name}: training needs real clips, and the training set has none")
        items, val_items = [self.inputs(x) for x in train_x], [self.inputs(x) for x in val_x]
        self.model = self.build(items[0]).to(device)
        self.history = fit_module(self.model, self.loss, items, val_items, lr=self.lr, batch_size=self.batch_size,
                                  max_epochs=self.max_epochs, patience=self.patience, seed=seed, schedule=self.schedule)
        return self

    def _model(self) -> nn.Module:
        if self.model is None:
            raise RuntimeError(f"{self.name} is not fitted: call fit or load a checkpoint")
        return self.model

    def score(self, clip: Clip) -> float:
        return self.score_batch([clip])[0]

    def state_dict(self) -> dict[str, np.ndarray]:
        return state_to_numpy(self._model())


# -- next-token prediction ----------------------------------------------------------------------------
def sinusoidal_positions(n: int, dim: int, device) -> torch.Tensor:
    """(n, dim) sine-cosine position codes, as in "Attention is all you need"."""
    position = torch.arange(n, device=device, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    codes = torch.zeros(n, dim, device=device)
    codes[:, 0::2] = torch.sin(position * frequency)
    codes[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return codes


class NextFramePredictor(nn.Module):
    """Decoder-only Transformer: projections in and out, causal self-attention, pre-LayerNorm."""

    def __init__(self, dim: int, d_model: int, layers: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.input = nn.Linear(dim, d_model)
        block = nn.TransformerEncoderLayer(d_model, heads, ffn, dropout, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)
        self.output = nn.Linear(d_model, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, dim) -> (B, T, dim): output t predicts frame t + 1 from frames <= t. Padding at
        the end needs no mask: under causal attention no real frame sees it."""
        n = x.shape[1]
        h = self.input(x) + sinusoidal_positions(n, self.input.out_features, x.device)
        causal = nn.Transformer.generate_square_subsequent_mask(n, device=x.device)
        return self.output(self.blocks(h, mask=causal, is_causal=True))


class NextTokenPrediction(AnomalyDetector):
    """Next-token prediction on real clips: the clip's largest frame prediction error is its score.

    Input: each backbone's frame features L2-normalised (the paper does not say; normalised, the
    backbones weigh alike in a concatenation and errors compare across feature types), then
    concatenated. A decoder-only Transformer (layers, heads, d_model, ffn; the paper's 4, 4, 512,
    1024) with linear projections in and out and sine-cosine positions predicts frame t + 1 from
    frames <= t, trained with the mean squared error on real clips only, Adam (lr) with cosine
    annealing over max_epochs, and early stopping on the validation loss (Supp. A). Frame scores:
    each frame's squared error averaged over the feature dimensions; frame 0, which nothing
    predicts, gets 0. Score: the largest of them.
    """

    schedule = "cosine"
    min_frames = 2
    paper_regime = "next-token prediction"

    def __init__(self, features: Sequence[str], d_model: int = 512, layers: int = 4, heads: int = 4, ffn: int = 1024,
                 dropout: float = 0.1, lr: float = 1e-3, batch_size: int = 32, max_epochs: int = 100,
                 patience: int = 10, weights: dict[str, str] | str | None = None, layer: int | None = None,
                 random_init: bool = False, tiny: bool = False, seed: int = 0):
        super().__init__(features, weights=weights, layer=layer, random_init=random_init, tiny=tiny, seed=seed)
        self.d_model, self.layers, self.heads, self.ffn, self.dropout = d_model, layers, heads, ffn, dropout
        self.lr, self.batch_size, self.max_epochs, self.patience = lr, batch_size, max_epochs, patience

    def inputs(self, features: tuple[np.ndarray, ...]) -> np.ndarray:
        return np.concatenate([l2_normalise(f) for f in features], axis=1)

    def build(self, example: np.ndarray) -> NextFramePredictor:
        return NextFramePredictor(example.shape[1], self.d_model, self.layers, self.heads, self.ffn, self.dropout)

    def errors(self, model: nn.Module, batch: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T - 1) squared errors of the predictions of frames 1.. and the mask of real ones."""
        x, mask = pad(batch, self.device)
        return ((model(x)[:, :-1] - x[:, 1:]) ** 2).mean(dim=-1), mask[:, 1:]

    def loss(self, model: nn.Module, batch: list[np.ndarray]) -> torch.Tensor:
        errors, mask = self.errors(model, batch)
        return (errors * mask).sum() / mask.sum()

    def _frame_errors(self, clips: Sequence[Clip]) -> list[np.ndarray]:
        inputs = [self.inputs(f) for f in self.clip_features(clips)]
        with torch.no_grad():
            errors, _ = self.errors(self._model(), inputs)
        errors = errors.cpu().numpy()
        return [np.concatenate([[0.0], errors[i, :len(x) - 1]]) for i, x in enumerate(inputs)]

    def score_batch(self, clips: Sequence[Clip]) -> list[float]:
        return [float(e.max()) for e in self._frame_errors(clips)]

    def frame_scores(self, clip: Clip) -> np.ndarray:
        return self._frame_errors([clip])[0]

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.model = self.build(np.zeros((1, state["input.weight"].shape[1]))).to(self.device).eval()
        load_numpy_state(self.model, state)


# -- audio-video synchronisation --------------------------------------------------------------------------
class PairScorer(nn.Module):
    """Φ(a, v): an MLP with LayerNorm and ReLU over the concatenation [a, v] -> one logit.

    The first layer is linear in the concatenation, W [a; v] = W_a a + W_v v, so scoring every audio
    frame against every visual frame near it projects each frame once, not once per pair."""

    def __init__(self, audio_dim: int, visual_dim: int, hidden: Sequence[int]):
        super().__init__()
        self.audio_dim = audio_dim
        self.first = nn.Linear(audio_dim + visual_dim, hidden[0])
        layers: list[nn.Module] = []
        for width, following in zip(hidden, [*hidden[1:], 1]):
            layers += [nn.LayerNorm(width), nn.ReLU(), nn.Linear(width, following)]
        self.rest = nn.Sequential(*layers)

    def _project(self, a: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.first.weight
        return a @ w[:, :self.audio_dim].T, v @ w[:, self.audio_dim:].T + self.first.bias

    def forward(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """(B, T, .) each -> (B, T): Φ(a_i, v_i)."""
        pa, pv = self._project(a, v)
        return self.rest(pa + pv).squeeze(-1)

    def around(self, a: torch.Tensor, v: torch.Tensor, width: int) -> torch.Tensor:
        """(B, T, 2 width + 1): Φ(a_i, v_{i+d}) for d = -width..width (v zero-padded past the ends)."""
        pa, pv = self._project(a, v)
        pv = F.pad(pv, (0, 0, width, width)).unfold(1, 2 * width + 1, 1).transpose(2, 3)
        return self.rest(pa[:, :, None] + pv).squeeze(-1)


class SyncAnomaly(AnomalyDetector):
    """Audio-video synchronisation on real clips: poorly matched audio and visual frames are fake.

    features: (audio backbone, visual backbone); each frame feature is L2-normalised. Φ is a
    4-layer MLP (widths `hidden`, then 1; those of the public implementation of the paper's [69])
    with LayerNorm and ReLU over [a_i, v_k]. For each audio frame i, a softmax over the visual
    frames k within `neighbourhood` frames of it (clipped to the clip; 15 gives the paper's 30-frame
    neighbourhood around i) is trained to pick k = i (eq. 2): cross-entropy on real clips, Adam
    with ReduceLROnPlateau (patience 5, factor 0.1), early stopping on the validation loss. The
    paper's lr is 1e-5 (Supp. A); with the tiny backbones of the demo a larger one, e.g. 1e-3,
    learns within the epochs a demo can afford. Frame scores: -Φ(a_i, v_i); score: their log-sum-exp.
    """

    schedule = "plateau"
    paper_regime = "audio-video synchronisation"

    def __init__(self, features: Sequence[str], neighbourhood: int = 15, hidden: Sequence[int] = (512, 256, 128),
                 lr: float = 1e-5, batch_size: int = 8, max_epochs: int = 100, patience: int = 10,
                 weights: dict[str, str] | str | None = None, layer: int | None = None, random_init: bool = False,
                 tiny: bool = False, seed: int = 0):
        if len(features) != 2:
            raise ValueError(f"synchronisation needs two features, audio then visual; got {list(features)}")
        super().__init__(features, weights=weights, layer=layer, random_init=random_init, tiny=tiny, seed=seed)
        self.neighbourhood, self.hidden = neighbourhood, tuple(hidden)
        self.lr, self.batch_size, self.max_epochs, self.patience = lr, batch_size, max_epochs, patience

    def inputs(self, features: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
        return l2_normalise(features[0]), l2_normalise(features[1])

    def build(self, example: tuple[np.ndarray, np.ndarray]) -> PairScorer:
        return PairScorer(example[0].shape[1], example[1].shape[1], self.hidden)

    def loss(self, model: PairScorer, batch: list[tuple[np.ndarray, np.ndarray]]) -> torch.Tensor:
        a, mask = pad([x[0] for x in batch], self.device)
        v, _ = pad([x[1] for x in batch], self.device)
        width = self.neighbourhood
        k = (torch.arange(a.shape[1], device=self.device)[:, None]
             + torch.arange(-width, width + 1, device=self.device)[None, :])  # (T, 2 width + 1): frame i + d
        valid = (k >= 0) & (k < mask.sum(dim=1)[:, None, None])  # (B, T, 2 width + 1): v_{i+d} is a frame
        valid[..., width] = True  # keeps the padded rows finite; the mask drops them below
        log_p = model.around(a, v, width).masked_fill(~valid, -torch.inf).log_softmax(dim=-1)[..., width]
        return -(log_p * mask).sum() / mask.sum()

    def _frame_scores(self, clips: Sequence[Clip]) -> list[np.ndarray]:
        inputs = [self.inputs(f) for f in self.clip_features(clips)]
        a, _ = pad([x[0] for x in inputs], self.device)
        v, _ = pad([x[1] for x in inputs], self.device)
        with torch.no_grad():
            scores = -self._model()(a, v).cpu().numpy()
        return [scores[i, :len(x[0])] for i, x in enumerate(inputs)]

    def score_batch(self, clips: Sequence[Clip]) -> list[float]:
        return [float(np.logaddexp.reduce(s.astype(np.float64))) for s in self._frame_scores(clips)]

    def frame_scores(self, clip: Clip) -> np.ndarray:
        return self._frame_scores([clip])[0]

    def state_dict(self) -> dict[str, np.ndarray]:
        return {**super().state_dict(), "audio_dim": np.array(self._model().audio_dim)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        state = dict(state)
        audio_dim = int(state.pop("audio_dim"))
        in_dim = state["first.weight"].shape[1]
        self.model = PairScorer(audio_dim, in_dim - audio_dim, self.hidden).to(self.device).eval()
        load_numpy_state(self.model, state)
