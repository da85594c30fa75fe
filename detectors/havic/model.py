"""HAVIC's networks (seed paper 000, Peng et al.): encoders, interaction module, HAA classifier, pre-training.

Module and parameter names are those of the authors' checkpoints (specs/havic_*_state_dict.tsv), so
their state dicts load strictly with no mapping; odd names such as `AudioVisualInteractionModule`,
`VisualTokenReducer_3` or `pool_v.weights` are theirs. The forward passes reproduce the authors'
released model, including three of its quirks, each marked where it happens:

- the audio patch grid is 8 frequency rows x 64 time columns, flattened row by row, and the "8
  temporal segments" of the audio are 8 contiguous chunks of that order, i.e. frequency bands;
- the audio encoder stores `cls_pos_embed` but does not add it to its CLS tokens (the visual one does);
- each interaction block's cross-attention output already contains its residual, and the block adds
  the input once more; its two self-attention blocks are computed and discarded by the authors, so
  here they are not computed at all (their parameters exist only for strict loading, and get no
  gradient).

Tokens of both encoders come in segments: segment s is [CLS_s, patch tokens of segment s]. Hierarchical
features are taken after the blocks listed in `HAVICConfig.taps`, each through the encoder's final norm.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class HAVICConfig:
    """Geometry and sizes. `base()` is the paper's (and the checkpoints'); `tiny()` is for tests.

    The decoders have one layer per hierarchical tap; segments = n_frames // tubelet; the number of
    audio tokens (mel_bins / patch) x (audio_frames / patch) must split into that many segments.
    """

    image_size: int = 224
    patch_size: int = 16
    n_frames: int = 16
    tubelet: int = 2
    audio_frames: int = 1024  # fbank frames of one window, after interpolation
    mel_bins: int = 128
    dim: int = 768
    depth: int = 12
    heads: int = 12
    taps: tuple[int, ...] = (3, 6, 9, 12)
    mlp_ratio: float = 4.0
    decoder_dim: int = 384
    decoder_heads: int = 6
    interaction_heads: int = 8
    semantic_heads: int = 12  # the cross-modal semantic decoders' transformer block
    reducer_hidden: int = 128  # hidden width of the token-scoring networks S_l
    visual_drop_path: float = 0.1  # MARLIN's blocks (visual encoder and decoder), training only
    video_mask_ratio: float = 0.9
    audio_mask_ratio: float = 0.8125

    @classmethod
    def base(cls) -> "HAVICConfig":
        return cls()

    @classmethod
    def tiny(cls) -> "HAVICConfig":
        """Departs from base in every size: 32 px faces (2 x 2 patches), 8 frames (4 segments), 64 x 128
        fbank (8 x 4 audio patches), width 32, 4 blocks tapped after each one, 2 heads everywhere."""
        return cls(image_size=32, n_frames=8, audio_frames=64, dim=32, depth=4, heads=2, taps=(1, 2, 3, 4),
                   decoder_dim=16, decoder_heads=2, interaction_heads=2, semantic_heads=2, reducer_hidden=8)

    def __post_init__(self):
        object.__setattr__(self, "taps", tuple(self.taps))
        p = self.patch_size
        problems = []
        if self.image_size % p or self.mel_bins % p or self.audio_frames % p:
            problems.append("image_size, mel_bins and audio_frames must be multiples of patch_size")
        if self.n_frames % self.tubelet:
            problems.append("n_frames must be a multiple of tubelet")
        elif self.audio_tokens % self.n_segments:
            problems.append(f"{self.audio_tokens} audio tokens do not split into {self.n_segments} segments")
        if not self.taps or list(self.taps) != sorted(set(self.taps)) or not 1 <= self.taps[0] <= self.taps[-1] <= self.depth:
            problems.append(f"taps {self.taps} must be increasing block numbers in 1..{self.depth}")
        for width, heads in ((self.dim, self.heads), (self.dim, self.interaction_heads),
                             (self.dim, self.semantic_heads), (self.decoder_dim, self.decoder_heads)):
            if width % heads or width % 2:
                problems.append(f"width {width} must be even and divisible by its {heads} heads")
        if problems:
            raise ValueError("invalid HAVICConfig: " + "; ".join(problems))

    @property
    def n_segments(self) -> int:
        return self.n_frames // self.tubelet

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def visual_tokens_per_segment(self) -> int:
        return self.grid * self.grid

    @property
    def visual_tokens(self) -> int:
        return self.n_segments * self.visual_tokens_per_segment

    @property
    def audio_grid(self) -> tuple[int, int]:
        """(frequency rows, time columns) of the audio patch grid."""
        return self.mel_bins // self.patch_size, self.audio_frames // self.patch_size

    @property
    def audio_tokens(self) -> int:
        rows, cols = self.audio_grid
        return rows * cols

    @property
    def audio_tokens_per_segment(self) -> int:
        return self.audio_tokens // self.n_segments

    def as_dict(self) -> dict:
        d = asdict(self)
        d["taps"] = list(self.taps)
        return d


# -- building blocks ------------------------------------------------------------------------------------

def sincos(n_positions: int, dim: int) -> Tensor:
    """(n, dim) sine-cosine table, sin and cos interleaved (MARLIN's and the authors' 1-D form)."""
    pos = torch.arange(n_positions, dtype=torch.float32)[:, None]
    freq = 10000.0 ** (-torch.arange(dim // 2, dtype=torch.float32) / (dim // 2))
    angles = pos * freq
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)


def sincos_2d(rows: int, cols: int, dim: int) -> Tensor:
    """(rows * cols, dim), row-major: half the channels encode the row, half the column."""
    r, c = sincos(rows, dim // 2), sincos(cols, dim // 2)
    return torch.cat([r[:, None].expand(-1, cols, -1), c[None].expand(rows, -1, -1)], dim=-1).flatten(0, 1)


def _frozen(table: Tensor) -> nn.Parameter:
    return nn.Parameter(table[None], requires_grad=False)


def _tokens(n: int, dim: int) -> nn.Parameter:
    return nn.Parameter(torch.randn(1, n, dim) * 0.02)


class FixedEmbedding(nn.Module):
    """MARLIN's sine-cosine positional embedding: a frozen parameter named `emb`, added to the tokens."""

    def __init__(self, n_positions: int, dim: int):
        super().__init__()
        self.emb = _frozen(sincos(n_positions, dim))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.emb


def _drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    if p == 0.0 or not training:
        return x
    keep = torch.rand(x.shape[0], *(1,) * (x.ndim - 1), device=x.device, dtype=x.dtype) >= p
    return x * keep / (1 - p)


def _attend(q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
    """Multi-head softmax attention; q (B, Nq, C), k and v (B, Nk, C) -> (B, Nq, C)."""
    b, nq, c = q.shape
    split = lambda t: t.reshape(b, t.shape[1], heads, c // heads).transpose(1, 2)  # noqa: E731
    return F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(b, nq, c)


class Mlp(nn.Module):
    """timm's ViT MLP (fc1, GELU, fc2): AudioMAE-style blocks and the interaction module."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Linear(nn.Module):
    """A linear layer nested as `.linear`, as MARLIN names it."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)


class MarlinMlp(nn.Module):
    """The same MLP under MARLIN's names (layers.0.linear, layers.1.linear)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.layers = nn.ModuleList([_Linear(dim, hidden), _Linear(hidden, dim)])

    def forward(self, x: Tensor) -> Tensor:
        return self.layers[1].linear(F.gelu(self.layers[0].linear(x)))


class Attention(nn.Module):
    """Self-attention. qv_bias: BEiT/MARLIN style, learned q and v biases and none for k (exact: a key
    bias shifts a query's logits uniformly); otherwise timm's full qkv bias."""

    def __init__(self, dim: int, heads: int, qv_bias: bool):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=not qv_bias)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qv_bias else None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        if self.q_bias is None:
            qkv = self.qkv(x)
        else:
            qkv = F.linear(x, self.qkv.weight, torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias]))
        return self.proj(_attend(*qkv.chunk(3, dim=-1), self.heads))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)). With qv_bias=False it is
    timm's ViT block (full qkv bias): the interaction module's and the semantic decoders' block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, *, qv_bias: bool = True, marlin: bool = False,
                 drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, qv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = (MarlinMlp if marlin else Mlp)(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path

    def forward(self, x: Tensor) -> Tensor:
        x = x + _drop_path(self.attn(self.norm1(x)), self.drop_path, self.training)
        return x + _drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


# -- segment helpers ---------------------------------------------------------------------------------

def with_segment_cls(patches: Tensor, cls: Tensor) -> Tensor:
    """(B, S*P, D) patches and (B, S, D) CLS tokens -> (B, S*(1+P), D), each segment led by its CLS."""
    b, n, d = patches.shape
    s = cls.shape[1]
    return torch.cat([cls[:, :, None], patches.reshape(b, s, n // s, d)], dim=2).flatten(1, 2)


def split_segment_cls(tokens: Tensor, n_segments: int) -> tuple[Tensor, Tensor]:
    """Inverse of `with_segment_cls`: (B, S, D) CLS tokens and (B, S*P, D) patches."""
    b, _, d = tokens.shape
    seg = tokens.reshape(b, n_segments, -1, d)
    return seg[:, :, 0], seg[:, :, 1:].flatten(1, 2)


def segment_means(patches: Tensor, n_segments: int) -> Tensor:
    """(B, S*P, D) -> (B, S, D): the mean patch token of each segment (the contrastive loss's features)."""
    b, _, d = patches.shape
    return patches.reshape(b, n_segments, -1, d).mean(dim=2)


def _gather(tokens: Tensor, keep: Tensor) -> Tensor:
    return tokens.gather(1, keep[..., None].expand(-1, -1, tokens.shape[-1]))


def _scatter(visible: Tensor, keep: Tensor, mask_token: Tensor, n_tokens: int) -> Tensor:
    """Put the visible tokens back at their positions, `mask_token` everywhere else: (B, n_tokens, D)."""
    b, _, d = visible.shape
    canvas = mask_token.to(visible.dtype).expand(b, n_tokens, d)
    return canvas.scatter(1, keep[..., None].expand(-1, -1, d), visible)


class Encoded(NamedTuple):
    """An encoder's output: patch tokens after each tap (CLS removed), and the last tap's CLS tokens."""

    taps: list[Tensor]  # each (B, S*P, D), P = visible patches per segment
    cls: Tensor  # (B, S, D)


def _encode(tokens: Tensor, cls: Tensor, keep: Tensor | None, blocks: nn.ModuleList, norm: nn.Module,
            cfg: HAVICConfig, checkpointing: bool = False) -> Encoded:
    """The encoders' shared forward: keep the visible tokens, lead each segment with its CLS token, run
    the blocks, and take the final norm of the tokens after each tap. `checkpointing`: each block's
    activations are recomputed in the backward pass instead of kept (same values: drop-path's random
    state is replayed)."""
    if keep is not None:
        tokens = _gather(tokens, keep)
    h = with_segment_cls(tokens, cls.expand(tokens.shape[0], -1, -1))
    taps = []
    for i, block in enumerate(blocks[:cfg.taps[-1]], start=1):
        h = checkpoint(block, h, use_reentrant=False) if checkpointing else block(h)
        if i in cfg.taps:
            cls, patches = split_segment_cls(norm(h), cfg.n_segments)
            taps.append(patches)
    return Encoded(taps, cls)


class AudioEncoder(nn.Module):
    """ViT-B on the fbank (AudioMAE layout), q/v attention biases; input (B, audio_frames, mel_bins)."""

    def __init__(self, cfg: HAVICConfig):
        super().__init__()
        self.cfg = cfg
        rows, cols = cfg.audio_grid
        self.pos_embed = nn.Parameter(sincos_2d(rows, cols, cfg.dim)[None])
        self.modality = _tokens(1, cfg.dim)
        self.cls_tokens = _tokens(cfg.n_segments, cfg.dim)
        self.cls_pos_embed = _frozen(sincos(cfg.n_segments, cfg.dim))
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(1, cfg.dim, cfg.patch_size, cfg.patch_size)
        self.norm = nn.LayerNorm(cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.grad_checkpointing = False  # avbench.training.use_grad_checkpointing turns it on

    def tokens(self, audio: Tensor) -> Tensor:
        # The spectrogram is laid out as (mel, time), so patches are numbered frequency row by row.
        grid = self.patch_embed.proj(audio.transpose(1, 2)[:, None])
        return grid.flatten(2).transpose(1, 2) + self.pos_embed + self.modality

    def forward(self, audio: Tensor, keep: Tensor | None = None) -> Encoded:
        """keep: indices of the visible tokens (pre-training masks), None for all of them."""
        # the authors' audio encoder leaves cls_pos_embed out of its CLS tokens
        return _encode(self.tokens(audio), self.cls_tokens, keep, self.blocks, self.norm, self.cfg,
                       self.grad_checkpointing and self.training)


class VisualEncoder(nn.Module):
    """MARLIN's ViT-B on face tubelets (2 x 16 x 16); input (B, 3, n_frames, size, size) in [0, 1]."""

    def __init__(self, cfg: HAVICConfig):
        super().__init__()
        self.cfg = cfg
        self.cls_tokens = _tokens(cfg.n_segments, cfg.dim)
        self.cls_pos_embed = _frozen(sincos(cfg.n_segments, cfg.dim))
        self.patch_embedding = nn.Module()
        self.patch_embedding.projection = nn.Conv3d(3, cfg.dim, (cfg.tubelet, cfg.patch_size, cfg.patch_size),
                                                    (cfg.tubelet, cfg.patch_size, cfg.patch_size))
        self.pos_embedding = FixedEmbedding(cfg.visual_tokens, cfg.dim)
        self.norm = nn.LayerNorm(cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.mlp_ratio, marlin=True, drop_path=cfg.visual_drop_path)
                                    for _ in range(cfg.depth))
        self.grad_checkpointing = False

    def tokens(self, video: Tensor) -> Tensor:
        return self.pos_embedding(self.patch_embedding.projection(video).flatten(2).transpose(1, 2))

    def forward(self, video: Tensor, keep: Tensor | None = None) -> Encoded:
        """keep: indices of the visible tokens (pre-training masks), None for all of them."""
        return _encode(self.tokens(video), self.cls_tokens + self.cls_pos_embed, keep, self.blocks, self.norm,
                       self.cfg, self.grad_checkpointing and self.training)


# -- audio-visual interaction --------------------------------------------------------------------------

class CrossAttention(nn.Module):
    """Queries from one modality attend to the other: normed queries and keys, values from the raw
    context (as the authors), then the residual and an MLP block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm_q, self.norm_k, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, query: Tensor, context: Tensor) -> Tensor:
        out = _attend(self.q_proj(self.norm_q(query)), self.k_proj(self.norm_k(context)), self.v_proj(context),
                      self.heads)
        x = query + self.proj(out)
        return x + self.mlp(self.norm2(x))


class InteractionBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        # Not used by the forward pass (see the module docstring); kept for the checkpoints.
        self.self_attn_video = Block(dim, heads, mlp_ratio, qv_bias=False)
        self.self_attn_audio = Block(dim, heads, mlp_ratio, qv_bias=False)
        self.cross_attn_audio_to_video = CrossAttention(dim, heads, mlp_ratio)
        self.cross_attn_video_to_audio = CrossAttention(dim, heads, mlp_ratio)

    def forward(self, video: Tensor, audio: Tensor) -> tuple[Tensor, Tensor]:
        # The authors add the input to a cross-attention output that already holds its residual.
        return (video + self.cross_attn_audio_to_video(video, audio),
                audio + self.cross_attn_video_to_audio(audio, video))


class AudioVisualInteraction(nn.Module):
    """The interaction module I: bidirectional cross-attention over the last tap's segments (CLS included),
    then a LayerNorm per modality. Its mask tokens and positional tables are unused (as in the release)."""

    def __init__(self, cfg: HAVICConfig):
        super().__init__()
        self.cfg = cfg
        rows, cols = cfg.audio_grid
        self.audio_mask_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.audio_modality = _tokens(1, cfg.dim)
        self.audio_pos_embed = _frozen(sincos_2d(rows, cols, cfg.dim))
        self.visual_mask_token = _tokens(1, cfg.dim)
        self.visual_pos_embedding = FixedEmbedding(cfg.visual_tokens, cfg.dim)
        self.blocks = nn.ModuleList([InteractionBlock(cfg.dim, cfg.interaction_heads, cfg.mlp_ratio)])
        self.norm_video_out = nn.LayerNorm(cfg.dim)
        self.norm_audio_out = nn.LayerNorm(cfg.dim)

    def forward(self, video: Encoded, audio: Encoded) -> tuple[Tensor, Tensor]:
        """Interaction-aware patch tokens (v_inter, a_inter), CLS tokens removed again."""
        v = with_segment_cls(video.taps[-1], video.cls)
        a = with_segment_cls(audio.taps[-1], audio.cls)
        for block in self.blocks:
            v, a = block(v, a)
        s = self.cfg.n_segments
        return split_segment_cls(self.norm_video_out(v), s)[1], split_segment_cls(self.norm_audio_out(a), s)[1]


# -- Holistic Adaptive Aggregation classifier -----------------------------------------------------------

class TokenReducer(nn.Module):
    """Scoring network S_l (dim -> hidden -> 1) and the softmax-weighted sum of tokens (Eq. 6)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, tokens: Tensor) -> Tensor:
        weights = self.mlp(tokens).squeeze(-1).softmax(dim=-1)
        return torch.einsum("bn,bnd->bd", weights.to(tokens.dtype), tokens)


class LayerWeights(nn.Module):
    """Learnable alpha_l of Eq. 7, kept positive and summing to one by a softmax over `weights`."""

    def __init__(self, n_layers: int):
        super().__init__()
        self.weights = nn.Parameter(torch.full((n_layers,), 1.0 / n_layers))

    def forward(self, features: Tensor) -> Tensor:  # (B, H, D) -> (B, D)
        return torch.einsum("h,bhd->bd", self.weights.softmax(dim=0).to(features.dtype), features)


class MLPHead(nn.Module):
    """Linear layers with ReLU between them (`layers.i`), then `output_layer`; no hidden layer is a
    plain linear map (the semantic decoders' token aligners)."""

    def __init__(self, d_in: int, hidden: tuple[int, ...], d_out: int):
        super().__init__()
        sizes = (d_in, *hidden)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.output_layer = nn.Linear(sizes[-1], d_out)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = F.relu(layer(x))
        return self.output_layer(x)


class HAVICLogits(NamedTuple):
    """Logits (B, 1) of the three heads; `main` is the detector's, the others are auxiliary."""

    main: Tensor
    audio: Tensor
    visual: Tensor


def _init_weights(module: nn.Module) -> None:
    """Xavier-uniform linear and patch-embedding weights, zero biases, unit LayerNorms (the authors' and
    MARLIN's scheme; token parameters are initialised where they are created)."""
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.Conv3d)):
        nn.init.xavier_uniform_(module.weight.view(module.weight.shape[0], -1))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class HAVIC(nn.Module):
    """The fine-tuning (detection) model: encoders, interaction module, HAA aggregation and three heads.

    forward(audio (B, audio_frames, mel_bins) normalised fbank, video (B, 3, n_frames, size, size) in
    [0, 1]) -> main logits (B, 1). `heads` gives all three heads' logits (training needs them);
    `visual_logits(video)` is the visual head alone, for clips without audio (paper, supp. D.2).
    """

    def __init__(self, cfg: HAVICConfig | None = None):
        super().__init__()
        cfg = cfg or HAVICConfig.base()
        self.cfg = cfg
        d, h = cfg.dim, cfg.reducer_hidden
        self.audio_encoder = AudioEncoder(cfg)
        self.visual_encoder = VisualEncoder(cfg)
        self.classifier = MLPHead(4 * d, (2 * d, d), 1)
        self.classifier_audio = MLPHead(d, (2 * d, d), 1)
        self.classifier_visual = MLPHead(d, (2 * d, d), 1)
        self.AudioVisualInteractionModule = AudioVisualInteraction(cfg)
        for kind in ("Audio", "Visual"):
            for tap in cfg.taps:
                setattr(self, f"{kind}TokenReducer_{tap}", TokenReducer(d, h))
        self.AudioTokenReducer_AVI = TokenReducer(d, h)
        self.VisualTokenReducer_AVI = TokenReducer(d, h)
        self.pool_v = LayerWeights(len(cfg.taps))
        self.pool_a = LayerWeights(len(cfg.taps))
        self.apply(_init_weights)

    def _aggregate(self, kind: str, encoded: Encoded) -> Tensor:
        """a_agg or v_agg: each tap's tokens reduced by its own scoring network, then weighted by alpha."""
        reduced = torch.stack([getattr(self, f"{kind}TokenReducer_{tap}")(x)
                               for tap, x in zip(self.cfg.taps, encoded.taps)], dim=1)
        return (self.pool_a if kind == "Audio" else self.pool_v)(reduced)

    def heads(self, audio: Tensor, video: Tensor) -> HAVICLogits:
        v, a = self.visual_encoder(video), self.audio_encoder(audio)
        v_inter, a_inter = self.AudioVisualInteractionModule(v, a)
        a_agg, v_agg = self._aggregate("Audio", a), self._aggregate("Visual", v)
        fused = torch.cat([a_agg, v_agg, self.AudioTokenReducer_AVI(a_inter), self.VisualTokenReducer_AVI(v_inter)],
                          dim=1)
        return HAVICLogits(self.classifier(fused), self.classifier_audio(a_agg), self.classifier_visual(v_agg))

    def forward(self, audio: Tensor, video: Tensor) -> Tensor:
        return self.heads(audio, video).main

    def visual_logits(self, video: Tensor) -> Tensor:
        return self.classifier_visual(self._aggregate("Visual", self.visual_encoder(video)))


# -- pre-training ---------------------------------------------------------------------------------------

def tube_mask(batch: int, cfg: HAVICConfig, generator: torch.Generator | None = None,
              device: torch.device | str | None = None) -> Tensor:
    """Indices (B, S*k) of the visible video tokens: the same k random spatial positions in every segment
    (tube masking at video_mask_ratio; k = int(P * (1 - ratio)), at least 1), grouped by segment."""
    per = cfg.visual_tokens_per_segment
    k = max(1, int(per * (1 - cfg.video_mask_ratio)))
    spots = torch.rand(batch, per, generator=generator, device=device).argsort(dim=1)[:, :k]
    offsets = torch.arange(cfg.n_segments, device=spots.device)[None, :, None] * per
    return (spots[:, None, :] + offsets).flatten(1)


def segment_mask(batch: int, cfg: HAVICConfig, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> Tensor:
    """Indices (B, S*k) of the visible audio tokens: k random tokens of each segment (audio_mask_ratio)."""
    per = cfg.audio_tokens_per_segment
    k = max(1, int(per * (1 - cfg.audio_mask_ratio)))
    picks = torch.rand(batch, cfg.n_segments, per, generator=generator, device=device).argsort(dim=2)[..., :k]
    offsets = torch.arange(cfg.n_segments, device=picks.device)[None, :, None] * per
    return (picks + offsets).flatten(1)


def patchify_video(video: Tensor, cfg: HAVICConfig) -> Tensor:
    """(B, 3, T, H, W) -> (B, N_v, 3 * tubelet * p * p): the reconstruction target of the visual heads,
    token order (segment, row, column), values ordered (channel, frame, y, x) inside a token."""
    b, c = video.shape[:2]
    g, p, t = cfg.grid, cfg.patch_size, cfg.tubelet
    x = video.reshape(b, c, cfg.n_segments, t, g, p, g, p).permute(0, 2, 4, 6, 1, 3, 5, 7)
    return x.reshape(b, cfg.visual_tokens, -1)


def patchify_audio(audio: Tensor, cfg: HAVICConfig) -> Tensor:
    """(B, audio_frames, mel_bins) -> (B, N_a, p * p): the audio heads' target, in the encoder's token
    order (frequency row, time column), values ordered (mel, time) inside a token."""
    b = audio.shape[0]
    (rows, cols), p = cfg.audio_grid, cfg.patch_size
    x = audio.transpose(1, 2).reshape(b, rows, p, cols, p).permute(0, 1, 3, 2, 4)
    return x.reshape(b, cfg.audio_tokens, p * p)


class HierarchicalAttention(nn.Module):
    """HiA_l: decoder tokens attend to encoder tap l (projected to the decoder width); the output is
    out_norm(normed query + attention), with no output projection."""

    def __init__(self, cfg: HAVICConfig):
        super().__init__()
        dd = cfg.decoder_dim
        self.heads = cfg.decoder_heads
        self.query_proj, self.key_proj, self.value_proj = nn.Linear(dd, dd), nn.Linear(dd, dd), nn.Linear(dd, dd)
        self.encoder2decoder = nn.Linear(cfg.dim, dd)
        self.norm_q, self.norm_k, self.out_norm = nn.LayerNorm(dd), nn.LayerNorm(dd), nn.LayerNorm(dd)

    def forward(self, query: Tensor, encoder_tokens: Tensor) -> Tensor:
        q = self.norm_q(query)
        k = self.norm_k(self.encoder2decoder(encoder_tokens))
        return self.out_norm(q + _attend(self.query_proj(q), self.key_proj(k), self.value_proj(k), self.heads))


class _HierarchicalDecoder(nn.Module):
    """Decoder layer i (0-based) first attends to the encoder taps from the (H-i)-th down to the first
    (layer 1: taps 12, 9, 6, 3; layer 4: tap 3), then runs its block; every layer predicts the patches."""

    cfg: HAVICConfig

    def _decode(self, x: Tensor, encoded: Encoded, norm: nn.Module, head_name: str) -> list[Tensor]:
        taps = self.cfg.taps
        predictions = []
        for i, block in enumerate(self.blocks):
            for j in reversed(range(len(taps) - i)):
                x = getattr(self, f"HiA_{taps[j]}")(x, encoded.taps[j])
            x = block(x)
            last = i == len(self.blocks) - 1
            predictions.append(getattr(self, head_name if last else f"{head_name}_{i + 1}")(norm(x)))
        return predictions

    def _add_hierarchical_attention(self, cfg: HAVICConfig) -> None:
        for tap in cfg.taps:
            setattr(self, f"HiA_{tap}", HierarchicalAttention(cfg))


class AudioDecoder(_HierarchicalDecoder):
    """D_a: predicts the fbank patches (B, N_a, p*p) of all tokens at each of its layers."""

    def __init__(self, cfg: HAVICConfig):
        super().__init__()
        self.cfg = cfg
        dd, rows_cols = cfg.decoder_dim, cfg.audio_grid
        self.mask_token = _tokens(1, dd)
        self.decoder_modality = _tokens(1, dd)
        self.decoder_pos_embed = _frozen(sincos_2d(*rows_cols, dd))
        self.blocks = nn.ModuleList(Block(dd, cfg.decoder_heads, cfg.mlp_ratio) for _ in cfg.taps)
        self.decoder_embed = nn.Linear(cfg.dim, dd, bias=False)
        self.decoder_norm = nn.LayerNorm(dd)
        for name in ["decoder_pred"] + [f"decoder_pred_{i}" for i in range(1, len(cfg.taps))]:
            setattr(self, name, nn.Linear(dd, cfg.patch_size ** 2))
        self._add_hierarchical_attention(cfg)

    def forward(self, a_inter: Tensor, encoded: Encoded, keep: Tensor) -> list[Tensor]:
        x = _scatter(self.decoder_embed(a_inter), keep, self.mask_token, self.cfg.audio_tokens)
        x = x + self.decoder_modality + self.decoder_pos_embed
        return self._decode(x, encoded, self.decoder_norm, "decoder_pred")


class VisualDecoder(_HierarchicalDecoder):
    """D_v (MARLIN's decoder plus hierarchy): predicts the tubelet patches (B, N_v, 3*2*p*p) per layer."""

    def __init__(self, cfg: HAVICConfig):
        super().__init__()
        self.cfg = cfg
        dd = cfg.decoder_dim
        self.mask_token = _tokens(1, dd)
        self.norm = nn.LayerNorm(dd)
        self.enc_dec_proj = nn.Linear(cfg.dim, dd, bias=False)
        self.pos_embedding = FixedEmbedding(cfg.visual_tokens, dd)
        self.blocks = nn.ModuleList(Block(dd, cfg.decoder_heads, cfg.mlp_ratio, marlin=True,
                                          drop_path=cfg.visual_drop_path) for _ in cfg.taps)
        out = 3 * cfg.tubelet * cfg.patch_size ** 2
        for name in ["head"] + [f"head_{i}" for i in range(1, len(cfg.taps))]:
            setattr(self, name, nn.Linear(dd, out))
        self._add_hierarchical_attention(cfg)

    def forward(self, v_inter: Tensor, encoded: Encoded, keep: Tensor) -> list[Tensor]:
        x = self.pos_embedding(_scatter(self.enc_dec_proj(v_inter), keep, self.mask_token, self.cfg.visual_tokens))
        return self._decode(x, encoded, self.norm, "head")


class _SemanticDecoder(nn.Module):
    """D_{m->m'}: a linear map along each segment's tokens (P_m -> P_m') aligns the token counts, then a
    transformer block and a norm give the other modality's last-layer patch tokens."""

    def __init__(self, cfg: HAVICConfig, tokens_in: int, tokens_out: int):
        super().__init__()
        self.cfg = cfg
        self.TokenAligner = MLPHead(tokens_in, (), tokens_out)
        self.block = Block(cfg.dim, cfg.semantic_heads, cfg.mlp_ratio, qv_bias=False)
        self.norm = nn.LayerNorm(cfg.dim)

    def _translate(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        s = self.cfg.n_segments
        aligned = self.TokenAligner(x.reshape(b * s, n // s, d).transpose(1, 2)).transpose(1, 2)
        return self.norm(self.block(aligned.reshape(b, -1, d)))


class AudioToVisual(_SemanticDecoder):
    def __init__(self, cfg: HAVICConfig):
        super().__init__(cfg, cfg.audio_tokens_per_segment, cfg.visual_tokens_per_segment)
        rows, cols = cfg.audio_grid
        self.audio_mask_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.audio_modality = _tokens(1, cfg.dim)
        self.audio_pos_embed = _frozen(sincos_2d(rows, cols, cfg.dim))

    def forward(self, a_inter: Tensor, keep: Tensor) -> Tensor:
        x = _scatter(a_inter, keep, self.audio_mask_token, self.cfg.audio_tokens)
        return self._translate(x + self.audio_modality + self.audio_pos_embed)


class VisualToAudio(_SemanticDecoder):
    def __init__(self, cfg: HAVICConfig):
        super().__init__(cfg, cfg.visual_tokens_per_segment, cfg.audio_tokens_per_segment)
        self.visual_mask_token = _tokens(1, cfg.dim)
        self.visual_pos_embedding = FixedEmbedding(cfg.visual_tokens, cfg.dim)

    def forward(self, v_inter: Tensor, keep: Tensor) -> Tensor:
        return self._translate(self.visual_pos_embedding(_scatter(v_inter, keep, self.visual_mask_token,
                                                                  self.cfg.visual_tokens)))


class PretrainOutput(NamedTuple):
    """What the three pre-training losses need (the authors' weights: L_rec + 0.01 L_cl + 1.0 L_cross).

    L_rec: compare each of `video_recons` / `audio_recons` (one per decoder layer, last = final layer)
    with `patchify_video(video)` / `patchify_audio(audio)`; the authors average the squared error over
    all tokens, visible ones included, and average the layers. L_cl: `video_segments` and
    `audio_segments` are the per-segment means of the last layer's visible patch tokens, which is what
    the authors' contrastive loss uses; the segments' CLS tokens are given too. L_cross: compare
    `video_from_audio` / `audio_from_video` with the gradient-free targets `video_target` /
    `audio_target` (last-layer patch tokens of the unmasked inputs).
    """

    video_recons: list[Tensor]  # each (B, N_v, 3*tubelet*p*p)
    audio_recons: list[Tensor]  # each (B, N_a, p*p)
    video_keep: Tensor  # (B, K_v) indices of the visible video tokens
    audio_keep: Tensor  # (B, K_a)
    video_segments: Tensor  # (B, S, D)
    audio_segments: Tensor  # (B, S, D)
    video_cls: Tensor  # (B, S, D)
    audio_cls: Tensor  # (B, S, D)
    video_from_audio: Tensor  # (B, N_v, D)
    audio_from_video: Tensor  # (B, N_a, D)
    video_target: Tensor  # (B, N_v, D), no gradient
    audio_target: Tensor  # (B, N_a, D), no gradient


class HAVICPretrain(nn.Module):
    """The pre-training model: masked encoders, interaction module, hierarchical decoders D_v and D_a,
    and cross-modal semantic decoders A2V and V2A. forward(audio, video) -> PretrainOutput."""

    def __init__(self, cfg: HAVICConfig | None = None):
        super().__init__()
        cfg = cfg or HAVICConfig.base()
        self.cfg = cfg
        self.audio_encoder = AudioEncoder(cfg)
        self.audio_decoder = AudioDecoder(cfg)
        self.visual_encoder = VisualEncoder(cfg)
        self.visual_decoder = VisualDecoder(cfg)
        self.AudioVisualInteractionModule = AudioVisualInteraction(cfg)
        self.A2V = AudioToVisual(cfg)
        self.V2A = VisualToAudio(cfg)
        self.apply(_init_weights)

    def forward(self, audio: Tensor, video: Tensor, *, video_keep: Tensor | None = None,
                audio_keep: Tensor | None = None, generator: torch.Generator | None = None) -> PretrainOutput:
        """Masks are drawn with `generator` unless given (indices as `tube_mask` / `segment_mask` return)."""
        b, cfg = video.shape[0], self.cfg
        if video_keep is None:
            video_keep = tube_mask(b, cfg, generator, video.device)
        if audio_keep is None:
            audio_keep = segment_mask(b, cfg, generator, audio.device)
        v, a = self.visual_encoder(video, video_keep), self.audio_encoder(audio, audio_keep)
        v_inter, a_inter = self.AudioVisualInteractionModule(v, a)
        with torch.no_grad():
            video_target = self.visual_encoder(video).taps[-1]
            audio_target = self.audio_encoder(audio).taps[-1]
        return PretrainOutput(
            video_recons=self.visual_decoder(v_inter, v, video_keep),
            audio_recons=self.audio_decoder(a_inter, a, audio_keep),
            video_keep=video_keep, audio_keep=audio_keep,
            video_segments=segment_means(v.taps[-1], cfg.n_segments),
            audio_segments=segment_means(a.taps[-1], cfg.n_segments),
            video_cls=v.cls, audio_cls=a.cls,
            video_from_audio=self.A2V(a_inter, audio_keep), audio_from_video=self.V2A(v_inter, video_keep),
            video_target=video_target, audio_target=audio_target)
