"""Where a clip's loading time goes on one core: decoding, face tracking, cropping, and a cache hit.

    python benchmarks/media_throughput.py [--seconds 4] [--size 224] [--landmark-every 5] [--detect-every 50]

Generates a talking-face mp4 (no data needed), pins this process to one core (the cost a worker
pays), and prints milliseconds per clip for each stage and for a cold `MediaLoader.load`, with each
as a multiple of the raw decode (video by decord plus audio). Tracking is shown with every-frame
detection (the reference) and with the default `faces.Tracking`.
"""

from __future__ import annotations

import argparse
import os
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


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--landmark-every", type=int, default=faces.Tracking.landmark_every)
    parser.add_argument("--detect-every", type=int, default=faces.Tracking.detect_every)
    parser.add_argument("--repeat", type=int, default=5, help="each figure is the best of this many runs")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    tracking = faces.Tracking(landmark_every=args.landmark_every, detect_every=args.detect_every)
    faces.load_models()
    with tempfile.TemporaryDirectory() as tmp:
        face = talking_face(seconds=args.seconds, size=args.size)
        path = write_media(Path(tmp) / "clip.mp4", face.frames, face.fps, face.audio, face.sample_rate)
        print(f"clip: {args.seconds:g} s, {args.size}x{args.size} px, {len(face.frames)} frames at 25 fps; one core")
        rows: list[tuple[str, float]] = []

        def timed(label, fn, repeat=args.repeat):
            seconds, result = best_of(fn, repeat)
            rows.append((label, seconds))
            return result

        frames = timed("decode video (decord)", lambda: media.decode_video(path, 25, backend="decord"))
        timed("decode audio 16 kHz mono", lambda: media.decode_audio(path))
        raw = rows[0][1] + rows[1][1]
        timed("decode video (PyAV)", lambda: media.decode_video(path, 25, backend="pyav"))
        timed("track faces, detector + landmarks every frame", lambda: faces.track_faces(frames, faces.EVERY_FRAME), 1)
        _, landmarks = timed(f"track faces, landmarks every {args.landmark_every}, detector every {args.detect_every}", lambda: faces.track_faces(frames, tracking))
        timed("crop faces 96 + mouths 64", lambda: (faces.crop_faces(frames, landmarks, 96),
                                                    faces.crop_mouths(frames, landmarks, 64)))
        ref = ClipRef("clip", "bench", path, 0)
        spec = InputSpec(fps=25, audio=True, face_size=96, mouth_size=64, frames=False)
        caches = iter(range(args.repeat))
        timed("MediaLoader.load, cold cache", lambda: MediaLoader(MediaCache(Path(tmp) / f"cold{next(caches)}"),
                                                                  tracking).load(ref, spec))
        warm = MediaLoader(MediaCache(Path(tmp) / "cold0"), tracking)
        timed("MediaLoader.load, cache hit", lambda: warm.load(ref, spec))
        print(f"{'stage':<58} {'ms':>8} {'x raw decode':>13}")
        for label, seconds in rows:
            print(f"{label:<58} {seconds * 1000:8.1f} {seconds / raw:12.2f}x")


if __name__ == "__main__":
    main()
