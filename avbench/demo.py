"""A small talking-head corpus that avbench makes by itself, so the whole harness runs before any dataset is owned.

Faces are real photographs that ship inside scikit-image (its LFW subset, tinted after the skin of its
astronaut portrait); speech comes from a source-filter synthesiser; the mouth opens frame by frame with
the speech's articulation. Fakes mirror real datasets: FakeAVCeleb's RVFA (`fake_audio`), FVRA
(`lipsync`) and FVFA (`both`), and AV-Deepfake1M-style audio-visual shifts (`desync`). Each fake keeps
an honest cue: the lips stop matching the sound, a cloned voice is band-limited and spectrally smooth,
and a re-rendered mouth is a blurred, colour-shifted patch without the camera's noise.
Everything is seeded: one seed gives the same metadata and the same pixels.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
from scipy import ndimage, signal

from avbench.encode import write_media
from avbench.faces import largest_face
from avbench.io import atomic_write

SAMPLE_RATE = 16000
#: Speech is synthesised this far beyond both ends of a clip, so a shifted track is real continuation.
MARGIN_S = 0.6
DESYNC_RANGE_S = (0.3, 0.6)
#: Number of faces among scikit-image's `lfw_subset()` (the other 100 images are not faces).
LFW_FACES = 100
#: How far the lower lip drops with the mouth wide open, as a fraction of the mouth's width.
JAW_DROP = 0.3


@dataclass(frozen=True)
class Category:
    label: int
    video_label: int
    audio_label: int
    method: str


CATEGORIES = {
    "real": Category(0, 0, 0, ""),
    "fake_audio": Category(1, 0, 1, "voice_clone"),
    "lipsync": Category(1, 1, 0, "lipsync_gan"),
    "both": Category(1, 1, 1, "lipsync_gan+voice_clone"),
    "desync": Category(1, 0, 0, "av_shift"),
}

#: metadata.csv: the first columns every dataset has, then what only a synthetic corpus can know:
#: which LFW image gave the face, whose voice speaks, and how late the audio runs (seconds).
COLUMNS = (
    "path", "label", "video_label", "audio_label", "method", "category", "identity", "group", "split",
    "source_face", "voice_identity", "audio_offset_s",
)

# Peterson & Barney (1952), adult male averages: F1, F2, F3 in Hz, then how far the jaw opens (0-1).
VOWELS = np.array([
    [730, 1090, 2440, 1.00],  # a
    [660, 1720, 2410, 0.85],  # ae
    [570, 840, 2410, 0.70],   # o
    [530, 1840, 2480, 0.60],  # e
    [490, 1350, 1690, 0.50],  # er
    [300, 870, 2240, 0.30],   # u
    [270, 2290, 3010, 0.25],  # i
])
FORMANT_BANDWIDTHS = (80.0, 100.0, 140.0, 200.0, 250.0)
#: F4 and F5 barely move with the vowel; they scale only with the length of the vocal tract.
UPPER_FORMANTS = (3300.0, 4200.0)


@dataclass(frozen=True)
class Voice:
    f0: float  # mean pitch, Hz
    tract: float  # formant scale: a shorter vocal tract has higher formants
    jitter: float  # cycle-to-cycle pitch perturbation, fraction of f0
    shimmer: float  # cycle-to-cycle amplitude perturbation
    breath: float  # aspiration noise relative to voicing
    snr_db: float  # speech over room noise

    def synthetic(self) -> "Voice":
        """The same timbre as a TTS or voice-conversion model renders it: too regular and too clean."""
        return replace(self, jitter=0.0, shimmer=0.0, breath=0.005, snr_db=70.0)


@dataclass(frozen=True)
class Speech:
    audio: np.ndarray  # (N,) float32 in [-1, 1]
    articulation: np.ndarray  # (N,) float32 in [0, 1]: how far the jaw is open


@dataclass(frozen=True)
class Actor:
    """One identity: a face at rest on its background, its landmarks and its voice."""

    identity: str
    lfw_index: int
    voice: Voice
    background: np.ndarray  # (S, S, 3) float32
    face: np.ndarray  # (S, S, 4) float32: premultiplied RGB and alpha of the head at rest
    landmarks: np.ndarray  # (68, 2) float32, dlib on the still frame
    jaw_box: tuple[int, int, int, int]  # y0, y1, x0, x1: where the jaw moves
    jaw: np.ndarray  # (y1 - y0, x1 - x0) float32: how much of the mouth opening each pixel follows (0-1)

    @property
    def mouth(self) -> tuple[float, float, float]:
        return mouth_geometry(self.landmarks)


def mouth_geometry(landmarks: np.ndarray) -> tuple[float, float, float]:
    """x, y of the mouth centre between the lips, and the mouth's width from corner to corner."""
    return (float(landmarks[[48, 54], 0].mean()), float(landmarks[60:68, 1].mean()),
            float(landmarks[54, 0] - landmarks[48, 0]))


# -- speech ----------------------------------------------------------------------------------------

def synthesise_speech(voice: Voice, seconds: float, rng: np.random.Generator, prosody: float = 1.0) -> Speech:
    """Syllables at ~4.5 Hz with pauses, glottal pulses through moving formants, consonant noise, room noise,
    through a microphone and codec that lose the top of the band.

    The articulation is not a copy of the loudness: it shares the syllables' timing, but how wide each
    one opens the mouth varies apart from how loud it is, and the mouth moves up to 60 ms before the
    sound, as in real talking faces.
    """
    n = int(round(seconds * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    syllable = np.zeros(n)  # rises and falls once per syllable
    envelope = np.zeros(n)
    frication = np.zeros(n)
    centres, targets, gestures = [], [], []
    for start, end, vowel, stress in _syllables(seconds, rng):
        i0, i1 = int(start * SAMPLE_RATE), min(int(end * SAMPLE_RATE), n)
        if i1 <= i0:
            continue
        syllable[i0:i1] = np.sin(np.pi * np.arange(i1 - i0) / (i1 - i0)) ** 0.7
        envelope[i0:i1] = stress * syllable[i0:i1]
        if rng.random() < 0.5:  # a fricative or stop burst opens the syllable
            burst = min(int(rng.uniform(0.02, 0.07) * SAMPLE_RATE), i1 - i0)
            frication[i0:i0 + burst] = 0.3 * stress * np.hanning(burst)
        centres.append((start + end) / 2)
        targets.append(VOWELS[vowel])
        lips_closed = rng.random() < 0.08  # a nasal hum: voice without the jaw opening
        gestures.append(0.1 if lips_closed else min(VOWELS[vowel][3] * rng.uniform(0.5, 1.5), 1.0))
    targets = np.array(targets)
    formants = [np.interp(t, centres, targets[:, k]) * voice.tract for k in range(3)]
    openness = np.interp(t, centres, gestures)

    drift = np.interp(t, np.linspace(0, seconds, 8), rng.normal(0, 0.03, 8))
    f0 = voice.f0 * (1 - 0.1 * t / seconds) * (1 + prosody * (0.15 * (envelope - 0.4) + drift))
    f0 *= 1 + voice.jitter * _smooth_noise(rng, n, 0.004)
    phase = np.cumsum(f0) / SAMPLE_RATE
    cycle = phase.astype(np.int64)
    source = np.diff(_glottal_pulse(phase - cycle), prepend=0.0)
    source *= 1 + voice.shimmer * rng.normal(size=cycle[-1] + 1)[cycle]
    source /= np.sqrt(np.mean(source**2)) + 1e-12
    source += voice.breath * rng.normal(size=n)

    voiced = _formant_filter(source * envelope, formants, voice.tract)
    hiss = signal.sosfilt(_FRICATION_BAND, rng.normal(size=n)) * frication
    speech = voiced / (np.sqrt(np.mean(voiced**2)) + 1e-12) + 3 * hiss
    room = signal.lfilter([1.0], [1.0, -0.95], rng.normal(size=n))
    room *= np.sqrt(np.mean(speech**2) / np.mean(room**2)) * 10 ** (-voice.snr_db / 20)
    channel = signal.butter(4, rng.uniform(5000, 7900), fs=SAMPLE_RATE, output="sos")
    audio = signal.sosfilt(channel, speech + room)
    audio *= 0.6 / np.abs(audio).max()
    lead = int(rng.uniform(0.0, 0.06) * SAMPLE_RATE)
    articulation = np.concatenate([(syllable * (0.3 + 0.7 * openness))[lead:], np.zeros(lead)])
    return Speech(audio.astype(np.float32), articulation.astype(np.float32))


_FRICATION_BAND = signal.butter(4, (2500, 7000), btype="bandpass", fs=SAMPLE_RATE, output="sos")


def clone_voice(voice: Voice, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """New speech in `voice` as a TTS / voice-conversion system renders it: flat prosody, no jitter,
    over-smoothed spectrum (a vocoder's averaging), band-limited, almost no noise floor."""
    speech = synthesise_speech(voice.synthetic(), seconds, rng, prosody=0.5).audio
    _, _, spec = signal.stft(speech, SAMPLE_RATE, nperseg=512, noverlap=384)
    magnitude = ndimage.uniform_filter(np.abs(spec), size=(3, 3))
    _, smooth = signal.istft(magnitude * np.exp(1j * np.angle(spec)), SAMPLE_RATE, nperseg=512, noverlap=384)
    lowpass = signal.butter(8, rng.uniform(4000, 6500), fs=SAMPLE_RATE, output="sos")
    audio = signal.sosfiltfilt(lowpass, smooth[: len(speech)])
    return (audio * 0.6 / np.abs(audio).max()).astype(np.float32)


def _syllables(seconds: float, rng: np.random.Generator) -> list[tuple[float, float, int, float]]:
    """(start, end, vowel index, stress) of syllables filling `seconds`, with short pauses between phrases.

    A third of the pauses hold a silent mouth movement (a breath, lips parting): a syllable of stress 0.
    """
    out: list[tuple[float, float, int, float]] = []
    t = rng.uniform(0.0, 0.08)
    while t < seconds:
        if out and rng.random() < 0.15:
            pause = rng.uniform(0.15, 0.35)
            if rng.random() < 0.3:
                out.append((t, t + pause, int(rng.integers(len(VOWELS))), 0.0))
            t += pause
        duration = rng.uniform(0.17, 0.27)
        out.append((t, t + duration, int(rng.integers(len(VOWELS))), rng.uniform(0.55, 1.0)))
        t += duration
    return out


def _glottal_pulse(fraction: np.ndarray) -> np.ndarray:
    """Rosenberg's glottal flow over one cycle: opens for 40% of it, closes in 20%, then stays shut."""
    opening = 0.5 * (1 - np.cos(np.pi * fraction / 0.4))
    closing = np.cos(0.5 * np.pi * (fraction - 0.4) / 0.2)
    return np.where(fraction < 0.4, opening, np.where(fraction < 0.6, closing, 0.0))


def _formant_filter(x: np.ndarray, formants: list[np.ndarray], tract: float, block: int = 320) -> np.ndarray:
    """Cascade of two-pole resonators (Klatt's cascade branch): F1-F3 move every 20 ms, F4 and F5 stay."""
    for track, bandwidth in zip(formants, FORMANT_BANDWIDTHS):
        y = np.empty_like(x)
        state = np.zeros(2)
        for i in range(0, len(x), block):
            b, a = _resonator(track[i], bandwidth)
            y[i:i + block], state = signal.lfilter(b, a, x[i:i + block], zi=state)
        x = y
    for centre, bandwidth in zip(UPPER_FORMANTS, FORMANT_BANDWIDTHS[3:]):
        x = signal.lfilter(*_resonator(centre * tract, bandwidth), x)
    return x


def _resonator(centre: float, bandwidth: float) -> tuple[list[float], list[float]]:
    """b, a of a two-pole resonance at `centre` Hz with unit gain at 0 Hz."""
    r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
    c = 2 * r * np.cos(2 * np.pi * centre / SAMPLE_RATE)
    return [1 - c + r * r], [1.0, -c, r * r]


def _smooth_noise(rng: np.random.Generator, n: int, period_s: float) -> np.ndarray:
    """Unit normal values `period_s` apart, linearly joined: a random wobble without clicks."""
    knots = np.arange(0, n + period_s * SAMPLE_RATE, period_s * SAMPLE_RATE)
    return np.interp(np.arange(n), knots, rng.normal(size=len(knots)))


def per_frame(x: np.ndarray, frames: int, fps: float) -> np.ndarray:
    """Mean of a 16 kHz signal over each video frame's interval."""
    edges = np.minimum(np.round(np.arange(frames + 1) * SAMPLE_RATE / fps).astype(int), len(x))
    return np.add.reduceat(x, edges[:-1]) / np.maximum(np.diff(edges), 1)


# -- faces -----------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, np.ndarray]:
    """The LFW faces (100, 25, 25) in [0, 1], and the astronaut's skin colour as an RGB multiplier of luma."""
    from skimage import data

    faces = data.lfw_subset()[:LFW_FACES]
    cheeks = data.astronaut()[100:150, 195:250].reshape(-1, 3).astype(np.float64)  # inside dlib's face box
    skin = np.median(cheeks, axis=0)
    return faces, skin / (skin @ [0.299, 0.587, 0.114])


def make_actor(identity: str, lfw_index: int, size: int, rng: np.random.Generator) -> Actor | None:
    """Upscale, tint and place one LFW face on a background.

    None if dlib misses the face at rest, or in slightly blurred frames (as a codec leaves them) where
    the head moved a pixel with the mouth open: a face the detector only just finds would be lost in
    many frames.
    """
    from skimage.transform import resize

    faces, skin = _photos()
    side = 2 * int(round(0.4 * size))
    gray = resize(faces[lfw_index], (side, side), order=3)
    gray = ndimage.gaussian_filter(gray, 0.5 * side / faces.shape[1])  # LFW's 25 px are blocky
    low, high = np.percentile(gray, [1, 99])
    gray = np.clip(0.05 + 0.9 * (gray - low) / (high - low), 0, 1)  # LFW's exposure varies: even it out
    tone = skin ** rng.uniform(0.7, 1.6)  # from paler to more saturated than the astronaut's skin
    rgb = np.clip(255 * rng.uniform(0.7, 1.0) * gray[..., None] * tone, 0, 255)
    u = np.linspace(-1, 1, side)
    radius = (np.abs(u[:, None]) ** 3 + np.abs(u[None, :]) ** 3) ** (1 / 3)
    alpha = np.clip((1 - radius) / 0.12, 0, 1)
    face = np.zeros((size, size, 4), np.float32)
    at = (size - side) // 2
    face[at:at + side, at:at + side, :3] = rgb * alpha[..., None]
    face[at:at + side, at:at + side, 3] = alpha

    background = _background(size, rng)
    still = face[..., :3] + background * (1 - face[..., 3:])
    at_rest = largest_face(np.round(still).astype(np.uint8))
    if at_rest is None:
        return None
    actor = Actor(identity, lfw_index, _voice(rng), background, face, at_rest.landmarks,
                  *_jaw_weight(at_rest.landmarks, size))
    probes = render(actor, np.array([1, 1, 0.5, 0.5]), np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]]), rng)
    return actor if all(largest_face(ndimage.gaussian_filter(p, (1, 1, 0))) is not None for p in probes) else None


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A muted vertical gradient with soft blotches, like an out-of-focus room."""
    top, bottom = (rng.uniform(50, 200, 3) * 0.5 + 64 for _ in range(2))
    ramp = np.linspace(0, 1, size)[:, None, None]
    blotches = ndimage.zoom(rng.normal(0, 12, (4, 4, 3)), (size / 4, size / 4, 1), order=3)
    return (top * (1 - ramp) + bottom * ramp + blotches[:size, :size]).astype(np.float32)


def _voice(rng: np.random.Generator) -> Voice:
    low = rng.random() < 0.5
    return Voice(
        f0=rng.uniform(95, 140) if low else rng.uniform(170, 235),
        tract=rng.uniform(0.95, 1.05) if low else rng.uniform(1.1, 1.2),
        jitter=rng.uniform(0.005, 0.015),
        shimmer=rng.uniform(0.03, 0.08),
        breath=rng.uniform(0.02, 0.06),
        snr_db=rng.uniform(28, 50),
    )


def _smoothstep(v: np.ndarray, a: float, b: float) -> np.ndarray:
    s = np.clip((v - a) / (b - a), 0, 1)
    return s * s * (3 - 2 * s)


def _jaw_weight(landmarks: np.ndarray, size: int) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """1 on the lower lip and chin below the mouth centre, fading sideways past the corners and below the chin;
    returned as the box where it is not 0 and the weight inside that box."""
    x_mid, y_lips, width = mouth_geometry(landmarks)
    chin = float(landmarks[8, 1])
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    across = np.clip(np.abs(x - x_mid) / (1.1 * width), 0, 1)
    sideways = 0.5 * (1 + np.cos(np.pi * across))
    down = _smoothstep(y, y_lips - 1, y_lips + 1.5) * (1 - _smoothstep(y, chin, chin + 0.4 * width))
    weight = sideways * down
    rows, cols = np.flatnonzero(weight.any(1)), np.flatnonzero(weight.any(0))
    box = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    return box, weight[box[0]:box[1], box[2]:box[3]].astype(np.float32)


# -- video -----------------------------------------------------------------------------------------

def head_motion(frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """(T, 2) sub-pixel dx, dy: two slow sways per axis, about a pixel in all."""
    t = np.arange(frames)[:, None] / fps
    freq = rng.uniform(0.2, 1.2, (2, 2))
    phase = rng.uniform(0, 2 * np.pi, (2, 2))
    amp = np.array([[0.8, 0.3], [0.5, 0.2]])
    return np.stack([(amp[a] * np.sin(2 * np.pi * freq[a] * t + phase[a])).sum(1) for a in range(2)], axis=1)


def render(actor: Actor, opening: np.ndarray, motion: np.ndarray, rng: np.random.Generator,
           lipsync_patch: bool = False) -> np.ndarray:
    """(T, S, S, 3) uint8 frames of the actor whose jaw opens by `opening` (0-1, one value per frame).

    With `lipsync_patch`, the mouth region is pasted back the way lip-sync generators do it: slightly
    blurred, colour-shifted and without the camera noise of the rest of the frame.
    """
    size = actor.face.shape[0]
    width = actor.mouth[2]
    y0, y1, x0, x1 = actor.jaw_box
    rows = np.arange(y0, y1, dtype=np.float32)[:, None]
    cols = np.arange(x0, x1)
    tint = 1 + rng.uniform(-0.06, 0.06, 3)  # of a pasted mouth
    out = np.empty((len(opening), size, size, 3), np.uint8)
    for k, (amount, (dx, dy)) in enumerate(zip(np.clip(opening, 0, 1), motion)):
        drop = amount * JAW_DROP * width
        layer = _translate(actor.face, dx, dy)
        # the lower lip and jaw come down: each pixel there shows what was `drop * jaw` pixels above it
        source = rows - drop * actor.jaw
        above = np.minimum(np.floor(source).astype(np.intp), size - 2)
        below = (source - above)[..., None]
        layer[y0:y1, x0:x1] = layer[above, cols] * (1 - below) + layer[above + 1, cols] * below
        _mouth_cavity(layer, actor, drop, dx, dy)
        frame = layer[..., :3] + actor.background * (1 - layer[..., 3:])
        frame += _camera_noise(rng, frame.shape)
        if lipsync_patch:
            _paste_mouth(frame, actor, dx, dy, tint)
        out[k] = np.clip(np.rint(frame), 0, 255)
    return out


def _camera_noise(rng: np.random.Generator, shape: tuple[int, ...], std: float = 2.0) -> np.ndarray:
    """Uniform sensor noise of `std` grey levels, drawn as bytes: several times cheaper than normal draws."""
    half_width = np.float32(std * 3**0.5)
    return rng.integers(0, 256, shape, dtype=np.uint8) * (2 * half_width / 255) - half_width


def _translate(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """`image` moved right by dx and down by dy pixels, bilinear. It wraps around: keep its border empty."""
    whole_y, whole_x = int(np.floor(dy)), int(np.floor(dx))
    fy, fx = dy - whole_y, dx - whole_x
    out = np.zeros_like(image)
    for step_y, weight_y in ((0, 1 - fy), (1, fy)):
        for step_x, weight_x in ((0, 1 - fx), (1, fx)):
            out += np.float32(weight_y * weight_x) * np.roll(image, (whole_y + step_y, whole_x + step_x), (0, 1))
    return out


def _mouth_cavity(layer: np.ndarray, actor: Actor, drop: float, dx: float, dy: float) -> None:
    """Paint the dark inside of the mouth into the gap the lowered lip leaves (in place, premultiplied)."""
    if drop < 0.5:
        return
    x_mid, y_lips, width = actor.mouth
    cx, cy = x_mid + dx, y_lips + dy + drop / 2
    ax, ay = 0.36 * width, drop / 2 + 0.5
    x0, x1 = int(cx - ax - 2), int(cx + ax + 3)
    y0, y1 = int(cy - ay - 2), int(cy + ay + 3)
    y, x = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    rho = np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2)
    alpha = np.clip((1 - rho) * ay / 0.8, 0, 1)[..., None]
    colour = np.array([50.0, 16.0, 20.0]) * (0.5 + 0.5 * np.clip(rho, 0, 1))[..., None]
    region = layer[y0:y1, x0:x1]
    region[..., :3] = region[..., :3] * (1 - alpha) + colour * alpha * region[..., 3:]


def _paste_mouth(frame: np.ndarray, actor: Actor, dx: float, dy: float, tint: np.ndarray) -> None:
    """Replace the mouth region (in place) by a blurred, colour-scaled copy, feathered into the frame."""
    x_mid, y_lips, width = actor.mouth
    x0, x1 = int(round(x_mid + dx - 0.8 * width)), int(round(x_mid + dx + 0.8 * width))
    y0, y1 = int(round(y_lips + dy - 0.5 * width)), int(round(y_lips + dy + 0.8 * width))
    region = frame[y0:y1, x0:x1]
    fake = ndimage.gaussian_filter(region, sigma=(1.2, 1.2, 0)) * tint
    feather = np.outer(_feather(y1 - y0), _feather(x1 - x0))[..., None]
    region[:] = region * (1 - feather) + fake * feather


def _feather(n: int) -> np.ndarray:
    """n weights: 0 at both ends, rising smoothly to 1 over a quarter of n."""
    edge = max(n // 4, 1)
    ramp = _smoothstep(np.arange(n, dtype=np.float32), 0, edge)
    return np.minimum(ramp, ramp[::-1])


# -- the corpus ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Take:
    """One clip of an identity before it is written; a fake has the name of the real take it comes from."""

    category: str
    name: str
    frames: np.ndarray
    audio: np.ndarray
    voice_of: str
    audio_offset_s: float = 0.0


def generate_corpus(root: Path | str, *, identities: int = 24, real_per_identity: int = 3, seconds: float = 2.0,
                    fps: int = 25, size: int = 160, seed: int = 0) -> Path:
    """Write the demo corpus under `root`: <category>/<identity>/<clip>.mp4, metadata.csv, README.txt.

    Per identity: `real_per_identity` real clips, then one clip of each fake category, each derived from
    a real clip of the same identity (column `group`). metadata.csv is written last, so a corpus cut
    short has none and is simply generated again. The defaults take about 20 s on 2 CPU cores.
    """
    if identities < 2:
        raise ValueError("the demo corpus needs at least 2 identities: a cloned voice belongs to another one")
    if real_per_identity < 1 or seconds <= 0 or fps <= 0:
        raise ValueError("real_per_identity, seconds and fps must be positive")
    if size % 2 or size < 96:
        raise ValueError(f"size must be even and at least 96 pixels (H.264 and dlib's face detector); got {size}")
    root = Path(root)
    seeds = np.random.SeedSequence(seed).spawn(identities + 1)
    rngs = [np.random.default_rng(s) for s in seeds[1:]]
    actors = _cast(identities, size, np.random.default_rng(seeds[0]), rngs)

    rows = []
    for i, (actor, rng) in enumerate(zip(actors, rngs)):
        donor = actors[(i + 1 + int(rng.integers(identities - 1))) % identities]
        for take in takes(actor, donor, rng, real_per_identity, seconds, fps):
            path = f"{take.category}/{actor.identity}/{take.name}.mp4"
            write_media(root / path, take.frames, fps, take.audio, SAMPLE_RATE)
            kind = CATEGORIES[take.category]
            rows.append({
                "path": path, "label": kind.label, "video_label": kind.video_label, "audio_label": kind.audio_label,
                "method": kind.method, "category": take.category, "identity": actor.identity,
                "group": f"real/{actor.identity}/{take.name}", "split": "", "source_face": actor.lfw_index,
                "voice_identity": take.voice_of, "audio_offset_s": f"{take.audio_offset_s:.3f}",
            })

    rows.sort(key=lambda r: r["path"])
    (root / "README.txt").write_text(_readme(identities, real_per_identity, seconds, fps, size, seed, len(rows)))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(root / "metadata.csv") as fh:
        fh.write(buffer.getvalue())
    return root


def takes(actor: Actor, donor: Actor, rng: np.random.Generator, real_per_identity: int, seconds: float,
          fps: float) -> Iterator[Take]:
    """An identity's real takes, then one fake of each category, each made from one of those takes."""
    n_frames = int(round(seconds * fps))
    n_samples = int(round(seconds * SAMPLE_RATE))
    start = int(round(MARGIN_S * SAMPLE_RATE))
    length = seconds + 2 * MARGIN_S

    def window(x: np.ndarray, offset: int = 0) -> np.ndarray:
        return x[start + offset:start + offset + n_samples]

    def opening(speech: Speech) -> np.ndarray:
        return per_frame(window(speech.articulation), n_frames, fps)

    reals = []
    for k in range(real_per_identity):
        speech = synthesise_speech(actor.voice, length, rng)
        motion = head_motion(n_frames, fps, rng)
        frames = render(actor, opening(speech), motion, rng)
        reals.append((f"c{k}", speech, motion, frames))
        yield Take("real", f"c{k}", frames, window(speech.audio), actor.identity)

    for j, category in enumerate(c for c in CATEGORIES if c != "real"):
        name, speech, motion, frames = reals[j % real_per_identity]
        audio, voice_of, offset_s = window(speech.audio), actor.identity, 0.0
        if category in ("fake_audio", "both"):
            audio, voice_of = window(clone_voice(donor.voice, length, rng)), donor.identity
        if category in ("lipsync", "both"):
            driver = synthesise_speech(actor.voice, length, rng)  # an utterance nobody hears
            frames = render(actor, opening(driver), motion, rng, lipsync_patch=True)
        if category == "desync":
            offset_s = float(rng.choice([-1, 1]) * rng.uniform(*DESYNC_RANGE_S))
            # what is heard at time t was said at t - offset: the same speech, earlier or later
            audio = window(speech.audio, -int(round(offset_s * SAMPLE_RATE)))
        yield Take(category, name, frames, audio, voice_of, offset_s)


def _cast(identities: int, size: int, rng: np.random.Generator, rngs: list[np.random.Generator]) -> list[Actor]:
    """The first LFW faces, in seeded order, in which dlib finds a face once upscaled and placed."""
    actors: list[Actor] = []
    for lfw_index in rng.permutation(LFW_FACES):
        actor = make_actor(f"id{len(actors):02d}", int(lfw_index), size, rngs[len(actors)])
        if actor is not None:
            actors.append(actor)
            if len(actors) == identities:
                return actors
    raise ValueError(f"dlib finds only {len(actors)} usable LFW faces at size {size}; ask for fewer identities")


def _readme(identities: int, real_per_identity: int, seconds: float, fps: int, size: int, seed: int,
            clips: int) -> str:
    return f"""avbench demo corpus (synthetic; generated by avbench.demo.generate_corpus, seed {seed})

{clips} clips of {seconds:g} s, {size}x{size} at {fps} fps, H.264 video and AAC audio at {SAMPLE_RATE} Hz,
{identities} identities with {real_per_identity} real clips each and one clip of every fake category.

It exists to show the harness working end to end before you own a dataset. Scores on it say
nothing about how a detector does on real deepfakes.

Faces: photographs from the LFW subset that ships with scikit-image (column source_face is the index
in skimage.data.lfw_subset()), upscaled, tinted after the skin of skimage.data.astronaut() and placed
on a synthetic background with small head motion. Voices: a source-filter speech synthesiser. The
mouth opens and closes with the speech, frame by frame.

Categories (folder = column category):                              label  video  audio
  real        own voice, the mouth driven by it                        0      0      0
  fake_audio  a real clip's video with another identity's voice,       1      0      1
              cloned TTS-style (band-limited, spectrally smoothed,
              almost no noise floor)
  lipsync     real audio, the mouth re-driven by another utterance     1      1      0
              and pasted back blurred and colour-shifted
  both        cloned voice and a mouth re-driven by a third utterance  1      1      1
  desync      a real clip with its audio shifted by 0.3-0.6 s          1      0      0
              (column audio_offset_s, seconds: positive = audio late)

Column group names the real clip a fake derives from. split is empty: protocols make
identity-disjoint splits themselves.
"""
