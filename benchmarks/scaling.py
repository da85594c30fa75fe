"""How a run scales with media workers: the same run, on a new cache each time, with 0 (in process), 1, 2, ... workers.

    python benchmarks/scaling.py [--clips 24] [--seconds 4] [--size 224] [--detector avsync] [--workers 0,1,2]
                                 [--ray] [--stage run|preprocess|score] [--device cpu|cuda]

Generates a folder of talking-face clips (half real, half with shifted audio), runs `--detector` under
protocol test_only on it with each worker count, and prints clips/s, the speed-up against one worker,
the CPU seconds of the run's process and of its workers (not on the Ray row: Ray's workers are not
its children), the seconds the detector spent scoring, the peak resident memory of the run's process
and of the largest child process so far (a worker; on the Ray row, Ray's own processes too) and, on CUDA, the fraction of the timed part during which the
GPU ran a kernel (NVML's utilization.gpu, sampled by nvidia-smi every 100 ms). `--ray` adds a run on
a local Ray cluster of the usable cores (`--executor ray`: loading as Ray tasks, scoring on an actor).
The scores of every run are checked to be identical. What is timed (`--stage`):

  run         a cold run: loading (decode, face tracking, crops, as the InputSpec asks) and scoring;
  preprocess  the cold loading alone (`avbench preprocess`), for a detector's spec on a machine where
              only its media matter (e.g. one without dlib's landmark model: use a detector without
              face crops, such as probe_videomae_tiny);
  score       a run whose every clip is already in the cache (filled first, untimed): what keeps the
              device busy once preprocessing is done.

A detector that trains is scored from a checkpoint of itself as built, untrained (throughput, not
accuracy).
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from avbench import protocol, registry
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


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


class DeviceBusy:
    """Mean NVML utilization.gpu of a CUDA device over a `with` block: the fraction of time it ran a kernel."""

    def __init__(self, device: str):
        self.index = int(device.partition(":")[2] or 0)
        self.fraction: float | None = None

    def __enter__(self) -> "DeviceBusy":
        self.sampler = subprocess.Popen(["nvidia-smi", f"--id={self.index}", "--query-gpu=utilization.gpu",
                                         "--format=csv,noheader,nounits", "-lms", "100"],
                                        stdout=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *_) -> None:
        self.sampler.terminate()
        samples = [float(line) for line in self.sampler.communicate()[0].split() if line.strip().isdigit()]
        self.fraction = sum(samples) / len(samples) / 100 if samples else None


def untrained_checkpoint(name: str, folder: Path) -> Path | None:
    """A checkpoint of detector `name` as built (seed 0), if it trains; None if it needs none."""
    cls = registry.detectors.get(name)
    return cls().save(folder) if cls.trains else None


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
    parser.add_argument("--stage", choices=("run", "preprocess", "score"), default="run")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    tracking = Tracking(landmark_every=args.landmark_every, detect_every=args.detect_every)
    counts: list[int | str] = [int(w) for w in args.workers.split(",")] + (["ray"] if args.ray else [])
    on_gpu = args.device.startswith("cuda")
    with tempfile.TemporaryDirectory() as tmp:
        root = corpus(Path(tmp) / "clips", args.clips, args.seconds, args.size)
        checkpoint = untrained_checkpoint(args.detector, Path(tmp) / "checkpoint") if args.stage != "preprocess" else None
        print(f"{args.clips} clips of {args.seconds:g} s at {args.size} px, detector {args.detector}, stage "
              f"{args.stage}, device {args.device}, {tracking}, {usable_cores()} usable cores"
              + (" (untrained checkpoint)" if checkpoint else ""))
        print(f"{'workers':>7} {'seconds':>7} {'clips/s':>7} {'vs 1':>5} {'CPU s: run':>10} {'workers':>7} "
              f"{'score s':>7} {'MiB: run':>8} {'child':>5}" + (f" {'GPU busy':>8}" if on_gpu else ""))
        rates, first_scores = {}, None
        for n in counts:
            if n == "ray":
                import ray

                ray.init(num_cpus=usable_cores(), include_dashboard=False, log_to_driver=False, configure_logging=False)
            settings = RunSettings(detector=args.detector, protocol=protocol.get("test_only"), seeds=(0,),
                                   runs_dir=Path(tmp) / f"runs{n}", data_roots={"folder": root},
                                   cache_dir=Path(tmp) / f"cache{n}", workers=n if n != "ray" else 0,
                                   executor="ray" if n == "ray" else "local", tracking=tracking,
                                   device=args.device, checkpoint=checkpoint)
            if args.stage == "score":
                Runner(settings).preprocess()
            busy = DeviceBusy(args.device) if on_gpu else contextlib.nullcontext()
            start = time.perf_counter()
            cpu_before = cpu_seconds(resource.RUSAGE_SELF), cpu_seconds(resource.RUSAGE_CHILDREN)
            score_s = "-"
            with busy:
                if args.stage == "preprocess":
                    counts_of = Runner(settings).preprocess()
                    scores = pd.Series(counts_of["failed"], dtype=int)
                else:
                    (outcome,) = Runner(settings).run()
                    scores = pd.read_parquet(outcome.record_path.parent / "scores.parquet")[["clip_id", "score", "reason"]]
                    score_s = f"{outcome.record['timings']['score_seconds']:.1f}"
            elapsed = time.perf_counter() - start
            cpu_run = cpu_seconds(resource.RUSAGE_SELF) - cpu_before[0]
            cpu_workers = "-" if n in (0, "ray") else f"{cpu_seconds(resource.RUSAGE_CHILDREN) - cpu_before[1]:.1f}"
            if first_scores is None:
                first_scores = scores
            elif not scores.equals(first_scores):
                raise SystemExit(f"{'failures' if args.stage == 'preprocess' else 'scores'} with {n} workers "
                                 f"differ from those with {counts[0]}")
            rates[n] = args.clips / elapsed
            versus = f"{rates[n] / rates[1]:.2f}x" if 1 in rates else "-"
            gpu = "" if not on_gpu else f" {busy.fraction:8.0%}" if busy.fraction is not None else f" {'n/a':>8}"
            print(f"{n:>7} {elapsed:7.1f} {rates[n]:7.2f} {versus:>5} {cpu_run:10.1f} {cpu_workers:>7} {score_s:>7} "
                  f"{peak_mib(resource.RUSAGE_SELF):8.0f} {peak_mib(resource.RUSAGE_CHILDREN):5.0f}{gpu}")
        print("scores identical across worker counts" if args.stage != "preprocess"
              else "failures identical across worker counts")


if __name__ == "__main__":
    main()
