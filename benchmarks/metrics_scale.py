"""What a run record's metrics cost at the scale of AV-Deepfake1M, on one core.

    python benchmarks/metrics_scale.py [--sizes 10000,100000,1000000] [--resamples 1000] [--seed 0]

For each size: synthetic probability scores (a quarter real, seeded), and the seconds of the point
metrics (AUC, AP, ACC, EER from scikit-learn, ECE and Brier) and of each interval as the record
computes it (significance.interval: DeLong for AUC, Wilson for ACC, a bounded bootstrap for AP and
EER, a normal interval for Brier), and DeLong's test of two detectors on those clips. Then the
record's metric rows (runner.metric_rows) of a 1M-clip test set whose fakes fall in five subsets:
the whole set and each subset (its fakes and all reals), with their intervals, as `avbench run`
writes them.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, whatever the BLAS

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from avbench import metrics, significance  # noqa: E402
from avbench.protocol import Fold, Selection, TestSet  # noqa: E402
from avbench.runner import metric_rows  # noqa: E402

INTERVALS = ("AUC", "AP", "ACC", "EER", "BRIER")


def synthetic(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    labels = (rng.random(n) >= 0.25).astype(int)
    return labels, 1 / (1 + np.exp(-(rng.normal(size=n) + 1.5 * labels - 0.75)))


def seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    metrics.compute_metrics([0, 1], [0.2, 0.8], probabilities=True)  # scikit-learn's import, untimed
    print(f"{'clips':>9} {'point':>7} " + " ".join(f"{m + ' CI':>8}" for m in INTERVALS) + f" {'DeLong test':>12}")
    for n in map(int, args.sizes.split(",")):
        y, s = synthetic(n, rng)
        other = np.clip(s + rng.normal(scale=0.1, size=n), 0, 1)
        point = seconds(lambda: (metrics.compute_metrics(y, s, probabilities=True), metrics.calibration_metrics(y, s)))
        ci = [seconds(lambda m=m: significance.interval(y, s, m, n_resamples=args.resamples, seed=args.seed,
                                                        probabilities=True)) for m in INTERVALS]
        test = seconds(lambda: significance.delong_test(y, s, other))
        print(f"{n:>9} {point:>6.2f}s " + " ".join(f"{t:>7.2f}s" for t in ci) + f" {test:>11.2f}s")
        print(f"{'':>9} AP/EER: {significance.bootstrap_rule(n, args.resamples)}")

    n = 1_000_000
    y, s = synthetic(n, rng)
    subset = np.where(y == 1, rng.choice([f"method{k}" for k in range(1, 6)], size=n), "real")
    scores = pd.DataFrame({"fold": "main", "test_set": "synthetic", "clip_id": np.arange(n).astype(str), "label": y,
                           "subset_value": subset, "score": s, "status": "scored", "reason": ""})
    fold = Fold("main", "synthetic", None, None, (TestSet("synthetic", Selection("synthetic", "test"), "category"),))
    rows: list[dict] = []
    took = seconds(lambda: rows.extend(metric_rows(scores, [fold], {}, True, probabilities=True, seed=args.seed,
                                                   n_resamples=args.resamples)))
    parts = len({r["subset"] for r in rows if r["subset"] != "AVG"})
    print(f"record of a {n}-clip test set with five subsets ({parts} parts, {len(rows)} metric rows, "
          f"intervals included): {took:.1f}s")


if __name__ == "__main__":
    main()
