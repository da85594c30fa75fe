"""AV-HuBERT (Shi et al., 2022) in plain PyTorch: the authors' `AVHubertModel` without fairseq.

Module and parameter names follow the authors' code, so `state_dict()` has exactly the keys of their
checkpoints (shared/specs/AVHUBERT.md); only `extract_finetune` is reproduced (no masking, no
pre-training loss). Tensors are kept time-major ([B, T, D]) inside; the authors' [B, D, T] layout of
the front-end outputs changes no value.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: LayerNorm and BatchNorm epsilon everywhere in the authors' model (the PyTorch default).
EPS = 1e-5


@dataclass(frozen=True)
class AVHubertConfig:
    """Every size the checkpoint tensors determine; `None` marks a pre-training-only tensor as absent.

    `mask_emb_dim` is the size of `mask_emb` (104 for input masking, dim for feature masking),
    `label_rows` x `label_dim` the shape of `label_embs_concat`, `final_dim` the output size of
    `final_proj`. None of them is read by `extract`; they exist so that checkpoints load strictly.
    """

    dim: int
    layers: int
    heads: int
    ffn: int
    audio_feat_dim: int = 104
    conv_pos: int = 128
    conv_pos_groups: int = 16
    resnet_widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    mask_emb_dim: int | None = None
    label_rows: int | None = None
    label_dim: int | None = None
    final_dim: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "resnet_widths", tuple(self.resnet_widths))
        if len(self.resnet_widths) != 4:
            raise ValueError(f"resnet_widths needs 4 entries (ResNet-18 stages), got {self.resnet_widths}")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.dim % self.conv_pos_groups:
            raise ValueError(f"dim {self.dim} is not divisible by conv_pos_groups {self.conv_pos_groups}")
        if (self.label_rows is None) != (self.label_dim is None):
            raise ValueError("label_rows and label_dim describe one tensor: give both or neither")

    @classmethod
    def base(cls) -> AVHubertConfig:
        """The released Base model with its pre-training heads (2004 label rows: a placeholder count)."""
        return cls(dim=768, layers=12, heads=12, ffn=3072, mask_emb_dim=104, label_rows=2004, label_dim=256,
                   final_dim=256)

    @classmethod
    def large(cls) -> AVHubertConfig:
        """The released Large model (the paper's `self_large_vox_433h` encoder has no final_proj)."""
        return cls(dim=1024, layers=24, heads=16, ffn=4096, mask_emb_dim=104, label_rows=2004, label_dim=256,
                   final_dim=256)

    @classmethod
    def tiny(cls) -> AVHubertConfig:
        """A test-sized model with the same structure (a 2 s clip runs in milliseconds on a CPU)."""
        return cls(dim=32, layers=2, heads=2, ffn=64, conv_pos=8, conv_pos_groups=4, resnet_widths=(8, 8, 16, 16),
                   mask_emb_dim=104, label_rows=12, label_dim=8, final_dim=8)


class AudioFrontEnd(nn.Module):
    """Stacked filterbanks [B, F, T] -> [B, T, D]: one linear layer per frame."""

    def __init__(self, feat_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(feat_dim, dim)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.proj(audio.transpose(1, 2))


class BasicBlock(nn.Module):
    """ResNet-18 block with per-channel PReLU; attribute order is the authors' (it orders the state dict)."""

    def __init__(self, inplanes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, eps=EPS)
        self.relu1 = nn.PReLU(planes)
        self.relu2 = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=EPS)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes, eps=EPS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu2(out + residual)


class ResNetTrunk(nn.Module):
    """Four stages of two BasicBlocks (strides 1, 2, 2, 2), then a global average pool."""

    def __init__(self, widths: tuple[int, int, int, int]):
        super().__init__()
        inplanes = widths[0]
        for i, (planes, stride) in enumerate(zip(widths, (1, 2, 2, 2)), start=1):
            self.add_module(f"layer{i}", nn.Sequential(BasicBlock(inplanes, planes, stride),
                                                       BasicBlock(planes, planes, 1)))
            inplanes = planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
        return x.mean(dim=(2, 3))


class ResEncoder(nn.Module):
    """3-D convolutional stem over (time, height, width), then a 2-D ResNet-18 trunk on every frame."""

    def __init__(self, widths: tuple[int, int, int, int]):
        super().__init__()
        self.frontend3D = nn.Sequential(
            nn.Conv3d(1, widths[0], kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=(2, 3, 3), bias=False),
            nn.BatchNorm3d(widths[0], eps=EPS),
            nn.PReLU(widths[0]),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )
        self.trunk = ResNetTrunk(widths)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """[B, 1, T, H, W] -> [B, T, widths[-1]]."""
        x = self.frontend3D(video)
        b, c, t, h, w = x.shape
        x = self.trunk(x.transpose(1, 2).reshape(b * t, c, h, w))
        return x.view(b, t, -1)


class VideoFrontEnd(nn.Module):
    def __init__(self, widths: tuple[int, int, int, int], dim: int):
        super().__init__()
        self.resnet = ResEncoder(widths)
        self.proj = nn.Linear(widths[-1], dim)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.proj(self.resnet(video))


class WeightNormConv1d(nn.Module):
    """Grouped Conv1d with weight normalisation over dim 2, stored as fairseq stores it (bias, weight_g, weight_v).

    Effective weight = g * v / ||v||, the norm taken over dims 0 and 1 separately for every kernel tap.
    """

    def __init__(self, dim: int, kernel: int, groups: int):
        super().__init__()
        self.groups = groups
        self.bias = nn.Parameter(torch.empty(dim))
        self.weight_g = nn.Parameter(torch.empty(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.empty(dim, dim // groups, kernel))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """fairseq's initialisation: v ~ N(0, sqrt(4 / (kernel * dim))), g = ||v|| per tap, bias 0."""
        dim, _, kernel = self.weight_v.shape
        # drawn on the CPU: device-independent with a CPU generator, and cheap under torch.device("meta")
        v = torch.randn(self.weight_v.shape, generator=generator, device="cpu") * (4 / (kernel * dim)) ** 0.5
        self.weight_v.copy_(v)
        self.weight_g.copy_(torch.linalg.vector_norm(v, dim=(0, 1), keepdim=True))
        self.bias.zero_()

    def effective_weight(self) -> torch.Tensor:
        return self.weight_v * (self.weight_g / torch.linalg.vector_norm(self.weight_v, dim=(0, 1), keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = self.weight_v.shape[-1]
        return F.conv1d(x, self.effective_weight(), self.bias, padding=kernel // 2, groups=self.groups)


class SamePad(nn.Module):
    """An even kernel with padding k // 2 yields T + 1 frames: drop the last one."""

    def __init__(self, kernel: int):
        super().__init__()
        self.remove = 1 if kernel % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : x.shape[-1] - self.remove]


class SelfAttention(nn.Module):
    """fairseq MultiheadAttention as the encoder uses it: self-attention with a key padding mask, no dropout."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        b, t, d = x.shape

        def split(h: torch.Tensor) -> torch.Tensor:
            return h.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        y = F.scaled_dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)),
                                           attn_mask=attn_mask)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))


class EncoderLayer(nn.Module):
    """Pre-norm Transformer block (`layer_norm_first=True`)."""

    def __init__(self, dim: int, heads: int, ffn: int):
        super().__init__()
        self.self_attn = SelfAttention(dim, heads)
        self.self_attn_layer_norm = nn.LayerNorm(dim, eps=EPS)
        self.fc1 = nn.Linear(dim, ffn)
        self.fc2 = nn.Linear(ffn, dim)
        self.final_layer_norm = nn.LayerNorm(dim, eps=EPS)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x), attn_mask)
        # fairseq's "gelu" is the exact (erf) GELU evaluated in float32
        hidden = F.gelu(self.fc1(self.final_layer_norm(x)).float()).type_as(x)
        return x + self.fc2(hidden)


class Encoder(nn.Module):
    """fairseq's wav2vec 2.0 TransformerEncoder with `layer_norm_first=True`."""

    def __init__(self, config: AVHubertConfig):
        super().__init__()
        self.pos_conv = nn.Sequential(WeightNormConv1d(config.dim, config.conv_pos, config.conv_pos_groups),
                                      SamePad(config.conv_pos), nn.GELU())
        self.layers = nn.ModuleList(EncoderLayer(config.dim, config.heads, config.ffn) for _ in range(config.layers))
        self.layer_norm = nn.LayerNorm(config.dim, eps=EPS)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None,
                output_layer: int | None = None) -> torch.Tensor:
        """x [B, T, D]; padding_mask [B, T], True = padded; output_layer k (1-based) stops after block k
        and skips the final LayerNorm, which is applied only to the full stack."""
        attn_mask = None
        if padding_mask is not None:
            x = x.masked_fill(padding_mask[..., None], 0.0)
            attn_mask = ~padding_mask[:, None, None, :]   # SDPA: True = may attend
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        for layer in self.layers[:output_layer]:
            x = layer(x, attn_mask)
        return self.layer_norm(x) if output_layer is None else x


class AVHubert(nn.Module):
    """The authors' AVHubertModel restricted to feature extraction (`extract_finetune`).

    Attribute names and registration order reproduce the authors' state dict keys and order.
    """

    def __init__(self, config: AVHubertConfig):
        super().__init__()
        self.config = config
        if config.mask_emb_dim is not None:
            self.mask_emb = nn.Parameter(torch.zeros(config.mask_emb_dim))
        if config.label_rows is not None:
            self.label_embs_concat = nn.Parameter(torch.zeros(config.label_rows, config.label_dim))
        self.feature_extractor_audio = AudioFrontEnd(config.audio_feat_dim, config.dim)
        self.feature_extractor_video = VideoFrontEnd(config.resnet_widths, config.dim)
        self.post_extract_proj = nn.Linear(2 * config.dim, config.dim)
        self.encoder = Encoder(config)
        self.layer_norm = nn.LayerNorm(2 * config.dim, eps=EPS)
        if config.final_dim is not None:
            self.final_proj = nn.Linear(config.dim, config.final_dim)

    def forward(self, audio: torch.Tensor | None = None, video: torch.Tensor | None = None,
                padding_mask: torch.Tensor | None = None, output_layer: int | None = None) -> torch.Tensor:
        """audio [B, audio_feat_dim, T], video [B, 1, T, H, W] (88 x 88), either one None -> [B, T, D].

        A missing modality is zeros after its front-end (not a zero input), as in the authors' code;
        those zeros still enter the fusion LayerNorm. padding_mask is True at padded frames.
        """
        if audio is None and video is None:
            raise ValueError("AV-HuBERT needs audio, video or both; got neither")
        if output_layer is not None and not 1 <= output_layer <= self.config.layers:
            raise ValueError(f"output_layer must be in 1..{self.config.layers} (1-based), got {output_layer}")
        if audio is not None and (audio.dim() != 3 or audio.shape[1] != self.config.audio_feat_dim):
            raise ValueError(f"audio must be [B, {self.config.audio_feat_dim}, T], got {list(audio.shape)}")
        if video is not None and (video.dim() != 5 or video.shape[1] != 1):
            raise ValueError(f"video must be [B, 1, T, H, W], got {list(video.shape)}")
        feats_audio = self.feature_extractor_audio(audio) if audio is not None else None
        feats_video = self.feature_extractor_video(video) if video is not None else None
        if feats_audio is None:
            feats_audio = torch.zeros_like(feats_video)
        if feats_video is None:
            feats_video = torch.zeros_like(feats_audio)
        if feats_audio.shape[:2] != feats_video.shape[:2]:
            raise ValueError(f"audio and video must have the same batch and frame count: audio "
                             f"{list(audio.shape)}, video {list(video.shape)}")
        x = self.layer_norm(torch.cat([feats_audio, feats_video], dim=-1))
        if padding_mask is not None:
            padding_mask = frame_padding_mask(padding_mask.to(device=x.device, dtype=torch.bool), x.shape[1])
        return self.encoder(self.post_extract_proj(x), padding_mask, output_layer)

    @torch.no_grad()
    def extract(self, audio: torch.Tensor | None = None, video: torch.Tensor | None = None,
                padding_mask: torch.Tensor | None = None, output_layer: int | None = None) -> torch.Tensor:
        """`forward` without autograd: the authors' `extract_finetune(...)[0]`, [B, T, D]."""
        return self.forward(audio, video, padding_mask, output_layer)


def frame_padding_mask(padding_mask: torch.Tensor, frames: int) -> torch.Tensor:
    """Reduce a [B, N] padding mask to [B, frames] as the authors do: drop the N % frames trailing
    entries, group the rest into `frames` runs, and mark a frame padded when its whole run is."""
    b, n = padding_mask.shape
    if n < frames:
        raise ValueError(f"padding_mask has {n} entries per clip, fewer than the {frames} frames")
    return padding_mask[:, : n - n % frames].reshape(b, frames, -1).all(-1)


@torch.no_grad()
def reinitialise(model: AVHubert, seed: int) -> AVHubert:
    """Give `model` fresh random weights in place: the paper's random-initialisation control (Supp. D).

    As the paper states: BatchNorm and LayerNorm weight 1, bias 0 (BatchNorm running statistics reset
    too); every Linear weight N(0, 0.02), bias 0. Where the paper is silent, as the authors' code
    initialises a new model: the ResNet trunk's 2-D convolutions N(0, sqrt(2 / (k * k * out_channels)));
    the 3-D stem convolution PyTorch's default, U(+-1 / sqrt(fan_in)); the positional convolution
    v ~ N(0, sqrt(4 / (kernel * dim))), g = ||v||, bias 0; PReLU slopes 0.25; `mask_emb` and
    `label_embs_concat` U(0, 1). Draws come from a CPU generator seeded with `seed`, in module order,
    so the result does not depend on the device.
    """
    gen = torch.Generator().manual_seed(seed)

    def fill(param: torch.Tensor, values: torch.Tensor) -> None:
        param.copy_(values.to(device=param.device, dtype=param.dtype))

    for module in model.modules():
        if isinstance(module, nn.Linear):
            fill(module.weight, torch.randn(module.weight.shape, generator=gen) * 0.02)
            module.bias.zero_()
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d, nn.BatchNorm3d)):
            module.reset_parameters()
        elif isinstance(module, nn.PReLU):
            module.weight.fill_(0.25)
        elif isinstance(module, nn.Conv2d):
            k_h, k_w = module.kernel_size
            std = (2 / (k_h * k_w * module.out_channels)) ** 0.5
            fill(module.weight, torch.randn(module.weight.shape, generator=gen) * std)
        elif isinstance(module, nn.Conv3d):
            bound = module.weight[0].numel() ** -0.5
            fill(module.weight, (torch.rand(module.weight.shape, generator=gen) * 2 - 1) * bound)
        elif isinstance(module, WeightNormConv1d):
            module.reset_parameters(gen)
    for name in ("mask_emb", "label_embs_concat"):
        if hasattr(model, name):
            fill(getattr(model, name), torch.rand(getattr(model, name).shape, generator=gen))
    return model
