"""AVF-MAE++ base encoders (HOLA's stage-1 backbones; ../shared/specs/HOLA.md section 2.1), in plain torch.

One `LGEncoder` per modality: a patch embedding (video Conv3d over tubelets, audio Conv2d over
fbank patches), a fixed sinusoid position table, `depth` local-global (LG) blocks and a final
LayerNorm. The tokens are cut into LG regions, each with one learned messenger token
(`lg_region_tokens`); a block runs, all pre-norm residual:
  (1) self-attention inside each region (its messenger and its local tokens);
  (2) self-attention among the sample's messengers;
  (3) every local token of the sample attends to the sample's messengers;
  (4) every messenger attends to all the sample's local tokens (the step AVF-MAE++ adds to
      MAE-DFER's block);
then the MLP on every token. The released AVF-MAE++ `LGBlock.forward` does not run (names used
before assignment), so this is rebuilt from that description; the state-dict names are upstream's,
so an AVF-MAE++ checkpoint loads into it (checkpoint.py).

The API the pre-training and HOLA's head read:
- `embed(x)`: patch tokens (B, N, C) in raster order ((t, h, w) for video, (time, freq) for audio)
  plus the sinusoid;
- `forward(x, visible=None, return_blocks=())`: the kept tokens after the final norm, in raster order
  of the kept positions; messenger tokens never leave the encoder;
- `region_of` (N,): the LG region of each raster token, `num_regions`, `region_counts(visible)`.

Masks must keep the same number of tokens in every region of every sample: a region is a real
block of the token grid here. Upstream instead cuts the visible tokens, in raster order, into
equal consecutive chunks and calls those the regions; with its unbalanced masks (random tube
masks, random audio masks) a chunk is not a grid block. The two agree whenever the mask is
region-balanced, and always at fine-tuning (nothing masked).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

MODALITIES = ("video", "audio")


@dataclass(frozen=True)
class EncoderConfig:
    """One encoder's geometry. `input_size` is (frames, height, width) for video and (time, freq)
    for audio; `region` is the LG region in tokens, on the same axes. Sizes are the spec's
    (section 2.1, upstream `avit_dim512_patch16_160_a256`) unless marked default."""

    modality: str  # "video" | "audio"
    dim: int = 512
    depth: int = 10
    heads: int = 8
    mlp_ratio: float = 4.0
    patch: int = 16
    tubelet: int = 2  # video only: frames per token
    input_size: tuple[int, ...] = (16, 160, 160)
    region: tuple[int, ...] = (2, 5, 10)
    drop_path: float = 0.1  # upstream fine-tune default; pre-training may want 0.0 (VideoMAE's)
    qkv_bias: bool = True  # q and v biases only (k's would cancel in the softmax), upstream's layout
    norm_eps: float = 1e-6

    @classmethod
    def video_base(cls, **changes) -> "EncoderConfig":
        """16x160x160 -> 8x10x10 = 800 tokens; regions (2,5,10) -> 8 regions of 100."""
        return cls(**{"modality": "video", **changes})

    @classmethod
    def audio_base(cls, **changes) -> "EncoderConfig":
        """256x128 fbank -> 16x8 = 128 tokens; regions (4,4) -> 8 regions of 16."""
        return cls(**{"modality": "audio", "input_size": (256, 128), "region": (4, 4), **changes})

    @classmethod
    def video_tiny(cls, **changes) -> "EncoderConfig":
        """The spec's CPU twin (section 7): 4x32x32, patch 8, tubelet 2 -> 2x4x4 = 32 tokens;
        regions (2,2,4) -> 2 regions of 16; width 32, 2 heads, MLP ratio 2, 2 blocks."""
        sizes = dict(modality="video", dim=32, depth=2, heads=2, mlp_ratio=2.0, patch=8, tubelet=2,
                     input_size=(4, 32, 32), region=(2, 2, 4))
        return cls(**{**sizes, **changes})

    @classmethod
    def audio_tiny(cls, **changes) -> "EncoderConfig":
        """The CPU twin: 32 frames x 16 mel bins, patch 8 -> 4x2 = 8 tokens; regions (2,2) -> 2 of 4."""
        sizes = dict(modality="audio", dim=32, depth=2, heads=2, mlp_ratio=2.0, patch=8, input_size=(32, 16),
                     region=(2, 2))
        return cls(**{**sizes, **changes})

    def __post_init__(self):
        object.__setattr__(self, "input_size", tuple(int(s) for s in self.input_size))
        object.__setattr__(self, "region", tuple(int(r) for r in self.region))
        problems = []
        axes = 3 if self.modality == "video" else 2
        if self.modality not in MODALITIES:
            problems.append(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        elif len(self.input_size) != axes or len(self.region) != axes:
            problems.append(f"{self.modality} needs input_size and region with {axes} axes "
                            f"({'frames, height, width' if axes == 3 else 'time, freq'}), got "
                            f"{self.input_size} and {self.region}")
        elif min(self.region) < 1 or min(self.input_size) < 1 or self.patch < 1 or self.tubelet < 1:
            problems.append("sizes, patch, tubelet and region must be positive")
        else:
            steps = self.steps
            if any(s % p for s, p in zip(self.input_size, steps)):
                problems.append(f"input_size {self.input_size} must divide by the patch steps {steps}")
            elif any(g % r for g, r in zip(self.grid, self.region)):
                problems.append(f"the token grid {self.grid} must divide by the LG region {self.region}")
        if self.dim % self.heads:
            problems.append(f"dim {self.dim} must divide by heads {self.heads}")
        if self.depth < 0 or not 0.0 <= self.drop_path < 1.0:
            problems.append("depth must be >= 0 and drop_path in [0, 1)")
        if problems:
            raise ValueError("invalid EncoderConfig: " + "; ".join(problems))

    @property
    def steps(self) -> tuple[int, ...]:
        """Input samples per token along each axis: (tubelet, patch, patch) or (patch, patch)."""
        return (self.tubelet, self.patch, self.patch) if self.modality == "video" else (self.patch, self.patch)

    @property
    def in_chans(self) -> int:
        return 3 if self.modality == "video" else 1

    @property
    def grid(self) -> tuple[int, ...]:
        """Tokens along each axis: (t, h, w) for video, (time, freq) for audio."""
        return tuple(s // p for s, p in zip(self.input_size, self.steps))

    @property
    def num_tokens(self) -> int:
        return math.prod(self.grid)

    @property
    def region_grid(self) -> tuple[int, ...]:
        """Regions along each axis ((nt, nh, nw) or (nh, nw))."""
        return tuple(g // r for g, r in zip(self.grid, self.region))

    @property
    def num_regions(self) -> int:
        return math.prod(self.region_grid)

    @property
    def region_tokens(self) -> int:
        """Tokens per region when nothing is masked."""
        return math.prod(self.region)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's input: (3, T, H, W) or (1, time, freq)."""
        return (self.in_chans, *self.input_size)

    def region_index(self, device: torch.device | str | None = None) -> Tensor:
        """(N,) long: the region of each raster token, regions numbered in raster order of the
        region grid (upstream's `(nt nh nw)`)."""
        coords = torch.meshgrid(*[torch.arange(g, device=device) for g in self.grid], indexing="ij")
        index = torch.zeros_like(coords[0])
        for c, size, count in zip(coords, self.region, self.region_grid):
            index = index * count + c // size
        return index.flatten()

    def as_dict(self) -> dict:
        d = asdict(self)
        d["input_size"], d["region"] = list(self.input_size), list(self.region)
        return d


def sinusoid_table(positions: int, dim: int, device: torch.device | str | None = None) -> Tensor:
    """(1, positions, dim) float32: angle p / 10000^(2*(j//2)/dim), sine on even channels, cosine on
    odd (the table VideoMAE, MAE-DFER and AVF-MAE++ add; fixed, never trained)."""
    position = torch.arange(positions, dtype=torch.float64, device=device)[:, None]
    channel = torch.arange(dim, device=device)
    angle = position / 10000.0 ** ((2 * (channel // 2)).to(torch.float64) / dim)
    table = torch.where(channel % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.to(torch.float32)[None]


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth: each sample's branch (the first axis) dropped with probability p, the kept
    ones scaled by 1/(1-p)."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Attention(nn.Module):
    """Multi-head attention, self (context None) or cross, with upstream's parameter layout: `q`
    and `kv` bias-free, separate `q_bias` and `v_bias` (a key bias adds the same amount to every
    logit of a query and cancels in the softmax, so this is a full-bias attention), `proj` with
    bias. No attention dropout. x (B, T1, C), context (B, T2, C) -> (B, T1, C)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        context = x if context is None else context
        b, t1, c = x.shape
        t2 = context.shape[1]
        kv_bias = None if self.v_bias is None else torch.cat([torch.zeros_like(self.v_bias), self.v_bias])
        q = F.linear(x, self.q.weight, self.q_bias).reshape(b, t1, self.heads, -1).transpose(1, 2)
        k, v = F.linear(context, self.kv.weight, kv_bias).reshape(b, t2, 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, t1, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class LGBlock(nn.Module):
    """One local-global block on x (B, R, 1 + k, C): R regions of k local tokens, each region's
    messenger first. Steps (1)-(4) and the MLP of the module docstring; step (4) reads the
    messengers after step (2) and the local tokens after step (3), as upstream's intent. Stochastic
    depth drops per sample in every step (upstream's drops per region row in steps 1 and the MLP)."""

    def __init__(self, cfg: EncoderConfig, drop_path_rate: float):
        super().__init__()
        dim, heads, norm = cfg.dim, cfg.heads, lambda: nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.first_attn_norm0 = norm()
        self.first_attn = Attention(dim, heads, cfg.qkv_bias)
        self.second_attn_norm0 = norm()
        self.second_attn = Attention(dim, heads, cfg.qkv_bias)
        self.third_attn_norm0, self.third_attn_norm1 = norm(), norm()
        self.third_attn = Attention(dim, heads, cfg.qkv_bias)
        self.fourth_attn_norm0, self.fourth_attn_norm1 = norm(), norm()
        self.fourth_attn = Attention(dim, heads, cfg.qkv_bias)
        self.drop_path = DropPath(drop_path_rate)
        self.norm2 = norm()
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        b, r, s, c = x.shape
        local_attn = self.first_attn(self.first_attn_norm0(x.reshape(b * r, s, c))).reshape(b, r, s, c)
        x = x + self.drop_path(local_attn)  # (1) inside each region
        messengers, local = x[:, :, 0], x[:, :, 1:].reshape(b, r * (s - 1), c)
        messengers = messengers + self.drop_path(self.second_attn(self.second_attn_norm0(messengers)))  # (2)
        local = local + self.drop_path(self.third_attn(self.third_attn_norm0(local),  # (3)
                                                       self.third_attn_norm1(messengers)))
        messengers = messengers + self.drop_path(self.fourth_attn(self.fourth_attn_norm0(messengers),  # (4)
                                                                  self.fourth_attn_norm1(local)))
        x = torch.cat([messengers[:, :, None], local.reshape(b, r, s - 1, c)], dim=2)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Non-overlapping patches: Conv3d over (tubelet, patch, patch) for video, Conv2d over
    (patch, patch) for audio. (B, in_chans, *input_size) -> (B, N, C), raster order."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        conv = nn.Conv3d if cfg.modality == "video" else nn.Conv2d
        steps = cfg.steps
        self.proj = conv(cfg.in_chans, cfg.dim, kernel_size=steps, stride=steps)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class LGEncoder(nn.Module):
    """An AVF-MAE++ encoder (module docstring). State-dict keys: `patch_embed.proj.*`,
    `lg_region_tokens` (R, C), `blocks.i.*`, `norm.*`; the position table and the region indices
    are non-persistent buffers (not in the state dict; `reset_buffers()` recomputes them, e.g. after
    building on the meta device and loading with assign=True)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.grid, self.num_tokens, self.num_regions = cfg.grid, cfg.num_tokens, cfg.num_regions
        self.grad_checkpointing = False  # timm's convention (avbench.training.use_grad_checkpointing)
        self.patch_embed = PatchEmbed(cfg)
        rates = torch.linspace(0, cfg.drop_path, cfg.depth, device="cpu").tolist() if cfg.depth else []
        self.blocks = nn.ModuleList(LGBlock(cfg, rate) for rate in rates)
        self.lg_region_tokens = nn.Parameter(torch.zeros(cfg.num_regions, cfg.dim))
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        for name in ("pos_embed", "region_of", "lg_order", "lg_restore"):
            self.register_buffer(name, torch.empty(0), persistent=False)
        self.reset_buffers()
        self._init_weights()

    def reset_buffers(self) -> None:
        """The sinusoid table (1, N, C), `region_of` (N,), and the permutation from raster order to
        the LG layout (`lg_order`, regions in turn, raster order inside each) and back (`lg_restore`)."""
        device = self.lg_region_tokens.device
        n = self.num_tokens
        self.pos_embed = sinusoid_table(n, self.cfg.dim, device)
        self.region_of = self.cfg.region_index(device)
        self.lg_order = (self.region_of * n + torch.arange(n, device=device)).argsort()
        self.lg_restore = self.lg_order.argsort()

    def _init_weights(self) -> None:
        """Upstream pre-training's initialisation: Xavier-uniform Linear weights, zero biases,
        messengers N(0, 0.02) truncated at 2 std; the patch convolution keeps torch's default."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.lg_region_tokens, std=0.02, a=-0.04, b=0.04)

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def embed(self, x: Tensor) -> Tensor:
        """(B, *cfg.input_shape) -> (B, N, C): patch tokens in raster order plus the sinusoid."""
        if tuple(x.shape[1:]) != self.cfg.input_shape:
            raise ValueError(f"{self.cfg.modality} encoder expects (B, {', '.join(map(str, self.cfg.input_shape))}), "
                             f"got {tuple(x.shape)}")
        tokens = self.patch_embed(x)
        return tokens + self.pos_embed.to(tokens.dtype)

    def region_counts(self, visible: Tensor) -> Tensor:
        """(B, N) bool -> (B, R) long: kept tokens per region."""
        counts = torch.zeros(visible.shape[0], self.num_regions, dtype=torch.long, device=visible.device)
        return counts.scatter_add_(1, self.region_of.to(visible.device).expand_as(visible), visible.long())

    def _visible_index(self, visible: Tensor, batch: int) -> tuple[Tensor, int]:
        """Raster positions of the kept tokens in LG layout (B, R*k), and k."""
        n = self.num_tokens
        if visible.dtype != torch.bool or tuple(visible.shape) != (batch, n):
            raise ValueError(f"visible must be a bool tensor of shape ({batch}, {n}), got {visible.dtype} "
                             f"{tuple(visible.shape)}")
        counts = self.region_counts(visible)
        k = int(counts[0, 0])
        if k == 0 or bool((counts != k).any()):
            raise ValueError(f"visible must keep the same number (>= 1) of tokens in every one of the "
                             f"{self.num_regions} LG regions of every sample; kept per region: "
                             f"{sorted(set(counts.flatten().tolist()))} (see region_of / region_counts)")
        positions = torch.arange(n, device=visible.device)
        key = torch.where(visible, self.region_of * n + positions, self.num_regions * n + positions)
        return key.argsort(dim=1)[:, :self.num_regions * k], k

    def forward(self, x: Tensor, visible: Tensor | None = None,
                return_blocks: tuple[int, ...] | list[int] = ()) -> Tensor | tuple[Tensor, list[Tensor]]:
        """x (B, *input_shape); visible (B, N) bool or None (all kept) -> (B, N_kept, C) after the
        final norm, in raster order of the kept positions. With `return_blocks` (0-based block
        indices) also the outputs of those blocks, same shape and order, before any norm (upstream's
        InfoNCE and decoder skips read `norm(block output)`: apply `self.norm` to match)."""
        tokens = self.embed(x)
        b, _, c = tokens.shape
        wanted = [int(i) for i in return_blocks]
        if any(not 0 <= i < self.depth for i in wanted):
            raise ValueError(f"return_blocks {tuple(wanted)} must index the {self.depth} blocks (0-based)")
        if visible is None:
            index, restore, k = self.lg_order.expand(b, -1), self.lg_restore.expand(b, -1), self.cfg.region_tokens
        else:
            index, k = self._visible_index(visible, b)
            restore = index.argsort(dim=1)
        h = tokens.gather(1, index[..., None].expand(-1, -1, c)).reshape(b, self.num_regions, k, c)
        messengers = self.lg_region_tokens.to(h.dtype)[None, :, None].expand(b, -1, -1, -1)
        h = torch.cat([messengers, h], dim=2)

        def raster(state: Tensor) -> Tensor:
            local = state[:, :, 1:].reshape(b, self.num_regions * k, c)
            return local.gather(1, restore[..., None].expand(-1, -1, c))

        kept = {}
        for i, block in enumerate(self.blocks):
            if self.grad_checkpointing and torch.is_grad_enabled():
                h = checkpoint(block, h, use_reentrant=False)
            else:
                h = block(h)
            if i in wanted:
                kept[i] = raster(h)
        out = self.norm(raster(h))
        return (out, [kept[i] for i in wanted]) if wanted else out
