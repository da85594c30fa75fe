"""What the feature cache saves: one detector on frozen features run twice under protocol `demo`.

    python benchmarks/feature_cache.py [--detector probe_avhubert_av_tiny] [--root demo_data] [--seed 0]

Both runs share one fresh cache folder and write to fresh run folders. The first run decodes every clip
(video, audio, landmarks and crops) and runs the backbone, filling the media and feature caches; the
second reads each clip's features from the feature cache and decodes nothing. Printed per run: the
seconds spent fitting and scoring (from the run record), the clips the media loader decoded, and the
test clips scored per second. The scores of the two runs must be identical; the script checks that.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from avbench import protocol as protocols
from avbench.demo import generate_corpus
from avbench.loader import MediaLoader
from avbench.runner import RunSettings, Runner


class DecodeCounter:
    """Counts MediaLoader.load calls (each one decodes a clip, or reads it from the media cache)."""

    def __init__(self):
        self.calls = 0
        self._load = MediaLoader.load

    def __enter__(self):
        counter = self

        def load(loader, *args, **kwargs):
            counter.calls += 1
            return counter._load(loader, *args, **kwargs)

        MediaLoader.load = load
        return self

    def __exit__(self, *exc):
        MediaLoader.load = self._load


def run_once(detector: str, root: Path, work: Path, cache: Path, seed: int, label: str) -> tuple[dict, pd.DataFrame]:
    settings = RunSettings(detector=detector, protocol=protocols.get("demo"), seeds=(seed,), runs_dir=work / label,
                           data_roots={"demo": root}, cache_dir=cache)
    with DecodeCounter() as counter:
        started = time.perf_counter()
        (outcome,) = Runner(settings).run()
        wall = time.perf_counter() - started
    timings = outcome.record["timings"]
    scores = pd.read_parquet(outcome.record_path.parent / "scores.parquet")
    scored = int((scores["status"] == "scored").sum())
    row = {"run": label, "wall_s": wall, "fit_s": timings["fit_seconds"], "score_s": timings["score_seconds"],
           "load_s": timings["load_seconds"], "clips_loaded": counter.calls, "test_clips_scored": scored,
           "scored_per_s": scored / (timings["load_seconds"] + timings["score_seconds"])}
    return row, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default="probe_avhubert_av_tiny")
    parser.add_argument("--root", type=Path, default=Path("demo_data"), help="demo corpus (generated if absent)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (args.root / "metadata.csv").is_file():
        print(f"generating the demo corpus in {args.root} ...")
        generate_corpus(args.root)
    with tempfile.TemporaryDirectory(prefix="avbench-feature-cache-") as tmp:
        work, cache = Path(tmp), Path(tmp) / "cache"
        cold, cold_scores = run_once(args.detector, args.root, work, cache, args.seed, "cold")
        warm, warm_scores = run_once(args.detector, args.root, work, cache, args.seed, "cached")
    table = pd.DataFrame([cold, warm]).set_index("run")
    print(f"{args.detector} under protocol demo, seed {args.seed}")
    print(table.to_string(float_format=lambda x: f"{x:.2f}"))
    print(f"speed-up, wall clock: {cold['wall_s'] / warm['wall_s']:.1f}x")
    same = cold_scores["score"].equals(warm_scores["score"])
    print(f"identical scores from cached features: {same}")
    if not same:
        raise SystemExit("the cached run's scores differ from the cold run's")


if __name__ == "__main__":
    main()
