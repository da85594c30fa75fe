"""Degradations of test media, for robustness sweeps: `NAME+perturb=KIND@LEVEL` protocols.

A perturbation is a kind and a level, 1 (mild) to 5 (severe); level 0 is the original media. It is
applied at decode time to the test clips only, deterministically: a kind that draws random numbers
draws them from a generator seeded by the clip id, kind and level, so a rerun, another machine or a
resumed run sees the same degraded clip. Faces are found on the unperturbed frames and the crops
cut from the perturbed ones: the sweep measures the detector, not the face tracker (and no clip
drops out because a blurred face went undetected).

Visual kinds follow DeeperForensics-1.0's distortion code (seed 002's robustness figure uses it),
each on the decoded RGB frames at the detector's frame rate:

| kind | DeeperForensics | levels 1-5 | what it does |
| --- | --- | --- | --- |
| saturation | CS | 0.4, 0.3, 0.2, 0.1, 0.0 | chroma (Cb, Cr of BT.601 YCbCr, studio range) scaled about its centre |
| contrast | CC | 0.85, 0.725, 0.6, 0.475, 0.35 | pixel values multiplied, then truncated to integers |
| noise | GNC | 0.001, 0.002, 0.005, 0.01, 0.05 | white Gaussian noise of this variance on YCbCr in [0, 1] |
| blur | GB | 7, 9, 13, 17, 21 | Gaussian blur, kernel of this size, sigma = size / 6, mirrored borders |
| jpeg | JPEG | 2, 3, 4, 5, 6 | what DeeperForensics calls JPEG compression: bilinear down-sampling by this factor and back |
| video_compression | VC | 30, 32, 35, 38, 40 | H.264 (libx264, yuv420p) at this CRF, decoded back |

Audio kinds (avbench's own; no seed paper evaluates them), on the 16 kHz mono track:

| kind | levels 1-5 | what it does |
| --- | --- | --- |
| audio_noise | 30, 20, 10, 5, 0 dB | white Gaussian noise at this signal-to-noise ratio over the clip |
| audio_compression | 64, 32, 24, 16, 8 kbit/s | MP3 (libmp3lame) at this bitrate, decoded back, aligned to the original length |
| resample | 8000, 6000, 4000, 3000, 2000 Hz | down-sampled to this rate and back (polyphase, scipy), removing high frequencies |
| av_offset | 0.1, 0.2, 0.4, 0.7, 1.0 s | the audio delayed by this much (silence before, the end cut): lips and voice out of step |
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import numpy as np

LEVELS = 5


@dataclass(frozen=True)
class Kind:
    modality: str  # "video" or "audio"
    params: tuple[float, ...]  # the parameter of levels 1..LEVELS
    apply: Callable  # video: (frames (T, H, W, 3) uint8, param, fps, rng); audio: (audio, param, sample_rate, rng)
    unit: str = ""


@dataclass(frozen=True)
class Perturbation:
    kind: str
    level: int

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown perturbation '{self.kind}'; kinds: {', '.join(KINDS)}")
        if not 0 <= self.level <= LEVELS:
            raise ValueError(f"perturbation level {self.level} of '{self.kind}': levels are 0 (none) to {LEVELS}")

    @classmethod
    def parse(cls, text: str) -> "Perturbation":
        """'KIND@LEVEL', e.g. 'blur@3'."""
        kind, at, level = text.partition("@")
        if not at or not level.isdigit():
            raise ValueError(f"a perturbation is KIND@LEVEL (e.g. blur@3), got '{text}'; kinds: {', '.join(KINDS)}")
        return cls(kind, int(level))

    def __str__(self) -> str:
        return f"{self.kind}@{self.level}"

    @property
    def modality(self) -> str:
        return KINDS[self.kind].modality

    @property
    def param(self) -> float | None:
        return KINDS[self.kind].params[self.level - 1] if self.level else None

    def describe(self) -> dict:
        """What the record keeps: kind, level, the level's parameter and the modality it degrades."""
        return {"kind": self.kind, "level": self.level, "param": self.param, "unit": KINDS[self.kind].unit,
                "modality": self.modality}

    def _rng(self, clip_id: str) -> np.random.Generator:
        digest = hashlib.sha256(f"{clip_id}|{self}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    def video(self, frames: np.ndarray, fps: float, clip_id: str) -> np.ndarray:
        """The frames as this perturbation leaves them (unchanged for an audio kind or level 0)."""
        if self.modality != "video" or not self.level:
            return frames
        return KINDS[self.kind].apply(frames, self.param, fps, self._rng(clip_id))

    def audio(self, audio: np.ndarray, sample_rate: int, clip_id: str) -> np.ndarray:
        if self.modality != "audio" or not self.level or len(audio) == 0:
            return audio
        return KINDS[self.kind].apply(audio, self.param, sample_rate, self._rng(clip_id)).astype(np.float32)


# -- visual kinds (DeeperForensics-1.0) ---------------------------------------------------------------
_YCBCR = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
_STUDIO_SCALE, _STUDIO_OFFSET = np.array([219, 224, 224]) / 255, np.array([16, 16, 16]) / 255


def _to_ycbcr(frames: np.ndarray) -> np.ndarray:
    """RGB uint8 -> BT.601 YCbCr in the studio range, as fractions ([16, 235] / 255 for Y)."""
    ycc = frames.astype(np.float32) / 255 @ _YCBCR.T.astype(np.float32) + np.array([0, 0.5, 0.5], np.float32)
    return ycc * _STUDIO_SCALE.astype(np.float32) + _STUDIO_OFFSET.astype(np.float32)


def _to_rgb(ycc: np.ndarray) -> np.ndarray:
    full = (ycc - _STUDIO_OFFSET.astype(np.float32)) / _STUDIO_SCALE.astype(np.float32) - np.array([0, 0.5, 0.5], np.float32)
    rgb = full @ np.linalg.inv(_YCBCR).T.astype(np.float32)
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def _saturation(frames, param, fps, rng):
    ycc = _to_ycbcr(frames)
    centre = _STUDIO_OFFSET[1] + _STUDIO_SCALE[1] * 0.5
    ycc[..., 1:] = centre + (ycc[..., 1:] - centre) * param
    return _to_rgb(ycc)


def _contrast(frames, param, fps, rng):
    return np.floor(frames.astype(np.float32) * param).astype(np.uint8)


def _noise(frames, param, fps, rng):
    ycc = _to_ycbcr(frames)
    return _to_rgb(ycc + rng.standard_normal(ycc.shape, dtype=np.float32) * np.float32(math.sqrt(param)))


def _blur(frames, param, fps, rng):
    from scipy.ndimage import gaussian_filter

    sigma, radius = param / 6, (int(param) - 1) // 2
    blurred = gaussian_filter(frames.astype(np.float32), sigma=(0, sigma, sigma, 0), mode="mirror",
                              truncate=radius / sigma)
    return np.clip(np.rint(blurred), 0, 255).astype(np.uint8)


def _pixelation(frames, param, fps, rng):
    import torch
    import torch.nn.functional as F

    t, h, w = frames.shape[:3]
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    small = F.interpolate(x, size=(max(1, h // int(param)), max(1, w // int(param))), mode="bilinear",
                          align_corners=False)
    back = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return back.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _video_compression(frames, param, fps, rng):
    import av

    t, h, w = frames.shape[:3]
    # yuv420p needs even sides (the odd row or column is restored after)
    even = np.ascontiguousarray(frames[:, : h - h % 2, : w - w % 2])
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=round(fps))
        stream.width, stream.height, stream.pix_fmt = even.shape[2], even.shape[1], "yuv420p"
        stream.options = {"crf": str(int(param)), "preset": "medium", "x264-params": "threads=1:lookahead-threads=1"}  # one thread: the same bits every run
        for i, frame in enumerate(even):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts, picture.time_base = i, Fraction(1, round(fps))
            out.mux(stream.encode(picture))
        out.mux(stream.encode())
    buffer.seek(0)
    with av.open(buffer) as container:
        container.streams.video[0].codec_context.thread_count = 1
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])[:t]
    result = frames.copy()
    result[:, : decoded.shape[1], : decoded.shape[2]] = decoded
    if h % 2:
        result[:, -1] = result[:, -2]
    if w % 2:
        result[:, :, -1] = result[:, :, -2]
    return result


# -- audio kinds ----------------------------------------------------------------------------------------
def _audio_noise(audio, snr_db, sample_rate, rng):
    power = float(np.mean(np.square(audio, dtype=np.float64)))
    noise = rng.standard_normal(len(audio)) * math.sqrt(power / 10 ** (snr_db / 10))
    return audio + noise


def _audio_compression(audio, kbps, sample_rate, rng):
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=sample_rate)
        stream.bit_rate, stream.layout = int(kbps * 1000), "mono"
        frame = av.AudioFrame.from_ndarray(np.clip(audio, -1, 1).astype(np.float32)[None], format="flt", layout="mono")
        frame.sample_rate = sample_rate
        for chunk in (frame, None):
            for packet in stream.encode(chunk):
                out.mux(packet)
    buffer.seek(0)
    with av.open(buffer) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        parts = [r.to_ndarray().reshape(-1) for f in container.decode(audio=0) for r in resampler.resample(f)]
    decoded = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    out_audio = np.zeros(len(audio), np.float32)
    out_audio[: min(len(audio), len(decoded))] = decoded[: len(audio)]
    return out_audio


def _resample(audio, rate, sample_rate, rng):
    from scipy.signal import resample_poly

    g = math.gcd(int(rate), sample_rate)
    down = resample_poly(audio, int(rate) // g, sample_rate // g)
    back = resample_poly(down, sample_rate // g, int(rate) // g)[: len(audio)]
    return np.pad(back, (0, len(audio) - len(back)))


def _av_offset(audio, seconds, sample_rate, rng):
    shift = min(len(audio), round(seconds * sample_rate))
    return np.concatenate([np.zeros(shift, audio.dtype), audio[: len(audio) - shift]])


KINDS: dict[str, Kind] = {
    "saturation": Kind("video", (0.4, 0.3, 0.2, 0.1, 0.0), _saturation, "chroma factor"),
    "contrast": Kind("video", (0.85, 0.725, 0.6, 0.475, 0.35), _contrast, "factor"),
    "noise": Kind("video", (0.001, 0.002, 0.005, 0.01, 0.05), _noise, "variance"),
    "blur": Kind("video", (7, 9, 13, 17, 21), _blur, "kernel px"),
    "jpeg": Kind("video", (2, 3, 4, 5, 6), _pixelation, "down-sampling factor"),
    "video_compression": Kind("video", (30, 32, 35, 38, 40), _video_compression, "CRF"),
    "audio_noise": Kind("audio", (30, 20, 10, 5, 0), _audio_noise, "dB SNR"),
    "audio_compression": Kind("audio", (64, 32, 24, 16, 8), _audio_compression, "kbit/s"),
    "resample": Kind("audio", (8000, 6000, 4000, 3000, 2000), _resample, "Hz"),
    "av_offset": Kind("audio", (0.1, 0.2, 0.4, 0.7, 1.0), _av_offset, "s"),
}
