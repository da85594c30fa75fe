"""Where a clip's loading time goes: decoding, face tracking, cropping, and a cache hit.

    python benchmarks/media_throughput.py [--seconds 4] [--size 224]

Prints seconds per clip for each stage on a generated talking-face mp4 (no data needed).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from avbench import faces, media
from avbench.cache import MediaCache
from avbench.clips import ClipRef
from avbench.detector import InputSpec
from avbench.encode import write_media
from avbench.loader import MediaLoader
from avbench.testing import talking_face


def timed(label: str, fn, repeat: int = 3):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    print(f"{label:<44} {best * 1000:9.1f} ms")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        face = talking_face(seconds=args.seconds, size=args.size)
        path = write_media(Path(tmp) / "clip.mp4", face.frames, face.fps, face.audio, face.sample_rate)
        print(f"clip: {args.seconds:g} s, {args.size}x{args.size} px, {len(face.frames)} frames at 25 fps")
        frames = timed("decode video (decord)", lambda: media.decode_video(path, 25, backend="decord"))
        timed("decode video (PyAV)", lambda: media.decode_video(path, 25, backend="pyav"))
        timed("decode audio 16 kHz mono", lambda: media.decode_audio(path))
        timed("track faces, dlib on every frame", lambda: faces.track_faces(frames, 1), repeat=1)
        _, landmarks = timed("track faces, dlib on every 5th frame", lambda: faces.track_faces(frames, 5), repeat=1)
        timed("crop faces 96 + mouths 64", lambda: (faces.crop_faces(frames, landmarks, 96),
                                                    faces.crop_mouths(frames, landmarks, 64)))
        loader = MediaLoader(MediaCache(Path(tmp) / "cache"))
        ref = ClipRef("clip", "bench", path, 0)
        spec = InputSpec(fps=25, audio=True, face_size=96, mouth_size=64)
        timed("MediaLoader.load, cold cache", lambda: loader.load(ref, spec), repeat=1)
        timed("MediaLoader.load, cache hit", lambda: loader.load(ref, spec))


if __name__ == "__main__":
    main()
