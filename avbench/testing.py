"""Tiny media files for tests: a talking face that dlib finds, and every kind of broken input.

Everything is synthesised from `skimage.data.astronaut()` and sine tones, so tests need no data
download. `sample_media(directory)` writes the whole set; the building blocks are public too.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avbench.detector import Detector, InputSpec
from avbench.detectors.random_baseline import RandomDetector
from avbench.encode import write_media
from avbench.loader import MediaLoader

#: In skimage.data.astronaut(): centre of dlib's face box and mean of the mouth landmarks (48-67).
ASTRONAUT_FACE_CENTRE = (222.5, 126.5)
ASTRONAUT_MOUTH_CENTRE = (223.0, 145.5)


class Counter:
    """Wraps a function and counts its calls (tests monkeypatch it over what they count)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


@dataclass(frozen=True)
class TalkingFace:
    frames: np.ndarray  # (T, size, size, 3) uint8
    audio: np.ndarray  # (N,) float32
    fps: float
    sample_rate: int
    mouth_centres: np.ndarray  # (T, 2) float: x, y of the painted mouth in each frame


def talking_face(seconds: float = 1.0, fps: float = 25.0, size: int = 160, sample_rate: int = 16000,
                 drift: int = 8, syllable_hz: float = 4.0) -> TalkingFace:
    """The astronaut's face drifting sideways by up to `drift` px, its mouth opening in time with speech.

    One envelope (syllables at `syllable_hz`) sets both the height of a dark mouth opening painted over
    the lips and the loudness of a voiced tone, so audio and video are in sync. `size` >= 128 keeps the
    face large enough (~87 px) for dlib's detector.
    """
    from skimage.data import astronaut
    from skimage.draw import ellipse

    image = astronaut()
    n_frames = round(seconds * fps)
    cx, cy = ASTRONAUT_FACE_CENTRE
    frames, mouths = [], []
    for k in range(n_frames):
        t = k / fps
        x0 = round(cx - size / 2 + drift * math.sin(math.pi * t))
        y0 = round(cy - size / 2)
        frame = image[y0:y0 + size, x0:x0 + size].copy()
        mx, my = ASTRONAUT_MOUTH_CENTRE[0] - x0, ASTRONAUT_MOUTH_CENTRE[1] - y0
        opening = 1.0 + 6.0 * _envelope(t, syllable_hz)
        rr, cc = ellipse(my, mx, opening, 14.0, shape=frame.shape[:2])
        frame[rr, cc] = (70, 20, 25)
        frames.append(frame)
        mouths.append((mx, my))
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    harmonics = (1, 2, 3)
    voice = sum(np.sin(2 * np.pi * 140.0 * h * t) / h for h in harmonics) / sum(1 / h for h in harmonics)
    audio = (0.3 * _envelope(t, syllable_hz) * voice).astype(np.float32)
    return TalkingFace(np.stack(frames), audio, fps, sample_rate, np.array(mouths, dtype=np.float64))


def _envelope(t, syllable_hz: float):
    return np.maximum(0.0, np.sin(2 * np.pi * syllable_hz * np.asarray(t)))


def truncate(source: Path | str, path: Path | str, fraction: float = 0.5) -> Path:
    """Copy the first `fraction` of `source`'s bytes to `path`, as an interrupted download would."""
    data = Path(source).read_bytes()
    path = Path(path)
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def without_frames(source_mkv: Path | str, path: Path | str) -> Path:
    """Cut a Matroska file a few bytes into its first cluster: streams declared, not one frame stored."""
    data = Path(source_mkv).read_bytes()
    cluster = data.find(bytes.fromhex("1f43b675"))  # EBML id of a Cluster
    if cluster < 0:
        raise ValueError(f"{source_mkv}: no Matroska cluster found")
    path = Path(path)
    path.write_bytes(data[: cluster + 8])
    return path


def random_bytes(path: Path | str, n: int = 4096, seed: int = 0) -> Path:
    path = Path(path)
    path.write_bytes(np.random.default_rng(seed).bytes(n))
    return path


def vfr_times(seconds: float = 2.0) -> np.ndarray:
    """Frame times with gaps alternating 60 ms and 20 ms (25 fps on average): a VFR schedule."""
    gaps = np.resize([0.06, 0.02], round(seconds / 0.04) - 1)
    return np.concatenate([[0.0], np.cumsum(gaps)])


def sample_media(directory: Path | str, seconds: float = 1.0, size: int = 160) -> dict[str, Path]:
    """Write one file of each kind tests need into `directory`; returns {kind: path}.

    talking (mp4, face + speech), talking_mkv (the same in Matroska), speech_wav (its audio
    alone), video_only, audio_only, empty, truncated (moov index at the end: nothing decodes),
    truncated_prefix (faststart: the first part decodes), faststart (the valid file that one is
    cut from), no_frames (streams but no frame), random (bytes named .mp4), vfr (variable frame
    rate, video only).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    face = talking_face(seconds=seconds, size=size)
    paths = {
        "talking": write_media(directory / "talking.mp4", face.frames, face.fps, face.audio, face.sample_rate),
        "talking_mkv": write_media(directory / "talking.mkv", face.frames, face.fps, face.audio, face.sample_rate),
        "speech_wav": write_media(directory / "speech.wav", audio=face.audio, sample_rate=face.sample_rate),
        "video_only": write_media(directory / "video_only.mp4", face.frames, face.fps),
        "audio_only": write_media(directory / "audio_only.mp4", audio=face.audio, sample_rate=face.sample_rate),
        "faststart": write_media(directory / "faststart.mp4", face.frames, face.fps, face.audio,
                                 face.sample_rate, faststart=True),
        "random": random_bytes(directory / "random.mp4"),
        "vfr": write_media(directory / "vfr.mp4", face.frames[: len(vfr_times(seconds))], times=vfr_times(seconds)),
    }
    paths["empty"] = directory / "empty.mp4"
    paths["empty"].write_bytes(b"")
    paths["truncated"] = truncate(paths["talking"], directory / "truncated.mp4")
    paths["no_frames"] = without_frames(paths["talking_mkv"], directory / "no_frames.mkv")
    paths["truncated_prefix"] = truncate(paths["faststart"], directory / "truncated_prefix.mp4", 0.75)
    return paths


class SabotagedLoader(MediaLoader):
    """A MediaLoader that kills its process on files whose name contains `crash` (as a decoder's
    segfault would) and never returns on those containing `hang`: what worker isolation must survive."""

    def load(self, ref, spec, remove_audio=False):
        if "crash" in ref.path.name:
            os.abort()
        if "hang" in ref.path.name:
            time.sleep(3600)
        return super().load(ref, spec, remove_audio)


class ScorerKiller(RandomDetector):
    """The random baseline, except that it kills its process on clips whose file name contains `crash`
    (as a segfault in a detector's native code would): what Ray's scoring actors must survive."""

    name = "scorer_killer"

    def score(self, clip):
        if "crash" in clip.ref.path.name:
            os.abort()
        return super().score(clip)


class PoolSpy(Detector):
    """A detector that learns from an unlabelled pool, for the tests of the transductive hook: it fits a
    loudness threshold on the training clips, pseudo-labels every pool clip by it (one round), and
    writes what it was handed of each pool clip (every field of its ref, the clip's own fields) to the
    JSON file `spy_log`, so a test can prove that no label reached it."""

    name = "pool_spy"
    trains = True
    uses_pool = True
    scores_are_probabilities = False
    input_spec = InputSpec(fps=None, audio=True)

    def __init__(self, spy_log: str = "pool_spy.json"):
        self.spy_log = spy_log
        self.threshold = 0.0

    @staticmethod
    def loudness(clip) -> float:
        return float(np.sqrt(np.mean(np.square(clip.audio)))) if clip.audio is not None and len(clip.audio) else 0.0

    def fit(self, train, val, seed, device="cpu"):
        self.threshold = float(np.median([self.loudness(clip) for clip in train]))
        return self

    def adapt(self, train, val, pool, seed, device="cpu"):
        seen, labels = [], {}
        for token, clip in pool.clips():
            seen.append({"token": token, "ref": {k: str(v) for k, v in vars(clip.ref).items()},
                         "clip": sorted(k for k, v in vars(clip).items() if v is not None and k != "ref")})
            labels[token] = int(self.loudness(clip) > self.threshold)
        Path(self.spy_log).write_text(json.dumps({"tokens": pool.tokens, "seen": seen}))
        return [labels]

    def score(self, clip) -> float:
        return self.loudness(clip) - self.threshold

    def state_dict(self):
        return {"threshold": np.array(self.threshold)}

    def load_state_dict(self, state):
        self.threshold = float(state["threshold"])
