"""The named self-supervised backbones, each tiny and random, on clips made with numpy."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from avbench.cache import MediaCache
from avbench.clips import Clip, ClipError, ClipRef
from avbench.detector import InputSpec
from avbench.detectors.ssl import backbones
from avbench.detectors.ssl.backbones import BACKBONES, get_backbone
from avbench.detectors.ssl.features import FeatureSource, merged_spec
from avbench.loader import MediaLoader

NAMES = ["wav2vec2", "whisper", "clip", "videomae", "avhubert_a", "avhubert_v", "avhubert_av"]
#: (T of the 50-frame / 2 s clip, T of the 32-frame / 1.28 s clip, D) of each tiny backbone.
SHAPES = {
    "wav2vec2": (49, 31, 64),     # conv frames (N - 400) // 320 + 1 = 99 / 63, paired; D = 2 x 32
    "whisper": (50, 32, 64),      # samples // 640; D = 2 x 32
    "clip": (50, 32, 32),         # one per frame; the projected embedding
    "videomae": (48, 32, 32),     # 16 x full windows
    "avhubert_a": (50, 32, 32),   # ceil(filterbank frames / 4)
    "avhubert_v": (50, 32, 32),   # one per mouth frame
    "avhubert_av": (50, 32, 32),
}
AUDIO = {"wav2vec2", "whisper", "avhubert_a", "avhubert_av"}
VIDEO = {"clip", "videomae", "avhubert_v", "avhubert_av"}


def make_clip(path: Path, frames: int, seed: int, audio=True, video=True) -> Clip:
    """`frames` video frames at 25 fps (224 px frames, 96 px mouths) and the matching 16 kHz audio."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames * 640) / 16000
    return Clip(ref=ClipRef(clip_id=path.stem, dataset="t", path=path, label=0), fps=25.0,
                frames=rng.integers(0, 256, (frames, 224, 224, 3), dtype=np.uint8) if video else None,
                mouths=rng.integers(0, 256, (frames, 96, 96, 3), dtype=np.uint8) if video else None,
                audio=(0.3 * np.sin(2 * np.pi * 180 * t * (1 + t)) + 0.05 * rng.standard_normal(len(t))
                       ).astype(np.float32) if audio else None)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    for name in ("long", "short"):
        (root / f"{name}.mp4").write_bytes(name.encode())   # the media cache hashes the files
    return make_clip(root / "long.mp4", 50, seed=1), make_clip(root / "short.mp4", 32, seed=2)


@pytest.fixture(scope="module")
def tiny_features(clips):
    return {name: get_backbone(name, tiny=True).extract(list(clips)) for name in NAMES}


def save_tiny(name: str, folder: Path) -> str:
    """The tiny network of `name` written with its library's own format; returns what to pass as weights."""
    model = get_backbone(name, tiny=True).build()
    folder.mkdir(parents=True, exist_ok=True)
    if name in ("wav2vec2", "videomae"):
        model.save_pretrained(folder)
        return str(folder)
    if name == "whisper":
        from whisper.model import ModelDimensions, Whisper

        dims = ModelDimensions(**backbones.Whisper.tiny_config)
        full = Whisper(dims)
        full.encoder.load_state_dict(model.state_dict())
        torch.save({"dims": dataclasses.asdict(dims), "model_state_dict": full.state_dict()}, folder / "tiny.pt")
        return str(folder / "tiny.pt")
    from safetensors.torch import save_file

    if name == "clip":
        import open_clip

        full = open_clip.CLIP(**backbones.TINY_CLIP)
        full.visual.load_state_dict(model.state_dict())
        save_file(full.state_dict(), folder / "open_clip_model.safetensors")
        return str(folder / "open_clip_model.safetensors")
    save_file(model.state_dict(), folder / "avhubert.safetensors",
              metadata={"format": "avbench-avhubert", "config": json.dumps(dataclasses.asdict(model.config))})
    return str(folder / "avhubert.safetensors")


def test_registry():
    assert sorted(BACKBONES) == sorted(NAMES)
    for name, cls in BACKBONES.items():
        assert cls.name == name and cls.how_to_get and cls.modality in ("audio", "video", "audio-visual")
        assert cls.input_spec.audio == (name in AUDIO) and cls.input_spec.video == (name in VIDEO)
    with pytest.raises(KeyError, match="known: avhubert_a"):
        get_backbone("hubert", tiny=True)
    assert merged_spec([BACKBONES[name](tiny=True) for name in NAMES]) == InputSpec(
        fps=25.0, audio=True, frame_size=224, frame_crop=True, mouth_size=96)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_determinism_and_padding(name, clips, tiny_features):
    long, short = tiny_features[name]
    t_long, t_short, dim = SHAPES[name]
    assert long.shape == (t_long, dim) and short.shape == (t_short, dim)
    assert long.dtype == np.float32 and np.isfinite(long).all() and long.std() > 0
    rng_state = torch.get_rng_state()
    again = get_backbone(name, tiny=True)
    alone = [again.extract([clip])[0] for clip in clips]      # a fresh instance, each clip without padding
    assert torch.equal(torch.get_rng_state(), rng_state)      # building drew from a forked RNG
    np.testing.assert_allclose(alone[0], long, atol=1e-4)
    np.testing.assert_allclose(alone[1], short, atol=1e-4)
    other_seed = get_backbone(name, tiny=True, seed=1).extract([clips[1]])[0]
    assert not np.allclose(other_seed, short, atol=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_layer_option(name, clips, tiny_features):
    first = get_backbone(name, tiny=True, layer=1).extract([clips[1]])[0]
    assert len(first) == SHAPES[name][1]
    assert first.shape != tiny_features[name][1].shape or not np.allclose(first, tiny_features[name][1], atol=1e-3)
    with pytest.raises(ValueError, match="layer must be in 1..2"):
        get_backbone(name, tiny=True, layer=3).extract([clips[1]])


@pytest.mark.parametrize("name", NAMES)
def test_saved_weights_reload_and_random_init(name, clips, tiny_features, tmp_path):
    weights = save_tiny(name, tmp_path / name)
    loaded = get_backbone(name, weights=weights)
    for reloaded, tiny in zip(loaded.extract(list(clips)), tiny_features[name], strict=True):
        np.testing.assert_allclose(reloaded, tiny, atol=1e-6)
    assert loaded.fingerprint() != get_backbone(name, tiny=True).fingerprint()
    random = [get_backbone(name, weights=weights, random_init=True, seed=seed).extract([clips[1]])[0]
              for seed in (1, 1, 2)]
    assert random[0].shape == tiny_features[name][1].shape
    np.testing.assert_array_equal(random[0], random[1])
    assert not np.allclose(random[0], tiny_features[name][1], atol=1e-3)
    assert not np.allclose(random[0], random[2], atol=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_missing_weights_name_what_to_pass(name, tmp_path):
    with pytest.raises(FileNotFoundError, match="weights=PATH"):
        get_backbone(name)
    with pytest.raises(FileNotFoundError, match="absent"):
        get_backbone(name, weights=str(tmp_path / "absent"))


@pytest.mark.parametrize("name", NAMES)
def test_missing_modality(name, tmp_path):
    backbone = get_backbone(name, tiny=True)
    needs = ["audio"] * (name in AUDIO) + ["video"] * (name in VIDEO)
    for missing in needs:
        clip = make_clip(tmp_path / "bare.mp4", 32, seed=3, audio=missing != "audio", video=missing != "video")
        with pytest.raises(ClipError, match="bare.mp4") as info:
            backbone.extract([clip])
        assert info.value.reason == f"no_{missing}"


def test_too_short(tmp_path):
    with pytest.raises(ClipError, match="needs a window of 16") as info:
        get_backbone("videomae", tiny=True).extract([make_clip(tmp_path / "s.mp4", 15, seed=0)])
    assert info.value.reason == "too_short"
    tiny_audio = make_clip(tmp_path / "s.mp4", 1, seed=0)       # 640 samples: one whisper frame, no wav2vec2 pair
    assert get_backbone("whisper", tiny=True).extract([tiny_audio])[0].shape == (1, 64)
    with pytest.raises(ClipError, match="s.mp4") as info:
        get_backbone("wav2vec2", tiny=True).extract([tiny_audio])
    assert info.value.reason == "too_short"


def test_video_backbones_check_decoding(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", 16, seed=0)
    clip.frames = clip.frames[:, :112, :112]
    with pytest.raises(ValueError, match="224x224"):
        get_backbone("clip", tiny=True).extract([clip])
    clip = make_clip(tmp_path / "c.mp4", 16, seed=0)
    clip.fps = 30.0
    with pytest.raises(ValueError, match="25 fps"):
        get_backbone("videomae", tiny=True).extract([clip])


def test_preprocessing_matches_the_libraries(clips):
    """CLIP against open_clip's eval transform, VideoMAE against transformers' image processor, Whisper
    against whisper's own log-Mel and padding, Wav2Vec2's per-utterance normalisation (scale-free)."""
    import open_clip
    from PIL import Image
    from transformers import VideoMAEImageProcessor
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from whisper.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram, pad_or_trim

    short = clips[1]
    clip = get_backbone("clip", tiny=True)
    transform = open_clip.image_transform(224, is_train=False, mean=open_clip.OPENAI_DATASET_MEAN,
                                          std=open_clip.OPENAI_DATASET_STD)
    images = torch.stack([transform(Image.fromarray(frame)) for frame in short.frames[:4]])
    with torch.inference_mode():
        expected = clip.model("cpu")(images).numpy()
    np.testing.assert_allclose(clip.extract([short])[0][:4], expected, atol=1e-5)

    videomae = get_backbone("videomae", tiny=True)
    processor = VideoMAEImageProcessor(image_mean=IMAGENET_DEFAULT_MEAN, image_std=IMAGENET_DEFAULT_STD)
    pixels = processor(list(short.frames[:16]), return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        tokens = videomae.model("cpu")(pixel_values=pixels).last_hidden_state
    expected = tokens.reshape(8, -1, tokens.shape[-1]).mean(1).repeat_interleave(2, dim=0).numpy()
    np.testing.assert_allclose(videomae.extract([short])[0][:16], expected, atol=1e-5)

    whisper = get_backbone("whisper", tiny=True)
    mel = log_mel_spectrogram(torch.from_numpy(short.audio), 80, padding=N_SAMPLES)
    mel = pad_or_trim(mel[:, :len(short.audio) // 160], N_FRAMES)
    with torch.inference_mode():
        encoded = whisper.model("cpu")(mel[None])[0, : len(short.audio) // 320].numpy()
    np.testing.assert_allclose(whisper.extract([short])[0], encoded.reshape(-1, 2 * encoded.shape[1]), atol=1e-5)

    wav2vec2 = get_backbone("wav2vec2", tiny=True)
    louder = dataclasses.replace(short, audio=short.audio * 7)
    np.testing.assert_allclose(wav2vec2.extract([louder])[0], wav2vec2.extract([short])[0], atol=1e-4)


def test_long_audio_runs_in_30s_segments(tmp_path):
    """Whisper's encoder sees 30 s windows: 31 s of audio is two segments joined at 25 Hz (the last
    frame of the first differs from a 30 s clip's: its STFT window reaches past 30 s)."""
    clip = make_clip(tmp_path / "long.mp4", 775, seed=0, video=False)
    whisper = get_backbone("whisper", tiny=True)
    features = whisper.extract([clip])[0]
    assert features.shape == (775, 64)
    head = dataclasses.replace(clip, audio=clip.audio[:30 * 16000])
    np.testing.assert_allclose(whisper.extract([head])[0][:749], features[:749], atol=1e-5)


def test_hub_id_resolves_to_the_local_cache(tmp_path, monkeypatch, clips):
    import huggingface_hub.constants

    snapshot = tmp_path / "hub" / "models--org--tiny-w2v" / "snapshots" / ("a" * 40)
    save_tiny("wav2vec2", snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    backbone = get_backbone("wav2vec2", weights="org/tiny-w2v")
    assert Path(backbone.weights) == snapshot.resolve()
    np.testing.assert_allclose(backbone.extract([clips[1]])[0],
                               get_backbone("wav2vec2", tiny=True).extract([clips[1]])[0], atol=1e-6)
    with pytest.raises(FileNotFoundError, match="org/absent.*Hugging Face cache"):
        get_backbone("videomae", weights="org/absent")


def test_clip_tower_sizes_from_vit_l14_shapes():
    """The architecture read back from a real-size ViT-L/14 state dict (built on the meta device)."""
    import open_clip
    from open_clip.model import _build_vision_tower

    config = open_clip.get_model_config("ViT-L-14")
    with torch.device("meta"):
        tower = _build_vision_tower(config["embed_dim"], config["vision_cfg"], quick_gelu=True)
    embed_dim, vision_cfg = backbones.clip_vision_config(tower.state_dict())
    assert embed_dim == 768
    assert vision_cfg == dict(layers=24, width=1024, head_width=64, mlp_ratio=4.0, patch_size=14, image_size=224)


def test_feature_source_caches_and_fingerprints(clips, tmp_path, monkeypatch):
    loader = MediaLoader(MediaCache(tmp_path / "cache"))
    backbone = get_backbone("avhubert_av", tiny=True)
    calls = []
    forward = backbone.forward
    monkeypatch.setattr(backbone, "forward", lambda *args: calls.append(1) or forward(*args))

    first = FeatureSource(backbone, loader).features(list(clips))
    assert len(calls) == 1
    media_less = [Clip(ref=clip.ref, fps=25.0) for clip in clips]
    again = FeatureSource(backbone, loader).features(media_less)
    assert len(calls) == 1
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)

    other_layer = get_backbone("avhubert_av", tiny=True, layer=1)
    assert not FeatureSource(other_layer, loader).cached(clips[0].ref, False)
    weights = save_tiny("avhubert_av", tmp_path / "w")
    prints = {get_backbone("avhubert_av", tiny=True).fingerprint(), other_layer.fingerprint(),
              get_backbone("avhubert_av", tiny=True, seed=1).fingerprint(),
              get_backbone("avhubert_av", weights=weights).fingerprint(),
              get_backbone("avhubert_av", weights=weights, random_init=True).fingerprint(),
              get_backbone("avhubert_v", tiny=True).fingerprint()}
    assert len(prints) == 6
