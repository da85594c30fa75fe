"""FauForensics' network (seed paper 002, Sec. III; the authors' utils/models), in plain torch.

One window = `frames` face crops and the matching log-Mel frames (`audio_frames` = 4 per video
frame). Three encoders give per-frame tokens of width `dim`:
- FAU: a ResNet-50 trunk (torchvision's key names, ME-GraphAU's backbone; frozen) on every frame,
  its spatial tokens through ME-GraphAU's `global_linear` (Linear, BatchNorm1d, ReLU), averaged;
- video: ir-CSN-101 (pytorchvideo's key names, temporal strides 1) on the clip, spatially
  averaged, a bias-free Linear; the two visual streams, each LayerNorm'd, are summed;
- audio: Whisper's encoder (openai-whisper's key names) on the log-Mel, its 2 tokens per frame
  averaged in pairs.
Implicit Feature Alignment (IFA): one learned query matrix shared by both modalities, one
multi-query cross-attention per modality (pre-norms, no residual, no FFN), a post-norm. Temporal
Attentional Pooler (TAP): frame-by-frame cosine similarity maps (visual x audio, audio x audio,
visual x visual), each column L2-normalised, flattened; three bias-free heads on them.

The LayerNorms outside Whisper have a learnable gain and a fixed zero bias (a buffer `beta`), as
the authors' code. The learnable `logit_scale*` are cancelled by the column normalisation (kept
as checkpoint keys; they have no effect). `FauForensicsConfig()` is the paper's size, whose state
dict is ../shared/specs/fauforensics_state_dict.tsv key for key; `FauForensicsConfig.tiny()` the
CPU twin.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class FauForensicsConfig:
    frames: int = 25  # video frames per window (25 fps, 1 s)
    image_size: int = 112
    dim: int = 512
    classes: int = 2  # 2: real/fake; 4: RARV, RAFV, FARV, FAFV (= 2 * audio fake + video fake)
    # FAU encoder: torchvision ResNet (Bottleneck) with this stem width and depths
    fau_width: int = 64
    fau_depths: tuple[int, ...] = (3, 4, 6, 3)
    # video encoder: ir-CSN, stem width, depths, (in, inner, out) width of each stage
    csn_stem: int = 64
    csn_depths: tuple[int, ...] = (3, 4, 23, 3)
    csn_widths: tuple[tuple[int, int, int], ...] = ((64, 64, 256), (256, 128, 512), (512, 256, 1024),
                                                    (1024, 512, 2048))
    # audio encoder: Whisper's
    n_mels: int = 80
    audio_heads: int = 8
    audio_layers: int = 6
    # IFA: query heads of this width, one shared key and value of the same width
    ifa_heads: int = 8
    ifa_head_dim: int = 64

    @property
    def audio_frames(self) -> int:
        """Log-Mel frames per window (10 ms hop): 4 per video frame."""
        return 4 * self.frames

    @property
    def audio_ctx(self) -> int:
        """Whisper tokens per window (its second conv halves the mel frames)."""
        return 2 * self.frames

    @property
    def fau_channels(self) -> int:
        return self.fau_width * 8 * 4

    @classmethod
    def tiny(cls, classes: int = 2) -> "FauForensicsConfig":
        """The spec's CPU twin: 8 frames of 64 px, width 64, one block per stage (~0.35M parameters)."""
        return cls(frames=8, image_size=64, dim=64, classes=classes, fau_width=8, fau_depths=(1, 1, 1, 1),
                   csn_stem=8, csn_depths=(1, 1, 1, 1), csn_widths=((8, 8, 32), (32, 16, 64), (64, 32, 128),
                                                                    (128, 64, 256)),
                   n_mels=16, audio_heads=2, audio_layers=1, ifa_heads=2, ifa_head_dim=32)

    def as_dict(self) -> dict:
        return asdict(self)


class LayerNorm(nn.Module):
    """LayerNorm with a learnable gain and a fixed zero bias (`beta`, a buffer), eps 1e-5."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.register_buffer("beta", torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, x.shape[-1:], self.gamma, self.beta)


# -- FAU encoder: ResNet trunk (torchvision names) + ME-GraphAU's global_linear ---------------------------

class Bottleneck(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes * 4))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNetTrunk(nn.Module):
    """torchvision's ResNet without avgpool and fc: (N, 3, S, S) -> (N, 32 * width, S/32, S/32)."""

    def __init__(self, width: int, depths: tuple[int, ...]):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        inplanes = width
        for i, depth in enumerate(depths):
            planes = width * 2**i
            blocks = []
            for j in range(depth):
                blocks.append(Bottleneck(inplanes, planes, 2 if i > 0 and j == 0 else 1))
                inplanes = planes * 4
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.n_layers = len(depths)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        for i in range(self.n_layers):
            x = getattr(self, f"layer{i + 1}")(x)
        return x


class LinearBlock(nn.Module):
    """ME-GraphAU's LinearBlock: Linear, BatchNorm1d over the features, ReLU, on (N, tokens, C)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)
        self.bn = nn.BatchNorm1d(out_features)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.fc(x).transpose(1, 2)).transpose(1, 2))


class FAUEncoder(nn.Module):
    """Facial-action-unit features of each frame: (N, 3, S, S) -> (N, dim), the mean of its tokens."""

    def __init__(self, cfg: FauForensicsConfig):
        super().__init__()
        self.backbone = ResNetTrunk(cfg.fau_width, cfg.fau_depths)
        self.global_linear = LinearBlock(cfg.fau_channels, cfg.dim)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.backbone(x).flatten(2).transpose(1, 2)  # (N, h*w, C)
        return self.global_linear(tokens).mean(dim=1)


# -- video encoder: ir-CSN (pytorchvideo names), temporal strides 1 ---------------------------------------

class CSNBottleneck(nn.Module):
    """conv_a 1x1x1, depthwise conv_b 3x3x3 (the spatial stride), conv_c 1x1x1; BatchNorm3d after each."""

    def __init__(self, dim_in: int, inner: int, dim_out: int, stride: int):
        super().__init__()
        self.conv_a = nn.Conv3d(dim_in, inner, 1, bias=False)
        self.norm_a = nn.BatchNorm3d(inner)
        self.conv_b = nn.Conv3d(inner, inner, 3, (1, stride, stride), 1, groups=inner, bias=False)
        self.norm_b = nn.BatchNorm3d(inner)
        self.conv_c = nn.Conv3d(inner, dim_out, 1, bias=False)
        self.norm_c = nn.BatchNorm3d(dim_out)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.norm_a(self.conv_a(x)))
        x = F.relu(self.norm_b(self.conv_b(x)))
        return self.norm_c(self.conv_c(x))


class CSNBlock(nn.Module):
    def __init__(self, dim_in: int, inner: int, dim_out: int, stride: int):
        super().__init__()
        if dim_in != dim_out or stride != 1:
            self.branch1_conv = nn.Conv3d(dim_in, dim_out, 1, (1, stride, stride), bias=False)
            self.branch1_norm = nn.BatchNorm3d(dim_out)
        else:
            self.branch1_conv = None
        self.branch2 = CSNBottleneck(dim_in, inner, dim_out, stride)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.branch1_conv is None else self.branch1_norm(self.branch1_conv(x))
        return F.relu(shortcut + self.branch2(x))


class CSNStage(nn.Module):
    def __init__(self, depth: int, widths: tuple[int, int, int], stride: int):
        super().__init__()
        dim_in, inner, dim_out = widths
        self.res_blocks = nn.ModuleList(CSNBlock(dim_in if j == 0 else dim_out, inner, dim_out, stride if j == 0 else 1)
                                        for j in range(depth))

    def forward(self, x: Tensor) -> Tensor:
        for block in self.res_blocks:
            x = block(x)
        return x


class CSNStem(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv = nn.Conv3d(3, width, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False)
        self.norm = nn.BatchNorm3d(width)

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool3d(F.relu(self.norm(self.conv(x))), (1, 3, 3), (1, 2, 2), (0, 1, 1))


class CSN(nn.Module):
    """(B, 3, T, S, S) -> (B, C_out, T, S/32, S/32): stem, then stages with spatial strides 1, 2, 2, 2."""

    def __init__(self, cfg: FauForensicsConfig):
        super().__init__()
        stages = [CSNStage(depth, widths, 1 if i == 0 else 2)
                  for i, (depth, widths) in enumerate(zip(cfg.csn_depths, cfg.csn_widths))]
        self.blocks = nn.ModuleList([CSNStem(cfg.csn_stem), *stages])

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


# -- audio encoder: Whisper's (openai-whisper names) ---------------------------------------------------------

class FP32LayerNorm(nn.LayerNorm):
    """Whisper's LayerNorm: computed in float32 whatever the input's dtype."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float()).type(x.dtype)


class WhisperAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = (t.view(b, n, self.heads, d // self.heads).transpose(1, 2)
                   for t in (self.query(x), self.key(x), self.value(x)))
        return self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))


class WhisperBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = WhisperAttention(dim, heads)
        self.attn_ln = FP32LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.mlp_ln = FP32LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> Tensor:
    """Whisper's positional embedding: sines then cosines of geometrically spaced timescales."""
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-increment * torch.arange(channels // 2))
    scaled = torch.arange(length)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


class WhisperEncoder(nn.Module):
    """(B, n_mels, frames) log-Mel -> (B, frames / 2, dim)."""

    def __init__(self, cfg: FauForensicsConfig):
        super().__init__()
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.dim, 3, padding=1)
        self.conv2 = nn.Conv1d(cfg.dim, cfg.dim, 3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(cfg.audio_ctx, cfg.dim))
        self.blocks = nn.ModuleList(WhisperBlock(cfg.dim, cfg.audio_heads) for _ in range(cfg.audio_layers))
        self.ln_post = FP32LayerNorm(cfg.dim)

    def forward(self, mel: Tensor) -> Tensor:
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)
        x = x + self.positional_embedding.to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.ln_post(x)


class AudioEncoder(nn.Module):
    """The authors' wrapper (key prefix `AEncoder.encoder.`)."""

    def __init__(self, cfg: FauForensicsConfig):
        super().__init__()
        self.encoder = WhisperEncoder(cfg)

    def forward(self, mel: Tensor) -> Tensor:
        tokens = self.encoder(mel)  # (B, 2T, D): 20 ms each
        return tokens.view(tokens.shape[0], -1, 2, tokens.shape[-1]).mean(dim=2)  # pairs: (B, T, D)


# -- IFA and TAP ---------------------------------------------------------------------------------------

class QuerySharedAttention(nn.Module):
    """One modality's IFA: the shared queries attend to its frames (multi-query: one key and one value
    shared by all heads), pre-norms on both sides, no residual."""

    def __init__(self, cfg: FauForensicsConfig):
        super().__init__()
        self.heads, self.head_dim = cfg.ifa_heads, cfg.ifa_head_dim
        self.norm = LayerNorm(cfg.dim)
        self.context_norm = LayerNorm(cfg.dim)
        self.to_q = nn.Linear(cfg.dim, cfg.ifa_heads * cfg.ifa_head_dim, bias=False)
        self.to_kv = nn.Linear(cfg.dim, 2 * cfg.ifa_head_dim, bias=False)
        self.to_out = nn.Linear(cfg.ifa_heads * cfg.ifa_head_dim, cfg.dim, bias=False)

    def forward(self, queries: Tensor, context: Tensor) -> Tensor:
        b = context.shape[0]
        x = self.norm(queries).expand(b, -1, -1)
        q = self.to_q(x).view(b, -1, self.heads, self.head_dim).transpose(1, 2) * self.head_dim**-0.5
        k, v = self.to_kv(self.context_norm(context)).chunk(2, dim=-1)  # (B, T, head_dim) each
        attention = (q @ k[:, None].transpose(-1, -2)).softmax(dim=-1)  # (B, heads, Q, T)
        return self.to_out((attention @ v[:, None]).transpose(1, 2).flatten(2))


def similarity_map(rows: Tensor, columns: Tensor, logit_scale: Tensor) -> Tensor:
    """TAP: exp(scale) * cosine similarity of every (row frame, column frame) pair, each column
    L2-normalised over the rows, flattened row-major: (B, T, D) x (B, T, D) -> (B, T * T)."""
    s = logit_scale.exp() * F.normalize(rows, dim=-1) @ F.normalize(columns, dim=-1).transpose(1, 2)
    return F.normalize(s, p=2, dim=1).flatten(1)


class Logits(NamedTuple):
    joint: Tensor  # (B, classes): the audio-visual head, the detector's output
    audio: Tensor  # (B, 2)
    visual: Tensor  # (B, 2)


class FauForensics(nn.Module):
    """forward(video (B, 3, T, S, S) normalised, mel (B, audio_frames, n_mels)) -> Logits.
    Attribute names are the authors' (state-dict keys)."""

    def __init__(self, cfg: FauForensicsConfig):
        super().__init__()
        self.cfg = cfg
        d, t = cfg.dim, cfg.frames
        self.queries = nn.Parameter(torch.randn(t, d))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.logit_scale_v = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.logit_scale_a = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.FAUEncoder_cnn = FAUEncoder(cfg)
        self.au_pool_norm = LayerNorm(d)
        self.AEncoder = AudioEncoder(cfg)
        self.VEncoder_cnn = CSN(cfg)
        self.v_pool = nn.Linear(cfg.csn_widths[-1][2], d, bias=False)
        self.v_pool_norm = LayerNorm(d)
        self.aud_attn_pool = QuerySharedAttention(cfg)
        self.aud_attn_pool_norm = LayerNorm(d)
        self.v_attn_pool = QuerySharedAttention(cfg)
        self.v_attn_pool_norm = LayerNorm(d)
        self.mlp_joint = nn.Linear(t * t, cfg.classes, bias=False)
        self.mlp_v = nn.Linear(t * t, 2, bias=False)
        self.mlp_a = nn.Linear(t * t, 2, bias=False)
        for p in self.FAUEncoder_cnn.parameters():  # frozen
            p.requires_grad_(False)
        #: The FAU encoder's BatchNorms: "train" follows the model's mode (batch statistics, running
        #: statistics updated while training, as the authors' code); "frozen" keeps them in eval mode.
        self.fau_bn = "train"

    def train(self, mode: bool = True) -> "FauForensics":
        super().train(mode)
        if self.fau_bn == "frozen":
            self.FAUEncoder_cnn.eval()
        return self

    def visual_tokens(self, video: Tensor) -> Tensor:
        b, _, t = video.shape[:3]
        frames = video.transpose(1, 2).flatten(0, 1)  # (B*T, 3, S, S)
        au = self.au_pool_norm(self.FAUEncoder_cnn(frames).view(b, t, -1))
        vid = self.v_pool_norm(self.v_pool(self.VEncoder_cnn(video).mean(dim=(3, 4)).transpose(1, 2)))
        return au + vid

    def visual_queries(self, video: Tensor) -> Tensor:
        return self.v_attn_pool_norm(self.v_attn_pool(self.queries, self.visual_tokens(video)))

    def visual_logits(self, video: Tensor) -> Tensor:
        """The visual head alone, which reads no audio (real/fake video): scores a clip without audio."""
        z_vq = self.visual_queries(video)
        return self.mlp_v(similarity_map(z_vq, z_vq, self.logit_scale_v))

    def forward(self, video: Tensor, mel: Tensor) -> Logits:
        z_a = self.AEncoder(mel.transpose(1, 2))
        z_aq = self.aud_attn_pool_norm(self.aud_attn_pool(self.queries, z_a))
        z_vq = self.visual_queries(video)
        m_av = similarity_map(z_vq, z_aq, self.logit_scale)
        m_a = similarity_map(z_aq, z_aq, self.logit_scale_a)
        m_v = similarity_map(z_vq, z_vq, self.logit_scale_v)
        return Logits(self.mlp_joint(m_av), self.mlp_a(m_a), self.mlp_v(m_v))


def loss(logits: Logits, label: Tensor, audio_label: Tensor, video_label: Tensor,
         weights: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> Tensor:
    """0.8 CE(joint, label) + 0.1 CE(audio head, audio fake) + 0.1 CE(visual head, video fake)
    (paper Eq. 10); `label` is binary or the four-class 2 * audio fake + video fake."""
    return (weights[0] * F.cross_entropy(logits.joint.float(), label)
            + weights[1] * F.cross_entropy(logits.audio.float(), audio_label)
            + weights[2] * F.cross_entropy(logits.visual.float(), video_label))
