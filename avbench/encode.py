"""Write an mp4 (H.264 video, AAC audio) from arrays: used by the demo corpus and by tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_mp4(
    path: Path | str,
    frames: np.ndarray | None,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    crf: int = 18,
) -> Path:
    """Encode RGB uint8 frames (T, H, W, 3) and mono float32 audio into one container.

    Either stream may be None to make a video-only or audio-only file. H and W must be even.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        video_stream = audio_stream = None
        if frames is not None:
            video_stream = container.add_stream("libx264", rate=int(round(fps)))
            video_stream.height, video_stream.width = frames.shape[1:3]
            video_stream.pix_fmt = "yuv420p"
            video_stream.options = {"crf": str(crf), "preset": "veryfast"}
        if audio is not None:
            audio_stream = container.add_stream("aac", rate=sample_rate)
            audio_stream.layout = "mono"
        if video_stream is not None:
            for frame in frames:
                packet = video_stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24"))
                container.mux(packet)
            container.mux(video_stream.encode())
        if audio_stream is not None:
            samples = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
            hop = 1024
            for start in range(0, len(samples), hop):
                chunk = av.AudioFrame.from_ndarray(samples[None, start:start + hop], format="flt", layout="mono")
                chunk.sample_rate = sample_rate
                chunk.pts = start
                container.mux(audio_stream.encode(chunk))
            container.mux(audio_stream.encode())
    return path
