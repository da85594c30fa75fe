"""CAD's network (seed paper 004, Du et al.; ../shared/specs/CAD.md sections 3, 4 and 8), in plain torch.

Two paths share only the inputs; each has its own instances of the two backbones, built from the
same weights (simpler than bypassing adapters and LoRA inside a shared instance):
- joint (cross-modal alignment): frozen CLIP per-frame embeddings and frozen Whisper encoder
  frames, each projected and LayerNorm'd, one cross-attention per direction with the residual on
  the query, pooled to s_v and s_a, which the KL alignment loss (Eq. 7) compares;
- specific: CLIP with a zero-initialised temporal embedding and a spatio-temporal adapter after
  every block (the StA design the paper cites), Whisper with LoRA on query and value; pooled and
  projected to x_v^u and x_a^u, which SimSiam predictors distil into each other (Eq. 8).
The head reads the four pooled vectors. Audio is always Whisper's 30 s window: `audio_padding`
(B, 1500), True on encoder frames past the clip's audio, masks every pool and attention over audio
(Whisper's own encoder has no mask and sees the zero padding).

`encode` runs the four encoders and `heads` everything after them, so a test can alter encoder
outputs directly. Zero-initialised adapter up-projections, temporal embedding and LoRA B make the
specific towers compute exactly what the frozen ones do at step 0.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Paper-size geometry for `random_init` (no weight files; the GPU benchmark): open_clip's ViT-B-16
#: image tower and whisper small's encoder.
VIT_B_16 = dict(embed_dim=512, vision_cfg=dict(layers=12, width=768, head_width=64, patch_size=16, image_size=224))
WHISPER_SMALL = dict(n_mels=80, n_ctx=1500, n_state=768, n_head=12, n_layer=12)
WEIGHTS_HINT = ("clip_weights: open_clip_model.safetensors of the hub repo timm/vit_base_patch16_clip_224.openai "
                "(open_clip's ViT-B-16 openai; the file, its folder or the hub id once cached); whisper_weights: "
                "openai-whisper's small.pt (the file, or 'small' once whisper.load_model put it in ~/.cache/whisper)")


@dataclass(frozen=True)
class CADConfig:
    """Sizes, backbones and the ablation switches of Tables 4-5. `CADConfig(clip_weights=...,
    whisper_weights=...)` is the paper's size (spec section 8); `tiny()` the CPU twin.

    Backbones: `tiny_backbones` builds the harness's tiny CLIP and Whisper (random, from `seed`);
    `random_init` the paper's sizes with random weights; otherwise the two weight files, loaded
    strictly by detectors/ssl/backbones.py.
    """

    clip_weights: str | None = None  # open_clip ViT-B-16 openai: open_clip_model.safetensors
    whisper_weights: str | None = None  # openai-whisper small.pt (or "small" in whisper's cache)
    tiny_backbones: bool = False
    random_init: bool = False
    seed: int = 0
    frames: int = 16
    d_align: int = 512
    align_heads: int = 8
    align_video_tokens: str = "cls"  # cls: projected CLS per frame; patch: every patch token of every frame
    sta_bottleneck: int = 384
    sta_heads: int = 2
    kernels_s: tuple[int, ...] = (3, 5, 7)
    kernels_t: tuple[int, ...] = (3, 5, 7)
    d_u: int = 768
    predictor_hidden: int = 192
    lora_r: int = 8
    lora_alpha: float = 16.0
    head_dropout: float = 0.5
    classes: int = 2
    ce_weight: float = 1.0
    kl_weight: float = 1.0
    kd_weight: float = 1.0
    # ablations (Tables 4-5); a switch removes the parameters only the part it turns off uses
    video_only: bool = False  # specific video channel and head only
    audio_only: bool = False  # specific audio channel and head only
    use_align_loss: bool = True  # "w/o alignment": no KL term (the joint path still feeds the head)
    use_cross_attention: bool = True  # off: KL on the pooled projections V', A'
    freeze_align: bool = True  # off ("w/o frozen model"): the joint path's CLIP and Whisper train too
    use_distill: bool = True  # off: no KD term and no predictors
    distill_loss: str = "simsiam"  # simsiam | kl (KL(softmax x_v^u || softmax x_a^u), no predictors)
    kd_direction: str = "symmetric"  # symmetric | audio_to_video (audio teaches video only)
    align_on: str = "all"  # all | real_only (KL over the real samples of a batch)

    @classmethod
    def tiny(cls, **changes) -> "CADConfig":
        """The spec's twin (section 8): harness tiny CLIP (width 128, 7x7 patches) and Whisper (width 32),
        every CAD size shrunk; `changes` override fields (tests use frames=4)."""
        sizes = dict(tiny_backbones=True, d_align=32, align_heads=2, sta_bottleneck=64, d_u=32, predictor_hidden=8,
                     lora_r=2, lora_alpha=4.0)
        return cls(**{**sizes, **changes})

    def __post_init__(self):
        object.__setattr__(self, "kernels_s", tuple(self.kernels_s))
        object.__setattr__(self, "kernels_t", tuple(self.kernels_t))
        choices = dict(align_video_tokens=("cls", "patch"), distill_loss=("simsiam", "kl"),
                       kd_direction=("symmetric", "audio_to_video"), align_on=("all", "real_only"))
        problems = [f"{name} must be one of {allowed}, got {getattr(self, name)!r}"
                    for name, allowed in choices.items() if getattr(self, name) not in allowed]
        files = self.clip_weights is not None or self.whisper_weights is not None
        if self.tiny_backbones + self.random_init + files != 1 or files and (
                self.clip_weights is None and not self.audio_only or self.whisper_weights is None and not self.video_only):
            problems.append(f"choose one backbone source: tiny_backbones, random_init, or both weight files "
                            f"({WEIGHTS_HINT})")
        if self.video_only and self.audio_only:
            problems.append("video_only and audio_only exclude each other")
        if self.d_align % self.align_heads or self.sta_bottleneck % self.sta_heads:
            problems.append("d_align and sta_bottleneck must divide by their heads")
        if any(k % 2 == 0 for k in self.kernels_s + self.kernels_t):
            problems.append("adapter kernels must be odd ('same' padding)")
        if self.kd_direction != "symmetric" and self.distill_loss != "simsiam":
            problems.append("kd_direction applies to the SimSiam loss only")
        if problems:
            raise ValueError("invalid CADConfig: " + "; ".join(problems))

    @property
    def joint(self) -> bool:
        """Both modalities: the joint path, both specific channels and distillation between them."""
        return not (self.video_only or self.audio_only)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["kernels_s"], d["kernels_t"] = list(self.kernels_s), list(self.kernels_t)
        return d


# -- backbones --------------------------------------------------------------------------------------

def _wrappers(cfg: CADConfig) -> dict:
    """The harness wrappers of the backbones the config uses ({"clip": CLIP, "whisper": Whisper}),
    their weight names resolved to local files on construction."""
    from avbench.detectors.ssl.backbones import CLIP, Whisper

    wanted = {"clip": (CLIP, cfg.clip_weights, not cfg.audio_only), "whisper": (Whisper, cfg.whisper_weights,
                                                                                not cfg.video_only)}
    try:
        return {name: wrapper(weights, tiny=cfg.tiny_backbones, seed=cfg.seed)
                for name, (wrapper, weights, used) in wanted.items() if used}
    except FileNotFoundError as exc:  # the wrappers' hints name other papers' variants
        raise FileNotFoundError(f"CAD: {exc}\nCAD needs {WEIGHTS_HINT}") from exc


def backbone_files(cfg: CADConfig) -> dict[str, str]:
    """The local weight file of each backbone the config reads ({} for tiny or random backbones); a
    missing one raises FileNotFoundError naming it and where to get it."""
    if cfg.tiny_backbones or cfg.random_init:
        return {}
    return {name: wrapper.weights for name, wrapper in _wrappers(cfg).items()}


def build_backbones(cfg: CADConfig) -> tuple[nn.Module | None, nn.Module | None]:
    """(open_clip image tower or None for audio_only, Whisper encoder or None for video_only), through
    the harness wrappers' `build()` (their weight lookup and strict loading; not their forward)."""
    if cfg.random_init:
        from open_clip.model import _build_vision_tower
        from whisper.model import AudioEncoder

        from avbench.detectors.ssl.backbones import seeded

        clip = None if cfg.audio_only else seeded(cfg.seed, lambda: _build_vision_tower(
            VIT_B_16["embed_dim"], VIT_B_16["vision_cfg"], quick_gelu=True))
        whisper = None if cfg.video_only else seeded(cfg.seed, lambda: AudioEncoder(**WHISPER_SMALL))
        return clip, whisper
    built = {name: wrapper.build() for name, wrapper in _wrappers(cfg).items()}
    return built.get("clip"), built.get("whisper")


def clip_tokens(tower: nn.Module, images: Tensor, temporal: Tensor | None = None) -> Tensor:
    """(N, 3, S, S) -> (N, 1 + P, width), the tokens open_clip's VisionTransformer feeds its blocks
    (CLS first, positional embedding, ln_pre); `temporal` (N, 1, width) is added to every token of
    its frame before ln_pre."""
    x = tower.conv1(images).flatten(2).transpose(1, 2)
    cls = tower.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + tower.positional_embedding.to(x.dtype)
    return tower.ln_pre(x if temporal is None else x + temporal)


def masked_mean(x: Tensor, padding: Tensor) -> Tensor:
    """(B, N, D) averaged over the positions where `padding` (B, N) is False; padded values, whatever
    they are, never enter (masked_fill rather than a product, so inf or nan there stays out too)."""
    valid = (~padding).sum(1, keepdim=True).clamp_min(1).to(x.dtype)
    return x.masked_fill(padding[..., None], 0).sum(1) / valid


# -- video-specific path: CLIP + spatio-temporal adapters ---------------------------------------------

def depthwise(channels: int, kernel: tuple[int, int, int]) -> nn.Sequential:
    """StA's "depthwise conv": three depthwise Conv3d ('same' padding, no bias as a BatchNorm follows),
    BatchNorm3d after each, ReLU after the first two."""
    layers: list[nn.Module] = []
    for i in range(3):
        layers += [nn.Conv3d(channels, channels, kernel, padding=tuple(k // 2 for k in kernel), groups=channels,
                             bias=False), nn.BatchNorm3d(channels)]
        if i < 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class STAdapter(nn.Module):
    """Spatio-temporal adapter after one ViT block, with its own residual: bottleneck, a spatial and a
    temporal stream of multi-kernel depthwise 3-D convs over the patch grid (CLS set aside), each
    stream attending to the other over all T*H*W tokens, and a zero-initialised up-projection, so a
    new adapter adds exactly nothing."""

    def __init__(self, width: int, cfg: CADConfig):
        super().__init__()
        c = cfg.sta_bottleneck
        self.down = nn.Linear(width, c)
        self.spatial = nn.ModuleList(depthwise(c, (1, k, k)) for k in cfg.kernels_s)
        self.temporal = nn.ModuleList(depthwise(c, (k, 1, 1)) for k in cfg.kernels_t)
        self.s2t = nn.MultiheadAttention(c, cfg.sta_heads, batch_first=True)
        self.t2s = nn.MultiheadAttention(c, cfg.sta_heads, batch_first=True)
        self.up = nn.Linear(c, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor, frames: int) -> Tensor:
        """x (B*T, 1 + P, width), frame-major within each sample -> the same shape."""
        h = F.gelu(self.down(x))
        cls, patches = h[:, :1], h[:, 1:]
        n, p, c = patches.shape
        side = math.isqrt(p)
        grid = patches.reshape(n // frames, frames, side, side, c).permute(0, 4, 1, 2, 3)  # (B, C, T, H, W)
        streams = [grid + sum(conv(grid) for conv in convs) / len(convs) for convs in (self.spatial, self.temporal)]
        spatial, temporal = (s.flatten(2).transpose(1, 2) for s in streams)  # (B, T*H*W, C)
        mixed = (self.s2t(temporal, spatial, spatial, need_weights=False)[0]
                 + self.t2s(spatial, temporal, temporal, need_weights=False)[0]) / 2
        h = torch.cat([cls, F.gelu(mixed).reshape(n, p, c)], dim=1)
        return x + F.gelu(self.up(h))


class VideoTower(nn.Module):
    """The video-specific encoder: a frozen CLIP tower (its own copy) whose ln_post trains, a temporal
    embedding (1, T, width) added to every token of frame t before ln_pre, and an adapter after every
    block. forward((B, T, 3, S, S)) -> each frame's CLS after ln_post, (B, T, width).

    The last adapter's streams and cross-attention change only patch tokens, which nothing reads
    after the last block: as the spec reads its CLS, those parameters never get a gradient (a
    property of the design, kept; the test states it)."""

    def __init__(self, clip: nn.Module, cfg: CADConfig):
        super().__init__()
        width = clip.transformer.width
        self.clip = clip.requires_grad_(False)
        self.clip.ln_post.requires_grad_(True)
        self.temporal_embedding = nn.Parameter(torch.zeros(1, cfg.frames, width))
        self.adapters = nn.ModuleList(STAdapter(width, cfg) for _ in self.clip.transformer.resblocks)

    def forward(self, frames: Tensor) -> Tensor:
        b, t = frames.shape[:2]
        temporal = self.temporal_embedding.expand(b, -1, -1).reshape(b * t, 1, -1)
        x = clip_tokens(self.clip, frames.flatten(0, 1), temporal)
        for block, adapter in zip(self.clip.transformer.resblocks, self.adapters):
            x = adapter(block(x), t)
        return self.clip.ln_post(x[:, 0]).reshape(b, t, -1)


# -- audio-specific path: Whisper + LoRA ----------------------------------------------------------------

class LoRALinear(nn.Module):
    """base(x) + (alpha / r) * x A^T B^T with `base` frozen, A Kaiming-uniform (as nn.Linear and
    peft), B zero (so the layer starts equal to `base`), no dropout. Our own layer rather than peft:
    no new dependency for twenty lines, and the state-dict names (`base.weight`, `lora_a`, `lora_b`)
    stay under our control, so checkpoints do not follow another library's naming."""

    def __init__(self, base: nn.Linear, r: int, alpha: float):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.scale = alpha / r
        self.lora_a = nn.Parameter(torch.empty(r, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + F.linear(F.linear(x, self.lora_a.to(x.dtype)), self.lora_b.to(x.dtype)) * self.scale


def with_lora(encoder: nn.Module, r: int, alpha: float) -> nn.Module:
    """The Whisper encoder frozen, with LoRA on the query and value projections of every block."""
    encoder.requires_grad_(False)
    for block in encoder.blocks:
        block.attn.query = LoRALinear(block.attn.query, r, alpha)
        block.attn.value = LoRALinear(block.attn.value, r, alpha)
    return encoder


# -- joint path: projections, cross-attention, pools ----------------------------------------------------

class Alignment(nn.Module):
    """V' = LN(Linear(V)), A' = LN(Linear(A)); x_v2a = V' + MHA(V', A', A') (padded audio keys masked),
    x_a2v = A' + MHA(A', V', V'); s_v = mean over video tokens, s_a = mean over valid audio frames.
    Without cross-attention the pools read V' and A' directly."""

    def __init__(self, video_dim: int, audio_dim: int, cfg: CADConfig):
        super().__init__()
        d = cfg.d_align
        self.video_proj = nn.Sequential(nn.Linear(video_dim, d), nn.LayerNorm(d))
        self.audio_proj = nn.Sequential(nn.Linear(audio_dim, d), nn.LayerNorm(d))
        self.v2a = nn.MultiheadAttention(d, cfg.align_heads, batch_first=True) if cfg.use_cross_attention else None
        self.a2v = nn.MultiheadAttention(d, cfg.align_heads, batch_first=True) if cfg.use_cross_attention else None

    def forward(self, video: Tensor, audio: Tensor, audio_padding: Tensor) -> tuple[Tensor, Tensor]:
        v, a = self.video_proj(video), self.audio_proj(audio)
        if self.v2a is not None:
            v, a = (v + self.v2a(v, a, a, key_padding_mask=audio_padding, need_weights=False)[0],
                    a + self.a2v(a, v, v, need_weights=False)[0])
        return v.mean(1), masked_mean(a, audio_padding)


def predictor(dim: int, hidden: int) -> nn.Sequential:
    """SimSiam's predictor shape: Linear (no bias), BatchNorm1d, ReLU, Linear."""
    return nn.Sequential(nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, dim))


# -- the model ---------------------------------------------------------------------------------------

class Encoded(NamedTuple):
    """The four encoders' outputs (None where an ablation removes the encoder)."""

    joint_video: Tensor | None  # (B, T, embed) projected CLS per frame, or (B, T*P, width) patch tokens
    joint_audio: Tensor | None  # (B, 1500, width_a) after ln_post
    video: Tensor | None  # (B, T, width) specific tower, each frame's CLS after ln_post
    audio: Tensor | None  # (B, 1500, width_a) LoRA'd Whisper after ln_post


class CADOutput(NamedTuple):
    logits: Tensor  # (B, classes)
    s_v: Tensor | None  # (B, d_align) pooled x_v2a
    s_a: Tensor | None  # (B, d_align) masked-pooled x_a2v
    x_v: Tensor | None  # (B, d_u) x_v^u
    x_a: Tensor | None  # (B, d_u) x_a^u
    z_v: Tensor | None  # (B, d_u) video predictor's output (distilled towards x_a^u)
    z_a: Tensor | None  # (B, d_u) audio predictor's output (distilled towards x_v^u)


class CAD(nn.Module):
    """forward(frames (B, T, 3, 224, 224) CLIP-normalised, mel (B, 80, 3000), audio_padding (B, 1500)
    bool) -> CADOutput; video_only needs frames alone, audio_only mel and padding alone. The
    classifier head is concat(s_v, s_a, x_v^u, x_a^u) -> LayerNorm -> Dropout -> Linear (the
    specific channel alone under video_only or audio_only)."""

    def __init__(self, cfg: CADConfig):
        super().__init__()
        self.cfg = cfg
        clip, whisper = build_backbones(cfg)
        self.video = self.video_out = self.audio = self.audio_out = None
        if clip is not None:
            self.video = VideoTower(copy.deepcopy(clip) if cfg.joint else clip, cfg)
            self.video_out = nn.Linear(clip.transformer.width, cfg.d_u)
        if whisper is not None:
            self.audio = with_lora(copy.deepcopy(whisper) if cfg.joint else whisper, cfg.lora_r, cfg.lora_alpha)
            self.audio_out = nn.Linear(whisper.ln_post.normalized_shape[0], cfg.d_u)
        features = cfg.d_u
        if cfg.joint:
            self.clip = clip.requires_grad_(not cfg.freeze_align)
            self.whisper = whisper.requires_grad_(not cfg.freeze_align)
            video_dim = clip.proj.shape[1] if cfg.align_video_tokens == "cls" else clip.transformer.width
            self.alignment = Alignment(video_dim, whisper.ln_post.normalized_shape[0], cfg)
            features += cfg.d_u + 2 * cfg.d_align
        simsiam = cfg.joint and cfg.use_distill and cfg.distill_loss == "simsiam"
        symmetric = simsiam and cfg.kd_direction == "symmetric"
        self.predict_v = predictor(cfg.d_u, cfg.predictor_hidden) if simsiam else None
        self.predict_a = predictor(cfg.d_u, cfg.predictor_hidden) if symmetric else None
        self.head = nn.Sequential(nn.LayerNorm(features), nn.Dropout(cfg.head_dropout),
                                  nn.Linear(features, cfg.classes))

    def joint_video(self, frames: Tensor) -> Tensor:
        """The frozen CLIP's per-frame CLS after ln_post @ proj (B, T, embed), or with
        align_video_tokens=patch its patch tokens after ln_post (B, T*P, width)."""
        b, t = frames.shape[:2]
        x = self.clip.ln_post(self.clip.transformer(clip_tokens(self.clip, frames.flatten(0, 1))))
        if self.cfg.align_video_tokens == "cls":
            return (x[:, 0] @ self.clip.proj).reshape(b, t, -1)
        return x[:, 1:].reshape(b, -1, x.shape[-1])

    def encode(self, frames: Tensor | None, mel: Tensor | None = None) -> Encoded:
        video = None if self.video is None else self.video(frames)
        audio = None if self.audio is None else self.audio(mel)
        if not self.cfg.joint:
            return Encoded(None, None, video, audio)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.freeze_align):
            joint_video, joint_audio = self.joint_video(frames), self.whisper(mel)
        return Encoded(joint_video, joint_audio, video, audio)

    def heads(self, encoded: Encoded, audio_padding: Tensor | None = None) -> CADOutput:
        x_v = None if encoded.video is None else self.video_out(encoded.video.mean(1))
        x_a = None if encoded.audio is None else self.audio_out(masked_mean(encoded.audio, audio_padding))
        s_v = s_a = None
        if self.cfg.joint:
            s_v, s_a = self.alignment(encoded.joint_video, encoded.joint_audio, audio_padding)
        features = [f for f in (s_v, s_a, x_v, x_a) if f is not None]
        z_v = None if self.predict_v is None else self.predict_v(x_v)
        z_a = None if self.predict_a is None else self.predict_a(x_a)
        return CADOutput(self.head(torch.cat(features, dim=1)), s_v, s_a, x_v, x_a, z_v, z_a)

    def forward(self, frames: Tensor | None, mel: Tensor | None = None,
                audio_padding: Tensor | None = None) -> CADOutput:
        return self.heads(self.encode(frames, mel), audio_padding)

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """What training changes: the trainable parameters, and the buffers (BatchNorm statistics) of the
        modules that own one. The frozen backbones are not saved; they come from their weight files."""
        keep = set()
        for prefix, module in self.named_modules():
            own = [name for name, p in module.named_parameters(recurse=False) if p.requires_grad]
            if own:
                own += [name for name, _ in module.named_buffers(recurse=False)]
                keep |= {f"{prefix}.{name}" if prefix else name for name in own}
        return {key: value for key, value in self.state_dict().items() if key in keep}

    def load_trainable_state_dict(self, state: dict[str, Tensor]) -> None:
        """Strict: exactly the keys `trainable_state_dict` gives, with their shapes."""
        expected = self.trainable_state_dict().keys()
        missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
        if missing or unexpected:
            raise KeyError(f"CAD trainable state: missing {missing}, unexpected {unexpected}")
        self.load_state_dict(state, strict=False)


# -- losses ------------------------------------------------------------------------------------------

class Losses(NamedTuple):
    total: Tensor
    ce: Tensor
    kl: Tensor  # zero when the alignment loss is off (or real_only and the batch has no real sample)
    kd: Tensor  # zero when distillation is off


def alignment_loss(s_v: Tensor, s_a: Tensor) -> Tensor:
    """Eq. 7: KL(P || Q) with P = softmax(s_v), Q = softmax(s_a) over features, averaged over the batch,
    gradients into both. kl_div(input, target) computes KL(target || input): P is the second argument."""
    return F.kl_div(F.log_softmax(s_a, dim=-1), F.log_softmax(s_v, dim=-1), log_target=True, reduction="batchmean")


def negative_cosine(prediction: Tensor, target: Tensor) -> Tensor:
    """SimSiam's D(p, sg(t)): minus the mean cosine; the target gets no gradient (against collapse)."""
    return -(F.normalize(prediction, dim=-1) * F.normalize(target.detach(), dim=-1)).sum(-1).mean()


def distillation_loss(x_v: Tensor, x_a: Tensor, z_v: Tensor, z_a: Tensor | None,
                      direction: str = "symmetric") -> Tensor:
    """Eq. 8: (D(z_a, sg(x_v)) + D(z_v, sg(x_a))) / 2, in [-1, 1]. audio_to_video keeps the term whose
    target is audio, D(z_v, sg(x_a)): the video channel learns from audio, the paper's stated intent
    (the spec calls it "the first term", which under its own stop-gradient is the other one)."""
    video_taught = negative_cosine(z_v, x_a)
    return video_taught if direction == "audio_to_video" else (negative_cosine(z_a, x_v) + video_taught) / 2


def total_loss(out: CADOutput, labels: Tensor, cfg: CADConfig) -> Losses:
    """CE + kl_weight * L_KL + kd_weight * L_KD (spec section 4), each term as the switches leave it."""
    ce = F.cross_entropy(out.logits, labels)
    kl = kd = ce.new_zeros(())
    if out.s_v is not None and cfg.use_align_loss:
        real = labels == 0
        if cfg.align_on == "all":
            kl = alignment_loss(out.s_v, out.s_a)
        elif real.any():
            kl = alignment_loss(out.s_v[real], out.s_a[real])
    if out.x_a is not None and out.x_v is not None and cfg.use_distill:
        kd = (distillation_loss(out.x_v, out.x_a, out.z_v, out.z_a, cfg.kd_direction) if cfg.distill_loss == "simsiam"
              else alignment_loss(out.x_v, out.x_a))
    return Losses(cfg.ce_weight * ce + cfg.kl_weight * kl + cfg.kd_weight * kd, ce, kl, kd)
