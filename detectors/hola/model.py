"""HOLA's network (seed paper 003, Wu et al., sections 3.2.2-3.2.5; ../shared/specs/HOLA.md sections
2.2-2.6), in plain torch.

video (B, 3, 16, 160, 160) and fbank (B, 1, 256, 128)
  -> the two AVF-MAE++ encoders (backbone.py): last-block patch tokens after the final norm, raster
     order, F_v (B, 800, C) and F_a (B, 128, C); messengers dropped
  -> projection to a common length L per modality: Conv1d(k=3) + BN + GELU over the tokens, then
     Linear(L_m -> L) along the token axis: (B, L, C) each
  -> ICMI, 3 layers: each modality queries the other (8 heads), an element-wise gate mixes the
     query and the attended features, LayerNorm(F + F_u); both directions update at once from the
     layer's input, each with its own weights
  -> LGCF: [CLS] + concat(F̂_v, F̂_a) (B, 2L+1, C) through N pre-norm transformer layers; the local
     tokens gated by sigmoid(Linear([F_l ; F_g])): F_f (B, 2L, C)
  -> Pyramid-like Refiner: three stride-2 Conv1d + BN + ReLU scales (lengths L, L/2, L/4), each scale
     feeding the next un-pooled and averaged over time; concat (B, 3C), Linear(3C -> C), LayerNorm
  -> Linear(C -> 2); score = softmax(logits)[:, 1] (fake = 1).

Ablations (paper Table 3, cumulative; spec 2.6): `use_icmi=False`: F̂ = F. `use_lgcf=False`: F_f =
concat(F̂_v, F̂_a), no CLS. `use_refiner=False`: mean over tokens, Linear(C -> C), LayerNorm,
classifier. All three off: the spec's baseline, mean over tokens per modality, concat, LayerNorm,
Linear(2C -> 2). Each switch removes the parameters of the part it turns off (`icmi.*`, `lgcf.*`,
`refiner.*`). `audio_frontend="mfcc32"`: the paper-literal audio (B, 16, 32) MFCC segments through a
fresh plain transformer instead of the pre-trained audio encoder (spec section 7, ablation only).

Parameter counts, measured on the meta device (tests/test_hola_model.py asserts them): full size
149,679,650 = 127,075,328 backbone (video 63,865,344 + audio 63,209,984) + 22,604,322 head (the
spec's estimate: ~127M + ~22M); of the head, ICMI 11,031,552, LGCF 6,829,056, refiner and its
LayerNorm 3,151,872, the two projections 1,590,816, the classifier 1,026. mfcc32's audio encoder:
12,625,408. The tiny twin: 174,506.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .backbone import Attention, EncoderConfig, LGEncoder, Mlp, sinusoid_table

LGCF_EMBEDS = ("none", "modality", "modality+sinusoid")
AUDIO_FRONTENDS = ("fbank128", "mfcc32")


@dataclass(frozen=True)
class HOLAConfig:
    """HOLA's sizes and switches. `HOLAConfig()` is the full size (spec sections 2 and 7, backbone
    `avit_dim512_patch16_160_a256`); `tiny()` the CPU twin. Values the paper does not give are the
    spec's defaults (section 6), marked `default`."""

    video: EncoderConfig = field(default_factory=EncoderConfig.video_base)
    audio: EncoderConfig = field(default_factory=EncoderConfig.audio_base)
    length: int = 16  # L, the common token length after projection (default: T = 16 frames)
    conv_kernel: int = 3  # projection Conv1d kernel (default)
    icmi_layers: int = 3  # paper: "stacking three times"
    icmi_heads: int = 8  # d_k = 64 at C = 512
    lgcf_depth: int = 2  # N (default; paper: "N layers")
    lgcf_heads: int = 8
    mlp_ratio: float = 4.0  # LGCF (and mfcc32 encoder) MLP width / C
    lgcf_embed: str = "none"  # none | modality | modality+sinusoid (default none: the paper adds none)
    head_dropout: float = 0.0  # before the classifier (default)
    use_icmi: bool = True
    use_lgcf: bool = True
    use_refiner: bool = True
    audio_frontend: str = "fbank128"  # fbank128: pre-trained audio encoder; mfcc32: paper-literal input
    mfcc_segments: int = 16  # mfcc32 input (B, segments, coeffs)
    mfcc_coeffs: int = 32
    mfcc_layers: int = 4  # mfcc32's fresh plain transformer
    mfcc_heads: int = 8

    @classmethod
    def tiny(cls, **changes) -> "HOLAConfig":
        """The spec's CPU twin (section 7): tiny encoders (width 32, 2 heads, MLP ratio 2, 2 blocks),
        L = 4 (refiner lengths 4, 2, 1), ICMI 3 layers of 2 heads, LGCF N = 1; mfcc32 1 layer, 2 heads."""
        sizes = dict(video=EncoderConfig.video_tiny(), audio=EncoderConfig.audio_tiny(), length=4, icmi_heads=2,
                     lgcf_depth=1, lgcf_heads=2, mlp_ratio=2.0, mfcc_layers=1, mfcc_heads=2)
        return cls(**{**sizes, **changes})

    @classmethod
    def from_dict(cls, d: dict) -> "HOLAConfig":
        """The inverse of `as_dict` (a run record's config back to a config)."""
        d = dict(d)
        for name in ("video", "audio"):
            if isinstance(d.get(name), dict):
                d[name] = EncoderConfig(**d[name])
        return cls(**d)

    def __post_init__(self):
        problems = []
        if self.video.modality != "video" or self.audio.modality != "audio":
            problems.append("video and audio must be a video and an audio EncoderConfig")
        if self.audio_frontend not in AUDIO_FRONTENDS:
            problems.append(f"audio_frontend must be one of {AUDIO_FRONTENDS}, got {self.audio_frontend!r}")
        elif self.audio_frontend == "fbank128" and self.audio.dim != self.video.dim:
            problems.append(f"the encoders must share one width C (video {self.video.dim}, audio {self.audio.dim})")
        if self.lgcf_embed not in LGCF_EMBEDS:
            problems.append(f"lgcf_embed must be one of {LGCF_EMBEDS}, got {self.lgcf_embed!r}")
        if self.length < 1:
            problems.append(f"length (L) must be >= 1, got {self.length}")
        if self.conv_kernel < 1 or self.conv_kernel % 2 == 0:
            problems.append(f"conv_kernel must be odd ('same' padding keeps L_m), got {self.conv_kernel}")
        if self.icmi_layers < 1 or self.lgcf_depth < 1 or self.mfcc_layers < 1:
            problems.append("icmi_layers, lgcf_depth and mfcc_layers must be >= 1 (switch a part off with use_*)")
        for name in ("icmi_heads", "lgcf_heads", "mfcc_heads"):
            if self.dim % getattr(self, name):
                problems.append(f"C = {self.dim} must divide by {name} ({getattr(self, name)})")
        if not 0.0 <= self.head_dropout < 1.0:
            problems.append(f"head_dropout must be in [0, 1), got {self.head_dropout}")
        if self.mfcc_segments < 1 or self.mfcc_coeffs < 1:
            problems.append("mfcc_segments and mfcc_coeffs must be >= 1")
        if problems:
            raise ValueError("invalid HOLAConfig: " + "; ".join(problems))

    @property
    def dim(self) -> int:
        """C, the width every stage after the encoders keeps."""
        return self.video.dim

    @property
    def baseline(self) -> bool:
        """All three parts off: the spec's baseline head."""
        return not (self.use_icmi or self.use_lgcf or self.use_refiner)

    @property
    def audio_tokens(self) -> int:
        """L_a: audio tokens the projection reads."""
        return self.mfcc_segments if self.audio_frontend == "mfcc32" else self.audio.num_tokens

    @property
    def audio_shape(self) -> tuple[int, ...]:
        """One sample's audio input: (1, time, freq) fbank or (segments, coeffs) MFCC."""
        return (self.mfcc_segments, self.mfcc_coeffs) if self.audio_frontend == "mfcc32" else self.audio.input_shape

    def as_dict(self) -> dict:
        d = asdict(self)
        d["video"], d["audio"] = self.video.as_dict(), self.audio.as_dict()
        return d


def init_head(module: nn.Module) -> None:
    """Fresh head layers as upstream fine-tuning initialises them: Linear weights N(0, 0.02) truncated
    at 2 std, zero biases; convolutions, BatchNorm and LayerNorm keep torch's defaults."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class TransformerLayer(nn.Module):
    """A pre-norm transformer layer: x + MHSA(LN(x)), then x + MLP(LN(x)) (GELU)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MFCCEncoder(nn.Module):
    """mfcc32's audio encoder (spec section 7): (B, segments, coeffs) -> Linear(coeffs -> C) plus a
    fixed sinusoid, `mfcc_layers` fresh pre-norm transformer layers, a final LayerNorm: (B, segments, C).
    Not pre-trained and not weight-compatible with the AVF-MAE++ audio encoder."""

    def __init__(self, cfg: HOLAConfig):
        super().__init__()
        self.input_shape = (cfg.mfcc_segments, cfg.mfcc_coeffs)
        self.grad_checkpointing = False
        self.patch_embed = nn.Linear(cfg.mfcc_coeffs, cfg.dim)
        self.blocks = nn.ModuleList(TransformerLayer(cfg.dim, cfg.mfcc_heads, cfg.mlp_ratio)
                                    for _ in range(cfg.mfcc_layers))
        self.norm = nn.LayerNorm(cfg.dim)
        self.register_buffer("pos_embed", torch.empty(0), persistent=False)
        self.reset_buffers()
        init_head(self)

    def reset_buffers(self) -> None:
        self.pos_embed = sinusoid_table(self.input_shape[0], self.norm.normalized_shape[0], self.norm.weight.device)

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"mfcc32 audio expects (B, {self.input_shape[0]}, {self.input_shape[1]}), "
                             f"got {tuple(x.shape)}")
        h = self.patch_embed(x)
        h = h + self.pos_embed.to(h.dtype)
        for block in self.blocks:
            h = checkpoint(block, h, use_reentrant=False) if self.grad_checkpointing and torch.is_grad_enabled() \
                else block(h)
        return self.norm(h)


class Projection(nn.Module):
    """Paper 3.2.2: (B, L_m, C) -> Conv1d(C, C, k, 'same') over the tokens -> BN1d -> GELU -> Linear(L_m -> L)
    along the token axis -> (B, L, C). Kernel, norm and activation are the spec's defaults."""

    def __init__(self, tokens: int, length: int, dim: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2)
        self.bn = nn.BatchNorm1d(dim)
        self.resize = nn.Linear(tokens, length)

    def forward(self, x: Tensor) -> Tensor:
        h = F.gelu(self.bn(self.conv(x.transpose(1, 2))))  # (B, C, L_m)
        return self.resize(h).transpose(1, 2)


class CrossInteraction(nn.Module):
    """One ICMI direction (paper eqs. 8-10): A = MHCA(F_c, F_o) with output projection W_O, no FFN;
    G = sigmoid(W2 ReLU(W1 [F_c ; A])) element-wise (W1: 2C -> C, W2: C -> C); F_u = (1 - G) F_c + G A;
    out = LayerNorm(F_c + F_u) (F_c enters twice, as written)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = Attention(dim, heads)
        self.gate_in = nn.Linear(2 * dim, dim)
        self.gate_out = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, current: Tensor, other: Tensor) -> Tensor:
        attended = self.attn(current, other)
        gate = torch.sigmoid(self.gate_out(F.relu(self.gate_in(torch.cat([current, attended], dim=-1)))))
        fused = (1 - gate) * current + gate * attended
        return self.norm(current + fused)


class ICMILayer(nn.Module):
    """Both directions from the layer's input at once (simultaneous update), separate weights."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.video = CrossInteraction(dim, heads)  # video queries audio
        self.audio = CrossInteraction(dim, heads)  # audio queries video

    def forward(self, video: Tensor, audio: Tensor) -> tuple[Tensor, Tensor]:
        return self.video(video, audio), self.audio(audio, video)


class LGCF(nn.Module):
    """Paper eq. 11: [CLS] + concat(F̂_v, F̂_a) through N pre-norm layers (no final norm: the refiner's
    BatchNorm or the pooled head's LayerNorm follows); F_g = out[:, 0], F_l = out[:, 1:];
    F_f = F_l * sigmoid(Linear_{2C->C}([F_l ; F_g])). The CLS reaches later stages only through the
    gate. `lgcf_embed` optionally adds a learned modality embedding, and the fixed sinusoid of each
    token's time step (the same for the two modalities, which are time-aligned), before the CLS."""

    def __init__(self, cfg: HOLAConfig):
        super().__init__()
        dim = cfg.dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.modality_embed = nn.Parameter(torch.zeros(2, dim)) if cfg.lgcf_embed != "none" else None
        self.register_buffer("pos_embed", sinusoid_table(cfg.length, dim) if cfg.lgcf_embed == "modality+sinusoid"
                             else None, persistent=False)
        self.layers = nn.ModuleList(TransformerLayer(dim, cfg.lgcf_heads, cfg.mlp_ratio) for _ in range(cfg.lgcf_depth))
        self.gate = nn.Linear(2 * dim, dim)
        init_head(self)
        nn.init.trunc_normal_(self.cls_token, std=0.02, a=-0.04, b=0.04)
        if self.modality_embed is not None:
            nn.init.trunc_normal_(self.modality_embed, std=0.02, a=-0.04, b=0.04)

    def forward(self, video: Tensor, audio: Tensor) -> Tensor:
        if self.modality_embed is not None:
            video, audio = video + self.modality_embed[0], audio + self.modality_embed[1]
        if self.pos_embed is not None:
            video, audio = video + self.pos_embed.to(video.dtype), audio + self.pos_embed.to(audio.dtype)
        tokens = torch.cat([video, audio], dim=1)
        h = torch.cat([self.cls_token.to(tokens.dtype).expand(tokens.shape[0], -1, -1), tokens], dim=1)
        for layer in self.layers:
            h = layer(h)
        local, cls = h[:, 1:], h[:, :1].expand(-1, tokens.shape[1], -1)
        return local * torch.sigmoid(self.gate(torch.cat([local, cls], dim=-1)))


class Refiner(nn.Module):
    """Paper eqs. 12-13: three scales of Conv1d(C, C, 3, stride 2, pad 1) + BN1d + ReLU, each consuming
    the previous scale un-pooled (eq. 13 literally feeds the pooled vector, which cannot be
    convolved); each scale averaged over time; concat (B, 3C) -> Linear(3C -> C) -> LayerNorm."""

    def __init__(self, dim: int):
        super().__init__()
        self.scales = nn.ModuleList(nn.Sequential(nn.Conv1d(dim, dim, 3, stride=2, padding=1), nn.BatchNorm1d(dim),
                                                  nn.ReLU()) for _ in range(3))
        self.fuse = nn.Linear(3 * dim, dim)
        self.norm = nn.LayerNorm(dim)
        init_head(self)

    def pyramid(self, x: Tensor) -> list[Tensor]:
        """(B, T, C) -> the three un-pooled scales (B, C, T/2), (B, C, T/4), (B, C, T/8) (ceil)."""
        s, out = x.transpose(1, 2), []
        for scale in self.scales:
            s = scale(s)
            out.append(s)
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.fuse(torch.cat([s.mean(-1) for s in self.pyramid(x)], dim=-1)))


class PooledHead(nn.Module):
    """Without the refiner (spec 2.6): mean over tokens, Linear(C -> C), LayerNorm."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        init_head(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x.mean(1)))


class Stages(NamedTuple):
    """Every stage's output, for tests and feature dumps (B = batch, L = cfg.length)."""

    video_tokens: Tensor  # (B, N_v, C) video encoder, last block after norm, raster order
    audio_tokens: Tensor  # (B, N_a, C) audio encoder (or mfcc32 encoder)
    video: Tensor  # (B, L, C) projected F_v
    audio: Tensor  # (B, L, C) projected F_a
    video_icmi: Tensor  # (B, L, C) F̂_v (= video without ICMI)
    audio_icmi: Tensor  # (B, L, C) F̂_a
    fused: Tensor  # (B, 2L, C) F_f (= concat(F̂_v, F̂_a) without LGCF)
    feature: Tensor  # (B, C) what the classifier reads (baseline: (B, 2C))
    logits: Tensor  # (B, 2)


def fake_probability(logits: Tensor) -> Tensor:
    """softmax(logits)[:, 1], the score (fake = 1)."""
    return logits.float().softmax(dim=-1)[:, 1]


class HOLA(nn.Module):
    """forward(video (B, 3, T, H, W), audio (B, 1, time, freq) fbank, or (B, 16, 32) under mfcc32)
    -> logits (B, 2); `stages` gives every intermediate, `features` the classifier's input. The
    encoders are `video_encoder` and `audio_encoder` (LGEncoders; audio_encoder is the MFCCEncoder
    under mfcc32). `layer_id(name)` numbers the parameters for layer-wise lr decay."""

    def __init__(self, cfg: HOLAConfig):
        super().__init__()
        self.cfg = cfg
        dim = cfg.dim
        self.video_encoder = LGEncoder(cfg.video)
        self.audio_encoder = MFCCEncoder(cfg) if cfg.audio_frontend == "mfcc32" else LGEncoder(cfg.audio)
        self.video_proj = Projection(cfg.video.num_tokens, cfg.length, dim, cfg.conv_kernel)
        self.audio_proj = Projection(cfg.audio_tokens, cfg.length, dim, cfg.conv_kernel)
        init_head(self.video_proj)
        init_head(self.audio_proj)
        self.icmi = nn.ModuleList(ICMILayer(dim, cfg.icmi_heads) for _ in range(cfg.icmi_layers)) if cfg.use_icmi \
            else None
        if self.icmi is not None:
            init_head(self.icmi)
        self.lgcf = LGCF(cfg) if cfg.use_lgcf else None
        self.refiner = self.pool = self.baseline_norm = None
        if cfg.baseline:
            self.baseline_norm = nn.LayerNorm(2 * dim)
        elif cfg.use_refiner:
            self.refiner = Refiner(dim)
        else:
            self.pool = PooledHead(dim)
        self.head_dropout = nn.Dropout(cfg.head_dropout)
        self.classifier = nn.Linear(2 * dim if cfg.baseline else dim, 2)
        init_head(self.classifier)

    # -- stages ----------------------------------------------------------------------------------

    def encode(self, video: Tensor, audio: Tensor) -> tuple[Tensor, Tensor]:
        """The two encoders' tokens: (B, N_v, C), (B, N_a, C)."""
        return self.video_encoder(video), self.audio_encoder(audio)

    def stages(self, video: Tensor, audio: Tensor) -> Stages:
        video_tokens, audio_tokens = self.encode(video, audio)
        fv, fa = self.video_proj(video_tokens), self.audio_proj(audio_tokens)
        hv, ha = fv, fa
        for layer in self.icmi or ():
            hv, ha = layer(hv, ha)
        if self.baseline_norm is not None:
            fused = torch.cat([hv, ha], dim=1)
            feature = self.baseline_norm(torch.cat([hv.mean(1), ha.mean(1)], dim=-1))
        else:
            fused = self.lgcf(hv, ha) if self.lgcf is not None else torch.cat([hv, ha], dim=1)
            feature = self.refiner(fused) if self.refiner is not None else self.pool(fused)
        logits = self.classifier(self.head_dropout(feature))
        return Stages(video_tokens, audio_tokens, fv, fa, hv, ha, fused, feature, logits)

    def features(self, video: Tensor, audio: Tensor) -> Tensor:
        """The vector the classifier reads: F_sf (B, C) (baseline: (B, 2C))."""
        return self.stages(video, audio).feature

    def forward(self, video: Tensor, audio: Tensor) -> Tensor:
        return self.stages(video, audio).logits

    def probability(self, video: Tensor, audio: Tensor) -> Tensor:
        """p_fake (B,)."""
        return fake_probability(self(video, audio))

    # -- layer-wise lr decay ---------------------------------------------------------------------

    @property
    def encoder_depth(self) -> int:
        """Blocks per pre-trained encoder (the deeper one if they differ)."""
        depths = [self.cfg.video.depth] + ([self.cfg.audio.depth] if self.cfg.audio_frontend == "fbank128" else [])
        return max(depths)

    @property
    def num_layers(self) -> int:
        """The heads' layer id, depth + 1: ids run 0 (embeddings), 1..depth (blocks), depth + 1 (the rest),
        and layer-wise decay scales are decay ** (num_layers - layer_id), the heads at 1 (upstream's
        `decay ** (depth + 1 - layer_id)`)."""
        return self.encoder_depth + 1

    def layer_id(self, name: str) -> int:
        """0 for the pre-trained encoders' patch embeddings, messenger tokens and position tables,
        i + 1 for their block i (both encoders share the numbering), depth + 1 for everything else:
        the encoders' final norms (as upstream's optimiser factory), every head module, and the whole
        mfcc32 audio encoder, which is fresh and trains at the heads' rate."""
        top = self.num_layers
        for prefix, encoder in (("video_encoder.", self.video_encoder), ("audio_encoder.", self.audio_encoder)):
            if not name.startswith(prefix) or not isinstance(encoder, LGEncoder):
                continue
            rest = name[len(prefix):]
            if rest.startswith(("patch_embed.", "lg_region_tokens", "pos_embed")):
                return 0
            if rest.startswith("blocks."):
                return int(rest.split(".")[1]) + 1
            return top
        return top
