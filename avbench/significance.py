"""Whether two detectors differ on the same clips, and the confidence intervals of a run record.

AUC: DeLong's test for two correlated AUCs (DeLong, DeLong & Clarke-Pearson 1988) with the midrank
algorithm of Sun & Xu (2014), O(n log n): with m fakes X and n reals Y, T_Z the midranks of a
detector's scores over all clips, T_X over the fakes alone and T_Y over the reals alone,

    AUC = (sum_i T_Z(X_i) - m(m+1)/2) / (m n),
    V10_i = (T_Z(X_i) - T_X(X_i)) / n        (fake i's share of reals it outranks, ties half),
    V01_j = 1 - (T_Z(Y_j) - T_Y(Y_j)) / m    (real j's share of fakes that outrank it),

and the covariance of the AUCs of detectors on the same clips is S10 / m + S01 / n, S10 and S01
the sample covariances (over fakes and over reals) of their V10 and V01. The same variance gives
a single AUC's interval, AUC +- z * se, cut to [0, 1].

AP and EER have no such variance: a paired bootstrap resamples clips (fakes and reals apart, as
`metrics.bootstrap_ci` does) and computes both detectors' metric on each resample, so the spread
of their difference keeps the correlation between them. Its cost is bounded the same way.

P-values are two-sided; `holm` corrects a family of them (Holm 1979).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from avbench import metrics

ALPHA = 0.05
COMPARED_METRICS = ("AUC", "AP", "EER")


# -- DeLong -------------------------------------------------------------------------------------------
def _delong(labels, *scores) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (k,) and their DeLong covariance (k, k) of k detectors' scores on the same clips."""
    from scipy.stats import rankdata

    y = np.asarray(labels)
    s = np.stack([np.asarray(x, dtype=float) for x in scores])
    x, r = s[:, y == 1], s[:, y == 0]
    m, n = x.shape[1], r.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"DeLong's variance needs two fakes and two reals at least, got {m} and {n}")
    t_z = rankdata(np.concatenate([x, r], axis=1), axis=1)
    v10 = (t_z[:, :m] - rankdata(x, axis=1)) / n
    v01 = 1 - (t_z[:, m:] - rankdata(r, axis=1)) / m
    auc = (t_z[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    return auc, np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n


def auc_variance(labels, scores) -> tuple[float, float]:
    """(AUC, DeLong's variance of it)."""
    auc, cov = _delong(labels, scores)
    return float(auc[0]), float(cov[0, 0])


def auc_ci(labels, scores, alpha: float = ALPHA) -> tuple[float, float]:
    """Normal interval AUC +- z se from DeLong's variance, cut to [0, 1] (a point at AUC 0 or 1)."""
    from scipy.stats import norm

    auc, var = auc_variance(labels, scores)
    half = norm.ppf(1 - alpha / 2) * math.sqrt(max(var, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


def delong_test(labels, scores_a, scores_b) -> dict:
    """DeLong's test of AUC(a) = AUC(b) on the same clips. Where the difference has no variance
    (identical scores, or both perfect) z is NaN and p is 1 if the AUCs agree, else 0."""
    auc, cov = _delong(labels, scores_a, scores_b)
    diff, var = auc[0] - auc[1], cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    if var > 1e-15:
        se = math.sqrt(var)
        z = diff / se
        p = math.erfc(abs(z) / math.sqrt(2))
    else:
        se, z, p = 0.0, math.nan, 1.0 if abs(diff) < 1e-12 else 0.0
    return {"a": float(auc[0]), "b": float(auc[1]), "diff": float(diff), "se": se, "z": z, "p": p}


# -- paired bootstrap -----------------------------------------------------------------------------------
def paired_bootstrap(labels, scores_a, scores_b, metric: str, *, n_resamples: int = 1000, seed: int = 0,
                     alpha: float = ALPHA, budget: int = metrics.BOOTSTRAP_BUDGET) -> dict:
    """metric(a) - metric(b) over the same stratified resamples for both: the difference, its
    percentile interval and the two-sided p-value (1 + #{|d* - d| >= |d|}) / (1 + resamples) of
    the resampled differences centred on the observed one. Beyond `budget` resamples draw m < n
    clips and deviations are scaled by sqrt(m / n), as in `metrics.bootstrap_ci`."""
    y = np.asarray(labels).astype(int)
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    value_a = metrics.compute_metrics(y, a, probabilities=False)[metric]
    value_b = metrics.compute_metrics(y, b, probabilities=False)[metric]
    diff = value_a - value_b
    m = metrics.resample_size(len(y), n_resamples, budget // 2)  # two detectors per resample
    deviations = np.sqrt(m / len(y)) * (np.concatenate([
        metrics._batch_metric(y[rows], a[rows], metric) - metrics._batch_metric(y[rows], b[rows], metric)
        for rows in metrics.stratified_resamples(y, n_resamples, m, seed)]) - diff)
    low, high = diff + np.quantile(deviations, [alpha / 2, 1 - alpha / 2])
    p = (1 + np.sum(np.abs(deviations) >= abs(diff) - 1e-12)) / (1 + n_resamples)
    return {"a": value_a, "b": value_b, "diff": diff, "ci_low": float(low), "ci_high": float(high),
            "p": float(min(p, 1.0)), "resamples": n_resamples, "resample_size": m}


def bootstrap_rule(n: int, n_resamples: int, budget: int = metrics.BOOTSTRAP_BUDGET) -> str:
    """The bootstrap as a record states it."""
    m = metrics.resample_size(n, n_resamples, budget)
    return (f"bootstrap({n_resamples} resamples)" if m == n else
            f"bootstrap({n_resamples} resamples of {m} of {n} clips, scaled by sqrt(m/n))")


# -- Holm -------------------------------------------------------------------------------------------------
def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, in the given order; NaN ones stay NaN and are not counted."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    k = len(order)
    out[order] = np.minimum(1.0, np.maximum.accumulate(p[order] * (k - np.arange(k))))
    return out


# -- a run record's intervals ----------------------------------------------------------------------------
def interval(labels, scores, metric: str, *, n_resamples: int, seed: int, probabilities: bool,
             alpha: float = ALPHA) -> tuple[float, float, str]:
    """(low, high, method) of one metric row: AUC from DeLong's variance, ACC Wilson's, BRIER a
    normal interval of the mean squared error, AP and EER a bounded bootstrap (ECE has none)."""
    y, s = np.asarray(labels).astype(int), np.asarray(scores, dtype=float)
    if metric == "AUC":
        return *auc_ci(y, s, alpha), "delong"
    if metric == "ACC":
        return *metrics.wilson_ci(int(np.sum((s >= metrics.THRESHOLD) == y)), len(y), alpha), "wilson"
    if metric == "BRIER":
        from scipy.stats import norm

        squared = (s - y) ** 2
        half = norm.ppf(1 - alpha / 2) * squared.std(ddof=1) / math.sqrt(len(y))
        return max(0.0, squared.mean() - half), squared.mean() + half, "normal"
    if metric in ("AP", "EER"):
        low, high = metrics.bootstrap_ci(y, s, metric, n_resamples=n_resamples, seed=seed, alpha=alpha,
                                         probabilities=probabilities)
        return low, high, bootstrap_rule(len(y), n_resamples)
    raise ValueError(f"no interval rule for metric '{metric}'")


# -- comparing two detectors' runs ---------------------------------------------------------------------
def compare(scores_a: pd.DataFrame, scores_b: pd.DataFrame, folds, display: dict[str, str], *,
            n_resamples: int = 1000, seed: int = 0, alpha: float = ALPHA) -> list[dict]:
    """Rows (seed, train, test_set, subset, metric) comparing detector a with b, on the clips both
    scored: AUC by DeLong's test, AP and EER by the paired bootstrap (seeded with `seed`).

    `scores_*` are the runs' scores.parquet tables with a `seed` column. Test sets and subsets are
    the record's (runner.evaluation_parts: a subset is its fakes and all reals). Clips are joined
    on (fold, test_set, clip_id) and kept where both scored them; coverage columns say how many
    each scored of how many, and how many they share.

    Seeds: seed k of a is paired with seed k of b, for each seed both ran ("0", "1", ...); and
    "pooled": each clip's score averaged over those seeds, on the clips both scored in all of
    them, which compares the seed ensembles on one set of clips instead of treating a clip's
    seeds as independent clips. Holm's correction runs over the rows of one seed (or of pooled):
    every test set, subset and metric of that comparison is one family.
    """
    seeds = sorted(set(scores_a["seed"]) & set(scores_b["seed"]))
    if not seeds:
        raise ValueError(f"the runs share no seed: {sorted(set(scores_a['seed']))} vs {sorted(set(scores_b['seed']))}")
    rows = []
    for label, a, b in [*((str(k), scores_a[scores_a["seed"] == k], scores_b[scores_b["seed"] == k]) for k in seeds),
                        ("pooled", _pooled(scores_a, seeds), _pooled(scores_b, seeds))]:
        family = _compare_once(a, b, folds, display, n_resamples, seed, alpha)
        adjusted = holm([r["p"] if r["p"] is not None else np.nan for r in family])
        for row, p_holm in zip(family, adjusted):
            row.update(p_holm=None if np.isnan(p_holm) else float(p_holm),
                       significant=None if np.isnan(p_holm) else bool(p_holm < alpha))
        rows += [{"seed": label, **row} for row in family]
    return rows


_CLIP = ["fold", "test_set", "clip_id"]


def _pooled(scores: pd.DataFrame, seeds: list[int]) -> pd.DataFrame:
    """One row per clip: its mean score over `seeds`, "scored" only where every seed scored it."""
    part = scores[scores["seed"].isin(seeds)]
    ok = part["status"] == "scored"
    grouped = part.assign(score=part["score"].where(ok), ok=ok).groupby(_CLIP, sort=False)
    out = grouped.agg(label=("label", "first"), subset_value=("subset_value", "first"),
                      score=("score", "mean"), n_ok=("ok", "sum")).reset_index()
    return out.assign(status=np.where(out["n_ok"] == len(seeds), "scored", "failed")).drop(columns="n_ok")


def _compare_once(a: pd.DataFrame, b: pd.DataFrame, folds, display, n_resamples, seed, alpha,
                  which=COMPARED_METRICS) -> list[dict]:
    from scipy.stats import norm

    from avbench.runner import evaluation_parts, not_computable

    joined = a[a["status"] == "scored"].merge(b.loc[b["status"] == "scored", [*_CLIP, "score"]], on=_CLIP,
                                             suffixes=("_a", "_b"))
    coverage = {}
    for (fold, test), part in a.groupby(["fold", "test_set"]):
        other = b[(b["fold"] == fold) & (b["test_set"] == test)]
        common = joined[(joined["fold"] == fold) & (joined["test_set"] == test)]
        coverage[fold, test] = {"a_scored": int((part["status"] == "scored").sum()), "a_total": len(part),
                                "b_scored": int((other["status"] == "scored").sum()), "b_total": len(other),
                                "n_common": len(common)}
    rows = []
    for fold, test, key, part in evaluation_parts(joined.assign(status="scored"), folds, display):
        y = part["label"].to_numpy(dtype=int)
        counts = {"n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum()),
                  **coverage.get((fold.name, test.name), {})}
        why = not_computable(part) or ("" if min(counts["n_real"], counts["n_fake"]) > 1 else
                                       "a test needs two fakes and two reals at least")
        for metric in which:
            row = {**key, "metric": metric, "a": None, "b": None, "diff": None, "ci_low": None, "ci_high": None,
                   "p": None, "method": "delong" if metric == "AUC" else None, **counts}
            if why:
                rows.append({**row, "not_computable": why})
                continue
            sa, sb = part["score_a"].to_numpy(dtype=float), part["score_b"].to_numpy(dtype=float)
            if metric == "AUC":
                test_result = delong_test(y, sa, sb)
                half = norm.ppf(1 - alpha / 2) * test_result["se"]
                test_result.update(ci_low=test_result["diff"] - half, ci_high=test_result["diff"] + half)
            else:
                test_result = paired_bootstrap(y, sa, sb, metric, n_resamples=n_resamples, seed=seed, alpha=alpha)
                row["method"] = "paired " + bootstrap_rule(len(y), n_resamples, metrics.BOOTSTRAP_BUDGET // 2)
            rows.append({**row, **{k: float(test_result[k]) for k in ("a", "b", "diff", "ci_low", "ci_high", "p")}})
    return rows


# -- runs on disk -------------------------------------------------------------------------------------------
def load_runs(runs_dir, detector: str, protocol: str) -> tuple[list[dict], pd.DataFrame]:
    """The run records of `detector` on `protocol` under `runs_dir` and their scores (one table,
    a `seed` column added); FileNotFoundError naming what exists when there are none."""
    from avbench.leaderboard import load_records

    every = load_records(runs_dir)
    records = [r for r in every if r["detector"] == detector and r["protocol"] == protocol]
    if not records:
        there = sorted({r["detector"] for r in every if r["protocol"] == protocol})
        raise FileNotFoundError(f"no runs of detector '{detector}' on protocol '{protocol}' under {runs_dir}; "
                                + (f"it has runs of {', '.join(there)}" if there else "it has no runs of that protocol"))
    tables = []
    for rec in records:
        path = Path(rec["_path"]).parent / rec.get("scores_file", "scores.parquet")
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the run record {rec['_path']} has no scores beside it")
        tables.append(pd.read_parquet(path).assign(seed=rec["seed"]))
    return records, pd.concat(tables, ignore_index=True)


def record_folds(record: dict):
    """(folds, display names) of the protocol a record was run under, rebuilt from its provenance."""
    from avbench import registry
    from avbench.protocol import Protocol

    proto = Protocol.from_spec(record["provenance"]["protocol_spec"])
    if proto.kind == "cross_manipulation" and not proto.params.get("categories"):
        proto.params["categories"] = [f["fold"] for f in record["folds"]]  # the held-out categories run
    display = {}
    for name in proto.datasets():
        try:
            display[name] = registry.datasets.get(name)().display_name or name
        except KeyError:
            display[name] = name
    return proto.folds(None, display), display


def compare_runs(runs_dir, detector_a: str, detector_b: str, protocol: str, *, n_resamples: int = 1000,
                 seed: int = 0, alpha: float = ALPHA) -> list[dict]:
    """`compare` on the runs of two detectors under `runs_dir`."""
    records, scores_a = load_runs(runs_dir, detector_a, protocol)
    _, scores_b = load_runs(runs_dir, detector_b, protocol)
    folds, display = record_folds(records[0])
    return compare(scores_a, scores_b, folds, display, n_resamples=n_resamples, seed=seed, alpha=alpha)


def mark_best(board: pd.DataFrame, runs_dir, alpha: float = ALPHA) -> pd.DataFrame:
    """The leaderboard with `p_vs_best` and `tied_with_best` on its AUC rows. In each column
    (protocol, train, test set, subset) the detector of highest mean AUC is the best; every other
    is compared with it by DeLong's test on seed-pooled scores (as `compare`'s "pooled": each clip's
    score averaged over the seeds both ran, on the clips both scored), and the p-values of a
    column's pairs are Holm-corrected together. tied_with_best is True for the best and for those
    not significantly different from it, False for the others, None where no test applies (AVG,
    cells without scores)."""
    board = board.assign(p_vs_best=np.nan, tied_with_best=None)
    runs, tests = {}, {}

    def scores_of(detector, protocol):
        if (detector, protocol) not in runs:
            runs[detector, protocol] = load_runs(runs_dir, detector, protocol)
        return runs[detector, protocol]

    def p_values(protocol, best, other) -> dict:
        if (protocol, best, other) not in tests:
            (records, a), (_, b) = scores_of(best, protocol), scores_of(other, protocol)
            seeds = sorted(set(a["seed"]) & set(b["seed"]))
            folds, display = record_folds(records[0])
            rows = (_compare_once(_pooled(a, seeds), _pooled(b, seeds), folds, display, 0, 0, alpha, ("AUC",))
                    if seeds else [])
            tests[protocol, best, other] = {(r["train"], r["test_set"], r["subset"]): r["p"] for r in rows}
        return tests[protocol, best, other]

    auc = board[(board["metric"] == "AUC") & board["mean"].notna()]
    for (protocol, train, test_set, subset), column in auc.groupby(["protocol", "train", "test_set", "subset"]):
        best = column["mean"].idxmax()
        others = column.drop(index=best)
        found = [p_values(protocol, column.at[best, "detector"], d).get((train, test_set, subset))
                 for d in others["detector"]]
        if all(p is None for p in found):
            continue
        board.at[best, "tied_with_best"] = True
        for index, p in zip(others.index, holm([np.nan if p is None else p for p in found])):
            if not np.isnan(p):
                board.at[index, "p_vs_best"] = p
                board.at[index, "tied_with_best"] = bool(p >= alpha)
    return board


def human_table(rows: list[dict], name_a: str, name_b: str) -> tuple[list[str], list[list[str]], str, list[str]]:
    """(headers, lines, title, notes) of `compare`'s rows for people: percent, the train and test
    set in the title when there is one of each, coverage as notes."""
    places = {(r["train"], r["test_set"]) for r in rows}
    one = len(places) == 1
    headers = ["seed", "subset" if one else "train/test/subset", "metric", "A", "B", "A-B", "p", "Holm p", "sig"]
    lines, notes = [], []
    for r in rows:
        where = r["subset"] if one else f"{r['train']}/{r['test_set']}/{r['subset']}"
        lines.append([r["seed"], where, r["metric"], _pct(r["a"]), _pct(r["b"]),
                      "" if r["diff"] is None else f"{100 * r['diff']:+.1f}", _p(r["p"]), _p(r["p_holm"]),
                      {True: "yes", False: "no"}.get(r["significant"], "n/a")])
        if "a_total" in r:
            note = (f"{r['test_set']}, seed {r['seed']}: {name_a} scored {r['a_scored']}/{r['a_total']}, "
                    f"{name_b} {r['b_scored']}/{r['b_total']}, {r['n_common']} in common")
            notes += [note] if note not in notes else []
    notes.append("A-B in points. AUC by DeLong's test, AP and EER by a paired bootstrap (p >= 1/(resamples+1)); "
                 f"sig: Holm p < {ALPHA}, corrected over the rows of one seed")
    title = f"A {name_a} vs B {name_b} (percent)" + (f"\ntrain {rows[0]['train']} · test set {rows[0]['test_set']}"
                                                 if one and rows else "")
    return headers, lines, title, notes


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def _p(value) -> str:
    return "n/a" if value is None else "<0.001" if value < 0.001 else f"{value:.3f}"
