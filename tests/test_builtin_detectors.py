"""The three built-in detectors on synthetic clips built from arrays (no decoding).

A synthetic talking face: a speech-like envelope drives both the dark inner-mouth area of the
mouth crops and the amplitude of the audio. Fakes break that link (shifted or unrelated audio
envelope) and, for the trained detector, also carry the cues of the demo corpus: band-limited
audio and a blurred, re-coloured mouth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, gaussian_filter1d
from scipy.signal import butter, sosfilt
from sklearn.metrics import roc_auc_score

from avbench.clips import Clip, ClipError, ClipRef
from avbench.detectors.avsync import AVSyncDetector
from avbench.detectors.handcrafted import HandcraftedDetector
from avbench.detectors.random_baseline import RandomDetector

FPS, SR = 25, 16000
SKIN = np.array([200.0, 150.0, 130.0])
INNER_MOUTH = np.array([60.0, 20.0, 25.0])


def ref(clip_id: str, label: int) -> ClipRef:
    return ClipRef(clip_id=clip_id, dataset="synthetic", path=Path(f"{clip_id}.mp4"), label=label)


def envelope(rng: np.random.Generator, n_frames: int) -> np.ndarray:
    """Syllable-like on/off envelope in [0, 1], a few bursts per second."""
    e = gaussian_filter1d(rng.standard_normal(n_frames + 40), 2.0)[20:-20]
    return np.clip(e / e.std(), 0.0, None) / 2.5


def mouth_crops(rng, env: np.ndarray, size: int = 64, fake_look: bool = False) -> np.ndarray:
    """Skin-coloured crops whose central dark ellipse opens with `env`."""
    yy, xx = np.mgrid[:size, :size] - size / 2
    crops = np.empty((len(env), size, size, 3))
    for t, e in enumerate(env):
        open_ = (xx / (size * 0.3)) ** 2 + (yy / (size * (0.04 + 0.3 * min(e, 1.0)))) ** 2 <= 1
        crops[t] = np.where(open_[..., None], INNER_MOUTH, SKIN)
    crops += rng.normal(0, 6, crops.shape)
    if fake_look:
        crops = gaussian_filter(crops, (0, 1.5, 1.5, 0)) + np.array([15.0, -10.0, 5.0])
    return np.clip(crops, 0, 255).astype(np.uint8)


def face_crops(rng, mouths: np.ndarray, size: int = 96) -> np.ndarray:
    """Textured skin with the (downscaled) mouth crop pasted in the lower centre."""
    texture = rng.normal(0, 12, (size, size, 3))
    faces = np.broadcast_to(SKIN + texture, (len(mouths), size, size, 3)).copy()
    faces[:, 56:88, 32:64] = mouths[:, ::2, ::2]
    faces += rng.normal(0, 3, faces.shape)
    return np.clip(faces, 0, 255).astype(np.uint8)


def speech(rng, env: np.ndarray, band_limited: bool = False) -> np.ndarray:
    """Noise carrier plus a harmonic buzz, amplitude-modulated by `env` at the frame rate."""
    n = len(env) * SR // FPS
    t = np.arange(n) / SR
    carrier = 0.3 * rng.standard_normal(n) + sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6))
    if band_limited:
        carrier = sosfilt(butter(8, 3500, fs=SR, output="sos"), carrier)
    amplitude = np.interp(t, np.arange(len(env)) / FPS, env)
    return (0.2 * amplitude * carrier + 0.002 * rng.standard_normal(n)).astype(np.float32)


def synthetic_clip(clip_id: str, label: int, seed: int, seconds: float = 4.0, shift: int = 0,
                   unrelated: bool = False, fake_look: bool = False) -> Clip:
    """`shift` > 0 delays the audio by that many frames; `unrelated` drives it by another envelope."""
    rng = np.random.default_rng(seed)
    n = int(seconds * FPS)
    env = envelope(rng, n + abs(shift))
    video_env = env[abs(shift):] if shift > 0 else env[:n]
    audio_env = envelope(rng, n) if unrelated else (env[:n] if shift > 0 else env[-shift:][:n])
    mouths = mouth_crops(rng, video_env, fake_look=fake_look)
    return Clip(ref=ref(clip_id, label), fps=FPS, audio=speech(rng, audio_env, band_limited=fake_look),
                mouths=mouths, faces=face_crops(rng, mouths))


def demo_like_set(n_per_class: int, seed: int) -> list[Clip]:
    """Half real; fakes cycle through desync, replaced audio and re-rendered mouth."""
    clips = []
    for i in range(n_per_class):
        clips.append(synthetic_clip(f"real{seed}_{i}", 0, seed * 1000 + i, seconds=2.0))
        kind = i % 3
        clips.append(synthetic_clip(f"fake{seed}_{i}", 1, seed * 1000 + 500 + i, seconds=2.0,
                                    shift=10 if kind == 0 else 0, unrelated=kind == 1, fake_look=kind != 0))
    return clips


# -- random -------------------------------------------------------------------------------------
def test_random_is_deterministic_order_free_and_seed_dependent():
    clips = [Clip(ref=ref(f"c{i}", i % 2)) for i in range(50)]
    first = {c.clip_id: RandomDetector(seed=3).score(c) for c in clips}
    reverse = {c.clip_id: RandomDetector(seed=3).score(c) for c in reversed(clips)}
    other = {c.clip_id: RandomDetector(seed=4).score(c) for c in clips}
    assert first == reverse
    assert all(0.0 <= s < 1.0 for s in first.values())
    assert sum(first[k] != other[k] for k in first) == len(clips)
    assert len(set(first.values())) == len(clips)
    assert RandomDetector(seed=3).config() == {"seed": 3}


def test_random_score_is_pinned_across_processes():
    # sha256(b"0\x00clip-a") starts 7610dc7618560892; its top 53 bits / 2**53
    assert RandomDetector(seed=0).score(Clip(ref=ref("clip-a", 0))) == 4154073289001665 / 2.0**53


def test_random_auc_is_chance():
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat([0, 1], 200))
    scores = [RandomDetector(seed=0).score(Clip(ref=ref(f"x{i}", int(y)))) for i, y in enumerate(labels)]
    assert abs(roc_auc_score(labels, scores) - 0.5) < 0.08


# -- avsync -------------------------------------------------------------------------------------
def test_avsync_separates_synced_from_shifted_and_unrelated_audio():
    detector = AVSyncDetector()
    clips = [synthetic_clip(f"r{i}", 0, i) for i in range(10)]
    clips += [synthetic_clip(f"s{i}", 1, 100 + i, shift=8 + i) for i in range(5)]
    clips += [synthetic_clip(f"u{i}", 1, 200 + i, unrelated=True) for i in range(5)]
    scores = [detector.score(c) for c in clips]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert roc_auc_score([c.ref.label for c in clips], scores) > 0.9


@pytest.mark.parametrize("shift", [-7, 0, 12])
@pytest.mark.parametrize("visual_feature", ["opening", "motion"])
def test_avsync_best_offset_recovers_the_shift(shift, visual_feature):
    features = AVSyncDetector(visual_feature=visual_feature).features(synthetic_clip("c", 1, 7, shift=shift))
    assert abs(features.best_offset - shift) <= 1
    assert features.best_corr > 0.5


def test_avsync_handles_silence_and_rejects_too_short_clips():
    clip = synthetic_clip("c", 0, 1)
    silent = Clip(ref=clip.ref, fps=FPS, audio=np.zeros_like(clip.audio), mouths=clip.mouths, audio_removed=True)
    detector = AVSyncDetector()
    assert detector.features(silent).best_corr == 0.0
    assert detector.score(silent) > 0.5
    short = Clip(ref=clip.ref, fps=FPS, audio=clip.audio[:SR // 5], mouths=clip.mouths[:5])
    with pytest.raises(ClipError) as err:
        detector.score(short)
    assert err.value.reason == "too_short" and "c.mp4" in err.value.message


# -- handcrafted --------------------------------------------------------------------------------
def test_handcrafted_learns_saves_and_reloads(tmp_path):
    train, val, test = demo_like_set(8, seed=1), demo_like_set(3, seed=2), demo_like_set(6, seed=3)
    detector = HandcraftedDetector().fit(train, val, seed=0)
    scores = [detector.score(c) for c in test]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert roc_auc_score([c.ref.label for c in test], scores) > 0.8
    assert float(detector.state_dict()["C"]) in detector.C_grid

    loaded = HandcraftedDetector.load(detector.save(tmp_path / "ckpt"))
    assert np.array_equal([loaded.score(c) for c in test], scores)
    assert loaded.config() == detector.config()


def test_handcrafted_config_and_default_C_without_two_val_classes():
    detector = HandcraftedDetector(C=0.5, max_seconds=2.0)
    assert set(detector.config()) == {"C", "C_grid", "max_iter", "n_bands", "face_size", "mouth_size", "max_seconds"}
    assert detector.input_spec.face_size == 96 and detector.input_spec.max_seconds == 2.0
    only_real = [c for c in demo_like_set(2, seed=4) if c.ref.label == 0]
    too_short = synthetic_clip("short", 1, 9, seconds=0.2)
    with pytest.warns(UserWarning, match=r"skipped 1 train clips: short \(too_short\)"):
        detector.fit(demo_like_set(4, seed=5) + [too_short], only_real, seed=0)
    assert float(detector.state_dict()["C"]) == 0.5


def test_handcrafted_refuses_to_score_unfitted():
    with pytest.raises(RuntimeError, match="not fitted"):
        HandcraftedDetector().score(synthetic_clip("c", 0, 1))


def test_window_detector_scores_clips_by_its_named_aggregation():
    from avbench.detector import Detector

    class Windows(Detector):
        name = "windows"

        def __init__(self, aggregation: str = "max"):
            self.aggregation = aggregation

        def score_windows(self, clip):
            return np.array([-2.0, 0.0, 3.0])

    clip = Clip(ref=ClipRef("c", "toy", Path("c.mp4"), 1))
    assert Windows("max").score(clip) == 3.0
    assert Windows("mean_logit").score(clip) == pytest.approx(1 / 3)
    assert Windows("lse").score(clip) == pytest.approx(np.log(np.mean(np.exp([-2.0, 0.0, 3.0]))))
    with pytest.raises(ValueError, match="mean_logit"):
        Windows("average").score(clip)
