"""The named self-supervised backbones of seed paper 001, each a real model loaded through its own library.

Every backbone returns (T, D) float32 features at FEATURE_RATE (25 Hz) per clip (contract in features.py):
- "wav2vec2": Wav2Vec2 / XLS-R (transformers); 50 Hz frames paired into 25 Hz.
- "whisper": openai-whisper's audio encoder; 50 Hz frames paired into 25 Hz (not in the paper).
- "clip": open_clip's ViT image tower; one projected CLS embedding per frame.
- "videomae": VideoMAE (transformers); 16-frame windows, tokens averaged over space.
- "avhubert_a", "avhubert_v", "avhubert_av": AV-HuBERT on filterbanks, mouth crops or both.

`layer` k (1-based) is the output of the k-th transformer block, before any final norm or
projection; None is each backbone's default output, documented per class. Nothing downloads:
weights are local paths, or names the library resolves in its own local cache. `tiny` and
`random_init` draw their parameters with `seed` inside a forked RNG, so two processes build the
same network and the caller's global RNG state is untouched. Torch and the model libraries are
imported on first use, so importing this module stays cheap.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar, Iterator, Mapping, Sequence

import numpy as np

from avbench.clips import Clip, ClipError
from avbench.detector import InputSpec
from avbench.detectors.ssl.features import FEATURE_RATE, Backbone, pair_frames

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 16000
#: Device batch sizes: clips per audio forward pass, images or 16-frame windows per video pass.
AUDIO_BATCH = 8
IMAGE_BATCH = 64
WINDOW_BATCH = 8


def seeded(seed: int, make: Callable[[], "torch.nn.Module"]) -> "torch.nn.Module":
    """`make()` with torch's CPU RNG seeded by `seed` and the caller's RNG state restored afterwards."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def stream(arrays: Sequence[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """The rows of all `arrays`, in order, in chunks of at most `size`: a batch of clips goes
    through the device in fixed-size pieces without one copy of everything."""
    pending: list[np.ndarray] = []
    count = 0
    for array in arrays:
        start = 0
        while start < len(array):
            take = min(size - count, len(array) - start)
            pending.append(array[start:start + take])
            count += take
            start += take
            if count == size:
                yield np.concatenate(pending)
                pending, count = [], 0
    if pending:
        yield np.concatenate(pending)


def read_checkpoint(path: str, read: Callable[[str], object]):
    """`read(path)` with torch.load(weights_only=True) inside; a file that needs arbitrary pickled
    objects is refused with an error naming it."""
    import pickle

    try:
        return read(path)
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise ValueError(f"{path}: torch.load(weights_only=True) refuses it ({reason}); a plain state dict "
                         "(or safetensors) is needed") from exc


def hub_folder(weights: str) -> str | None:
    """The local snapshot folder of Hugging Face hub id `weights`, or None if it is not cached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return snapshot_download(weights, local_files_only=True)
    except (HFValidationError, LocalEntryNotFoundError):
        return None


class LocalBackbone(Backbone):
    """A Backbone whose `weights` name resolves to a local file or folder when it is constructed, so
    the fingerprint hashes the real files; plus the checks every backbone makes on its inputs."""

    def __init__(self, weights: str | None = None, **kwargs):
        super().__init__(weights, **kwargs)
        if self.weights is not None:
            self.weights = self.local_weights(str(self.weights))

    def local_weights(self, weights: str) -> str:
        path = Path(weights).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{self.name}: no weights at {path}; {self.how_to_get}")
        return str(path.resolve())

    def missing_weights(self, weights: str, where: str) -> FileNotFoundError:
        return FileNotFoundError(f"{self.name}: weights '{weights}' are neither a local path nor {where}; "
                                 f"{self.how_to_get}")

    def check_layer(self, blocks: int) -> None:
        if self.layer is not None and not 1 <= self.layer <= blocks:
            raise ValueError(f"{self.name}: layer must be in 1..{blocks} (the output of that transformer block) "
                             f"or None, got {self.layer}")

    def audio(self, clip: Clip) -> np.ndarray:
        if clip.audio is None:
            raise ClipError("no_audio", f"{clip.ref.path}: {self.name} needs the audio track; the clip has none")
        if clip.sample_rate != SAMPLE_RATE:
            raise ValueError(f"{clip.ref.path}: {self.name} needs {SAMPLE_RATE} Hz audio, got {clip.sample_rate} Hz")
        return clip.audio

    def video_rate(self, clip: Clip) -> None:
        if clip.fps != FEATURE_RATE:
            raise ValueError(f"{clip.ref.path}: {self.name} needs video at {FEATURE_RATE:g} fps (decode with its "
                             f"input_spec), got {clip.fps}")

    def frames(self, clip: Clip, size: int) -> np.ndarray:
        """The clip's (T, size, size, 3) frames, as the backbone's input_spec decodes them."""
        if clip.frames is None:
            raise ClipError("no_video", f"{clip.ref.path}: {self.name} needs video frames; none were decoded")
        self.video_rate(clip)
        if clip.frames.shape[1:] != (size, size, 3):
            raise ValueError(f"{clip.ref.path}: {self.name} needs {size}x{size} RGB frames (decode with its "
                             f"input_spec), got {clip.frames.shape[1:]}")
        return clip.frames


# -- transformers ---------------------------------------------------------------------------------

class HuggingFaceBackbone(LocalBackbone):
    """A transformers model: `weights` is a model folder or a hub id in the local Hugging Face cache.

    random_init: the folder's config with the library's own initialisation (`_init_weights`, run by
    the model constructor) after torch.manual_seed(seed); tiny: `tiny_config` the same way.
    """

    #: Keyword arguments of the model's config class for the tiny variant.
    tiny_config: ClassVar[dict]

    @staticmethod
    def model_class():
        raise NotImplementedError

    def local_weights(self, weights: str) -> str:
        if Path(weights).expanduser().exists():
            return super().local_weights(weights)
        folder = hub_folder(weights)
        if folder is None:
            raise self.missing_weights(weights, "a model in the Hugging Face cache")
        return folder

    def build(self) -> "torch.nn.Module":
        import torch

        model_class = self.model_class()
        if self.tiny or self.random_init:
            config = (model_class.config_class(**self.tiny_config) if self.tiny
                      else model_class.config_class.from_pretrained(self.weights, local_files_only=True))
            return seeded(self.seed, lambda: model_class(config))
        model, info = model_class.from_pretrained(self.weights, local_files_only=True, dtype=torch.float32,
                                                  output_loading_info=True)
        if info["missing_keys"] or info["mismatched_keys"]:
            raise ValueError(f"{self.weights}: not a complete {model_class.__name__} checkpoint: missing "
                             f"{sorted(info['missing_keys'])}, mismatched {sorted(info['mismatched_keys'])}")
        return model


class Wav2Vec2(HuggingFaceBackbone):
    """Wav2Vec2 / XLS-R (paper: facebook/wav2vec2-xls-r-2b, last layer, Sec. 4.2).

    Input as XLS-R's Wav2Vec2FeatureExtractor prepares it (the library's own class, used as is): zero
    mean, unit variance per utterance, zero padding and an attention mask for a batch. Models with
    group-normed convolutions (feat_extract_norm="group", e.g. wav2vec2-base) cannot mask padding, so
    their clips run one at a time. Output: last_hidden_state (after the final LayerNorm of XLS-R's
    stable-layer-norm encoder) or the output of block `layer`; 50 Hz frames (one per 320 samples,
    those fully inside the clip) concatenated in pairs, as the paper does, so T = frames // 2
    (1 s of audio: 49 frames -> 24) and D = 2 x hidden size.
    """

    name = "wav2vec2"
    modality = "audio"
    input_spec = InputSpec(fps=None, audio=True)
    how_to_get = ("the paper used facebook/wav2vec2-xls-r-2b: pass its downloaded Hugging Face folder, or the hub "
                  "id once it is in the local Hugging Face cache (`hf download facebook/wav2vec2-xls-r-2b`)")
    #: Tiny widths; the standard convolution strides (total 320 samples: 50 Hz) and XLS-R's layer norms.
    tiny_config = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       conv_dim=(16,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
                       conv_bias=True, feat_extract_norm="layer", do_stable_layer_norm=True,
                       num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, vocab_size=8)

    @staticmethod
    def model_class():
        from transformers import Wav2Vec2Model

        return Wav2Vec2Model

    def forward(self, model, clips, device):
        import torch
        from transformers import Wav2Vec2FeatureExtractor

        self.check_layer(model.config.num_hidden_layers)
        audios = [self.audio(clip) for clip in clips]
        frames = model._get_feat_extract_output_lengths(torch.tensor([len(a) for a in audios]))
        for clip, n in zip(clips, frames.tolist()):
            if n < 2:
                raise ClipError("too_short", f"{clip.ref.path}: {len(clip.audio)} samples give {n} Wav2Vec2 "
                                             "frames; one 25 Hz feature needs 2")
        extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0,
                                             do_normalize=True, return_attention_mask=True)
        batch = AUDIO_BATCH if model.config.feat_extract_norm == "layer" else 1
        out = []
        for start in range(0, len(audios), batch):
            inputs = extractor(audios[start:start + batch], sampling_rate=SAMPLE_RATE, padding=True,
                               return_attention_mask=True, return_tensors="pt")
            result = model(inputs["input_values"].to(device), attention_mask=inputs["attention_mask"].to(device),
                           output_hidden_states=self.layer is not None)
            hidden = result.last_hidden_state if self.layer is None else result.hidden_states[self.layer]
            hidden = hidden.float().cpu().numpy()
            out += [pair_frames(hidden[i, :n]) for i, n in enumerate(frames[start:start + batch].tolist())]
        return out


class VideoMAE(HuggingFaceBackbone):
    """VideoMAE (paper: MCG-NJU/videomae-large, Sec. 4.1) on whole frames.

    Frames as VideoMAEImageProcessor prepares them: shorter side to 224 and the centre square (done
    by the loader: InputSpec frame_size=224, frame_crop=True), /255, then ImageNet's mean/std, with
    which VideoMAE was pre-trained (the processor class's own default is 0.5 / 0.5). As the paper:
    windows of 16 consecutive 25 fps frames with stride 16, the last incomplete window discarded,
    so frames after the last full window get no feature (T = 16 x (frames // 16)); a clip shorter
    than 16 frames raises ClipError("too_short"). Tokens (last_hidden_state, or block `layer`'s
    output) are averaged over space per tubelet (2 frames), and each tubelet's vector is repeated
    for its frames, so the output is 25 Hz.
    """

    name = "videomae"
    modality = "video"
    input_spec = InputSpec(fps=FEATURE_RATE, audio=False, frame_size=224, frame_crop=True)
    how_to_get = ("the paper used MCG-NJU/videomae-large: pass its downloaded Hugging Face folder, or the hub id once "
                  "it is in the local Hugging Face cache (`hf download MCG-NJU/videomae-large`)")
    #: 224 px frames as the real model (so the input_spec holds), with 32 px patches to stay small.
    tiny_config = dict(image_size=224, patch_size=32, num_frames=16, tubelet_size=2, hidden_size=32,
                       num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, use_mean_pooling=False)

    @staticmethod
    def model_class():
        from transformers import VideoMAEModel

        return VideoMAEModel

    def forward(self, model, clips, device):
        import torch
        from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        config = model.config
        window, tubelet = config.num_frames, config.tubelet_size
        self.check_layer(config.num_hidden_layers)
        videos = [self.frames(clip, config.image_size) for clip in clips]
        for clip, frames in zip(clips, videos):
            if len(frames) < window:
                raise ClipError("too_short", f"{clip.ref.path}: {len(frames)} frames; VideoMAE needs a window "
                                             f"of {window}")
        windows = [frames[: len(frames) // window * window].reshape(-1, window, *frames.shape[1:]) for frames in videos]
        mean = torch.tensor(IMAGENET_DEFAULT_MEAN, device=device).view(1, 1, 3, 1, 1)
        std = torch.tensor(IMAGENET_DEFAULT_STD, device=device).view(1, 1, 3, 1, 1)
        out = []
        for chunk in stream(windows, WINDOW_BATCH):
            pixels = (torch.from_numpy(chunk).to(device).permute(0, 1, 4, 2, 3).float() / 255 - mean) / std
            result = model(pixel_values=pixels, output_hidden_states=self.layer is not None)
            tokens = result.last_hidden_state if self.layer is None else result.hidden_states[self.layer]
            per_tubelet = tokens.float().reshape(len(chunk), window // tubelet, -1, tokens.shape[-1]).mean(2)
            out.append(per_tubelet.repeat_interleave(tubelet, dim=1).cpu().numpy())
        features = np.concatenate(out).reshape(-1, out[0].shape[-1])
        return np.split(features, np.cumsum([w.shape[0] * window for w in windows])[:-1])


# -- openai-whisper -------------------------------------------------------------------------------

class Whisper(LocalBackbone):
    """openai-whisper's audio encoder (not in the paper; a speech encoder trained with supervision).

    As whisper's transcribe prepares audio: log-Mel (whisper.audio.log_mel_spectrogram with the
    model's n_mels, over the whole clip plus 30 s of zeros), cut into 30 s segments, each padded
    with pad_or_trim. Output: the encoder after ln_post (or block `layer`'s output), cut to each
    segment's real length (one frame per 2 mel frames, 50 Hz), segments concatenated and frames
    paired to 25 Hz: T = samples // 640, D = 2 x n_audio_state. random_init: the encoder's PyTorch
    default initialisation (whisper defines no other) after torch.manual_seed(seed).
    """

    name = "whisper"
    modality = "audio"
    input_spec = InputSpec(fps=None, audio=True)
    how_to_get = ("not in the paper: pass an openai-whisper checkpoint .pt (e.g. large-v3.pt), or a model name "
                  "(large-v3) whose file is in whisper's cache (~/.cache/whisper, where whisper.load_model puts it)")
    #: whisper.model.ModelDimensions of the tiny variant (n_audio_ctx 1500 = 30 s, as every Whisper).
    tiny_config = dict(n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=2, n_audio_layer=2,
                       n_vocab=64, n_text_ctx=8, n_text_state=32, n_text_head=2, n_text_layer=1)

    def local_weights(self, weights: str) -> str:
        import os

        import whisper

        if Path(weights).expanduser().exists() or weights not in whisper.available_models():
            return super().local_weights(weights)
        cache = Path(os.getenv("XDG_CACHE_HOME", Path.home() / ".cache")) / "whisper"
        path = cache / os.path.basename(whisper._MODELS[weights])
        if not path.is_file():
            raise self.missing_weights(weights, f"a whisper model in its cache ({path} is missing)")
        return str(path)

    def build(self):
        import torch
        from whisper.audio import N_FRAMES
        from whisper.model import AudioEncoder, ModelDimensions

        if self.tiny:
            dims, state = ModelDimensions(**self.tiny_config), None
        else:
            checkpoint = read_checkpoint(self.weights, lambda path: torch.load(path, map_location="cpu",
                                                                               weights_only=True))
            if not isinstance(checkpoint, dict) or not {"dims", "model_state_dict"} <= checkpoint.keys():
                raise ValueError(f"{self.weights}: not an openai-whisper checkpoint (a dict with 'dims' and "
                                 "'model_state_dict')")
            dims = ModelDimensions(**checkpoint["dims"])
            state = {key.removeprefix("encoder."): value for key, value in checkpoint["model_state_dict"].items()
                     if key.startswith("encoder.")}
        if dims.n_audio_ctx * 2 != N_FRAMES:
            raise ValueError(f"{self.weights}: n_audio_ctx {dims.n_audio_ctx} does not cover whisper's 30 s window")
        encoder = seeded(self.seed, lambda: AudioEncoder(dims.n_mels, dims.n_audio_ctx, dims.n_audio_state,
                                                         dims.n_audio_head, dims.n_audio_layer))
        if state is not None and not self.random_init:
            encoder.load_state_dict(state, strict=True)
        return encoder

    def forward(self, model, clips, device):
        import torch
        from whisper.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram, pad_or_trim

        self.check_layer(len(model.blocks))
        audios = [self.audio(clip) for clip in clips]
        for clip, audio in zip(clips, audios):
            if len(audio) < 640:
                raise ClipError("too_short", f"{clip.ref.path}: {len(audio)} samples; one 25 Hz Whisper feature "
                                             "needs 640")
        segments, lengths, owners = [], [], []
        for i, audio in enumerate(audios):
            mel = log_mel_spectrogram(torch.from_numpy(audio), model.conv1.in_channels, padding=N_SAMPLES,
                                      device=device)
            content = mel.shape[-1] - N_FRAMES
            for seek in range(0, content, N_FRAMES):
                size = min(N_FRAMES, content - seek)
                segments.append(pad_or_trim(mel[:, seek:seek + size], N_FRAMES))
                lengths.append(size // 2)
                owners.append(i)
        captured = []
        hook = (model.blocks[self.layer - 1].register_forward_hook(lambda module, args, output: captured.append(output))
                if self.layer is not None else None)
        try:
            encoded = []
            for start in range(0, len(segments), AUDIO_BATCH):
                output = model(torch.stack(segments[start:start + AUDIO_BATCH]))
                encoded.append((captured.pop() if hook is not None else output).float().cpu().numpy())
        finally:
            if hook is not None:
                hook.remove()
        encoded = np.concatenate(encoded)
        per_clip: list[list[np.ndarray]] = [[] for _ in clips]
        for features, n, owner in zip(encoded, lengths, owners):
            per_clip[owner].append(features[:n])
        return [pair_frames(np.concatenate(parts)) for parts in per_clip]


# -- open_clip ------------------------------------------------------------------------------------

#: open_clip.CLIP keyword arguments of the tiny variant: ViT with 224 px input (so the input_spec
#: holds), 32 px patches, 2 heads of width 64 (the head width every CLIP ViT uses, read back as such).
TINY_CLIP = dict(embed_dim=32, quick_gelu=True,
                 vision_cfg=dict(layers=2, width=128, head_width=64, patch_size=32, image_size=224),
                 text_cfg=dict(context_length=8, vocab_size=64, width=64, heads=1, layers=1))
#: Checkpoint files open_clip publishes on the hub, preferred first.
CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def clip_vision_config(visual: Mapping[str, "torch.Tensor"]) -> tuple[int, dict]:
    """(embed_dim, open_clip vision_cfg) of a ViT image tower, read from its tensor shapes
    (keys without the `visual.` prefix); heads = width / 64 as in every CLIP ViT."""
    width, _, patch, _ = visual["conv1.weight"].shape
    grid = math.isqrt(visual["positional_embedding"].shape[0] - 1)
    layers = 1 + max(int(key.split(".")[2]) for key in visual if key.startswith("transformer.resblocks."))
    mlp_ratio = visual["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width
    return visual["proj"].shape[1], dict(layers=layers, width=width, head_width=64, mlp_ratio=mlp_ratio,
                                         patch_size=patch, image_size=grid * patch)


class CLIP(LocalBackbone):
    """CLIP ViT image tower through open_clip (paper: OpenAI's ViT-L/14, Sec. 4.1 and Supp. B).

    Whole frames as open_clip's eval transform prepares them: shorter side to 224 and the centre
    square (done by the loader: frame_size=224, frame_crop=True), /255, OpenAI's mean/std. Output:
    the image embedding (CLS token after ln_post, projected: 768-d for ViT-L/14) per frame, so T =
    frames at 25 Hz; with `layer`, the CLS token of that block's output (width-d, no ln_post).
    The tower's sizes are read from the checkpoint's shapes and its MLPs use QuickGELU, as OpenAI
    trained CLIP (a LAION-trained checkpoint, which uses GELU, is not what this backbone computes).
    random_init: the tower as open_clip constructs it, after torch.manual_seed(seed).
    """

    name = "clip"
    modality = "video"
    input_spec = InputSpec(fps=FEATURE_RATE, audio=False, frame_size=224, frame_crop=True)
    how_to_get = ("the paper used OpenAI's CLIP ViT-L/14 (openai/clip-vit-large-patch14); pass open_clip's copy of it: "
                  "open_clip_model.safetensors of the hub repo timm/vit_large_patch14_clip_224.openai (the file, its "
                  "folder, or the hub id once it is in the local Hugging Face cache)")

    def local_weights(self, weights: str) -> str:
        path = Path(weights).expanduser()
        folder = path if path.exists() else hub_folder(weights)
        if folder is None:
            raise self.missing_weights(weights, "a model in the Hugging Face cache")
        if Path(folder).is_file():
            return super().local_weights(weights)
        for name in CLIP_FILES:
            if (Path(folder) / name).is_file():
                return str((Path(folder) / name).resolve())
        raise FileNotFoundError(f"{self.name}: {folder} holds none of {', '.join(CLIP_FILES)}; {self.how_to_get}")

    def build(self):
        from open_clip.factory import load_state_dict
        from open_clip.model import _build_vision_tower

        if self.tiny:
            embed_dim, vision_cfg, visual = TINY_CLIP["embed_dim"], TINY_CLIP["vision_cfg"], None
        else:
            state = read_checkpoint(self.weights, load_state_dict)  # open_clip's: safetensors or weights_only
            visual = {key.removeprefix("visual."): value for key, value in state.items() if key.startswith("visual.")}
            try:
                embed_dim, vision_cfg = clip_vision_config(visual)
            except (KeyError, ValueError) as exc:
                raise ValueError(f"{self.weights}: not an open_clip CLIP ViT checkpoint (no tensor {exc})") from exc
        tower = seeded(self.seed, lambda: _build_vision_tower(embed_dim, vision_cfg, quick_gelu=True))
        if visual is not None and not self.random_init:
            tower.load_state_dict(visual, strict=True)
        return tower

    def forward(self, model, clips, device):
        import torch
        from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        self.check_layer(len(model.transformer.resblocks))
        videos = [self.frames(clip, model.image_size[0]) for clip in clips]
        mean = torch.tensor(OPENAI_DATASET_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(OPENAI_DATASET_STD, device=device).view(1, 3, 1, 1)
        out = []
        for chunk in stream(videos, IMAGE_BATCH):
            pixels = (torch.from_numpy(chunk).to(device).permute(0, 3, 1, 2).float() / 255 - mean) / std
            if self.layer is None:
                embedding = model(pixels)
            else:
                embedding = model.forward_intermediates(
                    pixels, indices=[self.layer - 1], stop_early=True, intermediates_only=True, output_fmt="NLC",
                    output_extra_tokens=True)["image_intermediates_prefix"][0][:, 0]
            out.append(embedding.float().cpu().numpy())
        return np.split(np.concatenate(out), np.cumsum([len(v) for v in videos])[:-1])


# -- AV-HuBERT ------------------------------------------------------------------------------------

class AVHubertBackbone(LocalBackbone):
    """AV-HuBERT (paper: self_large_vox_433h, Sec. 4.3), in avbench.detectors.avhubert.

    Inputs as the authors' data loader builds them (avhubert.preprocess): 4 stacked 100 Hz log
    filterbanks per 25 Hz frame, normalised per frame; grey 96 px mouth crops centre-cropped to 88
    and standardised. With video, T = mouth frames (the audio aligned to them); audio only, T =
    ceil(filterbank frames / 4). The absent modality is masked as in the paper (zeros after its
    front-end). A batch is zero-padded with padding_mask set on the padded frames and each clip
    cut back to its own length. Output: the encoder after the final LayerNorm, or block `layer`'s
    output (output_layer, no final LayerNorm). random_init: the checkpoint's architecture
    re-drawn by avhubert.reinitialise(model, seed) (the paper's Supp. D scheme).
    """

    modality = "audio-visual"
    how_to_get = ("the paper used the self_large_vox_433h checkpoint (facebookresearch/av_hubert): convert it once "
                  "with `avbench avhubert convert SRC DST.safetensors` and pass DST")
    uses_audio: ClassVar[bool] = True
    uses_video: ClassVar[bool] = True

    def build(self):
        from avbench.detectors.avhubert import AVHubert, AVHubertConfig, load, reinitialise

        if self.tiny:
            return seeded(self.seed, lambda: AVHubert(AVHubertConfig.tiny()))
        model = load(self.weights)
        return reinitialise(model, self.seed) if self.random_init else model

    def inputs(self, clip: Clip) -> tuple[np.ndarray | None, np.ndarray | None, int]:
        """(audio (104, T) or None, video (1, T, 88, 88) or None, T) of one clip."""
        from avbench.detectors.avhubert import audio_features, mouth_features

        video = None
        if self.uses_video:
            if clip.mouths is None:
                raise ClipError("no_video", f"{clip.ref.path}: {self.name} needs mouth crops; none were decoded")
            self.video_rate(clip)
            video = mouth_features(clip.mouths)
        audio = audio_features(self.audio(clip), None if video is None else video.shape[1]) if self.uses_audio else None
        frames = (video if video is not None else audio).shape[1]
        if frames == 0:
            raise ClipError("too_short", f"{clip.ref.path}: no 25 Hz frame to give {self.name}")
        return audio, video, frames

    def forward(self, model, clips, device):
        import torch

        self.check_layer(model.config.layers)
        inputs = [self.inputs(clip) for clip in clips]
        out = []
        for start in range(0, len(inputs), AUDIO_BATCH):
            batch = inputs[start:start + AUDIO_BATCH]
            longest = max(frames for _, _, frames in batch)
            padding = torch.ones(len(batch), longest, dtype=torch.bool)
            audio = torch.zeros(len(batch), model.config.audio_feat_dim, longest) if self.uses_audio else None
            video = torch.zeros(len(batch), 1, longest, *batch[0][1].shape[2:]) if self.uses_video else None
            for i, (a, v, frames) in enumerate(batch):
                padding[i, :frames] = False
                if audio is not None:
                    audio[i, :, :frames] = torch.from_numpy(a)
                if video is not None:
                    video[i, :, :frames] = torch.from_numpy(v)
            features = model.extract(audio=None if audio is None else audio.to(device),
                                     video=None if video is None else video.to(device),
                                     padding_mask=padding.to(device), output_layer=self.layer)
            features = features.float().cpu().numpy()
            out += [features[i, :frames] for i, (_, _, frames) in enumerate(batch)]
        return out


class AVHubertAudio(AVHubertBackbone):
    """AV-HuBERT (A): audio features, the video stream masked."""

    name = "avhubert_a"
    modality = "audio"
    input_spec = InputSpec(fps=None, audio=True)
    uses_video = False


class AVHubertVideo(AVHubertBackbone):
    """AV-HuBERT (V): visual features from mouth crops, the audio stream masked."""

    name = "avhubert_v"
    modality = "video"
    input_spec = InputSpec(fps=FEATURE_RATE, audio=False, mouth_size=96, frames=False)
    uses_audio = False


class AVHubertAudioVisual(AVHubertBackbone):
    """AV-HuBERT (AV): both streams."""

    name = "avhubert_av"
    input_spec = InputSpec(fps=FEATURE_RATE, audio=True, mouth_size=96, frames=False)


#: name -> Backbone subclass
BACKBONES: dict[str, type[Backbone]] = {
    cls.name: cls for cls in (Wav2Vec2, Whisper, CLIP, VideoMAE, AVHubertAudio, AVHubertVideo, AVHubertAudioVisual)
}


def get_backbone(name: str, **kwargs) -> Backbone:
    """A backbone by name; kwargs as Backbone.__init__ (weights, layer, tiny, random_init, seed)."""
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone '{name}'; known: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name](**kwargs)
