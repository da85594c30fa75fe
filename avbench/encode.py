"""Write media files from arrays: the demo corpus and the tests make their clips with this."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

#: Video and audio encoder for each container, chosen by the file's suffix.
CODECS: dict[str, tuple[str | None, str]] = {
    ".mp4": ("libx264", "aac"),
    ".mov": ("libx264", "aac"),
    ".mkv": ("libx264", "aac"),
    ".avi": ("mpeg4", "pcm_s16le"),  # not mp3: its encoder delay makes the avi muxer shift the video
    ".webm": ("libvpx-vp9", "libopus"),
    ".wav": (None, "pcm_s16le"),
}


def write_media(path: Path | str, frames: np.ndarray | None = None, fps: float | Fraction = 25.0,
                audio: np.ndarray | None = None, sample_rate: int = 16000, *,
                times: np.ndarray | None = None, faststart: bool = False, crf: int = 18) -> Path:
    """Encode RGB frames and/or mono float32 audio into the container named by the suffix (see CODECS).

    fps may be a Fraction (30000/1001). `times` gives each frame's presentation time in seconds,
    making a variable-frame-rate file. `faststart` puts an mp4's index before the data, so that a
    truncated copy still decodes its beginning. `crf` sets H.264 quality (lower is better).
    Frame height and width must be even.
    """
    path = Path(path)
    if path.suffix.lower() not in CODECS:
        raise ValueError(f"{path}: no encoders chosen for '{path.suffix}'; use one of {sorted(CODECS)}")
    video_codec, audio_codec = CODECS[path.suffix.lower()]
    if frames is not None and video_codec is None:
        raise ValueError(f"{path.suffix} holds no video")
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "faststart"} if faststart else {}
    rate = Fraction(fps).limit_denominator(1001)
    time_base = 1 / rate if times is None else Fraction(1, 1000)
    with av.open(str(path), "w", options=options) as container:
        # every stream must exist before the first packet is muxed
        video = audio_stream = None
        if frames is not None:
            video = container.add_stream(video_codec, rate=rate)
            video.height, video.width = frames.shape[1:3]
            video.pix_fmt = "yuv420p"
            video.codec_context.time_base = time_base
            if video_codec == "libx264":
                # no macroblock tree: with it this x264 gave other bytes for the same frames from one
                # encode to the next, and the demo corpus (hence the golden table) must not move
                video.options = {"crf": str(crf), "preset": "veryfast", "x264-params": "mbtree=0"}
        if audio is not None:
            audio_stream = container.add_stream(audio_codec, rate=_encoder_rate(audio_codec, sample_rate))
            audio_stream.layout = "mono"
        if video is not None:
            for k, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                frame.pts = k if times is None else round(times[k] / time_base)
                frame.time_base = time_base
                container.mux(video.encode(frame))
            container.mux(video.encode())
        if audio_stream is not None:
            samples = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
            hop = 1000
            for start in range(0, len(samples), hop):
                chunk = av.AudioFrame.from_ndarray(samples[None, start:start + hop], format="flt", layout="mono")
                chunk.sample_rate, chunk.pts = sample_rate, start
                container.mux(audio_stream.encode(chunk))
            container.mux(audio_stream.encode())
    return path


def _encoder_rate(codec: str, sample_rate: int) -> int:
    """`sample_rate` if the encoder takes it, else its highest rate (PyAV resamples on encode)."""
    rates = av.Codec(codec, "w").audio_rates
    return sample_rate if not rates or sample_rate in rates else max(rates)
