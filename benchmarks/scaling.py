"""How a cold run scales with media workers: the same run, empty cache, with 0 (in process), 1, 2, ... workers.

    python benchmarks/scaling.py [--clips 24] [--seconds 4] [--size 224] [--detector avsync] [--workers 0,1,2] [--ray]

Generates a folder of talking-face clips (half real, half with shifted audio), runs `--detector` under
protocol test_only on it with each worker count, each time with a new cache, and prints clips/s, the
speed-up against one worker, and the peak resident memory of the run's process and of the largest
child process so far (a worker; on the Ray row, Ray's own processes too). `--ray` adds a run on a local Ray cluster of the usable cores (`--executor ray`). The
scores of every run are checked to be identical. Media workers load what the detector's
InputSpec asks for (decode, face tracking, crops); the detector scores in this process meanwhile.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from avbench import protocol
from avbench.encode import write_media
from avbench.faces import Tracking
from avbench.runner import RunSettings, Runner
from avbench.testing import talking_face
from avbench.workers import usable_cores


def corpus(root: Path, clips: int, seconds: float, size: int) -> Path:
    face = talking_face(seconds=seconds, size=size)
    shift = int(0.3 * face.sample_rate)
    for i in range(clips):
        label = "real" if i % 2 == 0 else "fake"
        audio = face.audio if label == "real" else np.roll(face.audio, shift)
        noise = np.random.default_rng(i).integers(0, 3, face.frames.shape, dtype=np.uint8)  # distinct files
        (root / label).mkdir(parents=True, exist_ok=True)
        write_media(root / label / f"clip{i:03d}.mp4", face.frames + noise, face.fps, audio, face.sample_rate)
    return root


def peak_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--detector", default="avsync")
    parser.add_argument("--landmark-every", type=int, default=Tracking.landmark_every)
    parser.add_argument("--detect-every", type=int, default=Tracking.detect_every)
    parser.add_argument("--workers", default=",".join(map(str, sorted({0, 1, 2, usable_cores()}))))
    parser.add_argument("--ray", action="store_true", help="also run on a local Ray cluster")
    args = parser.parse_args()
    tracking = Tracking(landmark_every=args.landmark_every, detect_every=args.detect_every)
    counts: list[int | str] = [int(w) for w in args.workers.split(",")] + (["ray"] if args.ray else [])
    with tempfile.TemporaryDirectory() as tmp:
        root = corpus(Path(tmp) / "clips", args.clips, args.seconds, args.size)
        print(f"{args.clips} clips of {args.seconds:g} s at {args.size} px, detector {args.detector}, "
              f"{tracking}, {usable_cores()} usable cores")
        print(f"{'workers':>7} {'seconds':>8} {'clips/s':>8} {'vs 1':>6} {'peak MiB: run':>14} {'child':>6}")
        rates, first_scores = {}, None
        for n in counts:
            if n == "ray":
                import ray

                ray.init(num_cpus=usable_cores(), include_dashboard=False, log_to_driver=False, configure_logging=False)
            settings = RunSettings(detector=args.detector, protocol=protocol.get("test_only"), seeds=(0,),
                                   runs_dir=Path(tmp) / f"runs{n}", data_roots={"folder": root},
                                   cache_dir=Path(tmp) / f"cache{n}", workers=n if n != "ray" else 0,
                                   executor="ray" if n == "ray" else "local", tracking=tracking)
            start = time.perf_counter()
            (outcome,) = Runner(settings).run()
            elapsed = time.perf_counter() - start
            scores = pd.read_parquet(outcome.record_path.parent / "scores.parquet")[["clip_id", "score", "reason"]]
            if first_scores is None:
                first_scores = scores
            elif not scores.equals(first_scores):
                raise SystemExit(f"scores with {n} workers differ from those with {counts[0]}")
            rates[n] = args.clips / elapsed
            versus = f"{rates[n] / rates[1]:.2f}x" if 1 in rates else "-"
            print(f"{n:>7} {elapsed:8.1f} {rates[n]:8.2f} {versus:>6} "
                  f"{peak_mib(resource.RUSAGE_SELF):>14.0f} {peak_mib(resource.RUSAGE_CHILDREN):>6.0f}")
        print("scores identical across worker counts")


if __name__ == "__main__":
    main()
