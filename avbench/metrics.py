"""Clip-level metrics, their bootstrap confidence intervals, and window-to-video score pooling.

Conventions: fake = 1 is the positive class; higher scores mean more likely fake; every metric is
a fraction in [0, 1] computed on the raw scores (AUC, AP, EER never see a threshold). ACC needs a
threshold, so it exists only for probabilities, at 0.5. A metric that needs both classes is NaN
when the labels hold one class only; callers report it rather than drop it.

Point estimates come from scikit-learn. The bootstrap needs a thousand of them in about a second,
which scikit-learn's per-call overhead does not allow, so it computes the same ROC and
precision-recall curves for a whole batch of resamples at once (`_batch_metric`); the tests check
that both agree on tied and untied scores.
"""

from __future__ import annotations

import numpy as np

METRICS = ("AUC", "AP", "ACC", "EER")
#: LOC_AUC: temporal localisation, the frame-level AUC of a fake clip's frame scores against its
#: annotated fake segments, averaged over the fake clips that have segments (AV-Deepfake1M, LAV-DF).
LOCALISATION_METRIC = "LOC_AUC"
#: The multi-class task avbench scores (the FauForensics paper's four-class one): which modality is
#: fake, class 0 real. A four-class run reports CLASS_ACC (accuracy of the most probable class) and
#: CLASS_AUC (the macro mean of one-vs-rest AUCs, as the authors' code computes it) beside METRICS,
#: which read the binary fake score.
FOUR_CLASSES = ("RARV", "RAFV", "FARV", "FAFV")
CLASS_METRICS = ("CLASS_ACC", "CLASS_AUC")
#: Calibration of probability scores (lower is better): ECE over ECE_BINS equal-width bins, and Brier.
CALIBRATION_METRICS = ("ECE", "BRIER")
ECE_BINS = 15
#: Decision metrics at THRESHOLD that some papers report beside ACC (HOLA's challenge table): the
#: support-weighted F1 of the two classes and the unweighted average recall (macro recall), both
#: from scikit-learn; computed where a protocol asks for them (`extra_metrics`), for probabilities.
THRESHOLD_METRICS = ("WA-F1", "UAR")
#: Every metric a run record may hold, in the order tables show them.
ALL_METRICS = METRICS + THRESHOLD_METRICS + CLASS_METRICS + CALIBRATION_METRICS + (LOCALISATION_METRIC,)
AGGREGATIONS = ("mean_logit", "mean_prob", "max", "min", "median", "lse")
THRESHOLD = 0.5
_BATCH_ELEMENTS = 2_000_000  # resamples x clips held in memory at once by the bootstrap
#: resamples x clips a bootstrap interval may cost (about 1.5 s on one core); beyond it each resample
#: holds fewer clips than the test set (see `resample_size`).
BOOTSTRAP_BUDGET = 5_000_000


def higher_is_better(metric: str) -> bool:
    if metric not in ALL_METRICS:
        raise ValueError(f"unknown metric '{metric}'; choose one of {', '.join(ALL_METRICS)}")
    return metric not in ("EER", *CALIBRATION_METRICS)


def compute_metrics(labels, scores, *, probabilities: bool) -> dict[str, float]:
    """AUC, AP, EER and (for probabilities only) ACC at 0.5, as fractions, in METRICS order."""
    y, s = _validate(labels, scores, probabilities)
    auc = ap = eer = np.nan
    if 0 < y.sum() < len(y):
        from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve  # 2 s to import: on use

        fpr, tpr, _ = roc_curve(y, s)
        auc, ap, eer = roc_auc_score(y, s), average_precision_score(y, s), _eer(fpr[None], tpr[None])[0]
    out = {"AUC": float(auc), "AP": float(ap)}
    if probabilities:
        out["ACC"] = float(np.mean((s >= THRESHOLD) == y))
    out["EER"] = float(eer)
    return out


def threshold_metrics(labels, scores) -> dict[str, float]:
    """WA-F1 and UAR of probability scores thresholded at THRESHOLD (fake = 1), as fractions."""
    from sklearn.metrics import f1_score, recall_score

    y, s = _validate(labels, scores, True)
    predicted = (s >= THRESHOLD).astype(int)
    return {"WA-F1": float(f1_score(y, predicted, average="weighted", labels=[0, 1], zero_division=0)),
            "UAR": float(recall_score(y, predicted, average="macro", labels=[0, 1], zero_division=0))}


def four_class_label(label: int, video_label: int | None, audio_label: int | None) -> int | None:
    """2 * audio fake + video fake (FOUR_CLASSES' order); None for a fake whose modalities are unknown
    or both real (a desynchronised pair is fake without a fake modality: no class of the four)."""
    if not label:
        return 0
    if video_label is None or audio_label is None:
        return None
    return 2 * int(audio_label) + int(video_label) or None


def class_metrics(classes, probabilities) -> dict[str, float]:
    """CLASS_ACC and CLASS_AUC of probabilities (n, C) against true classes in range(C); CLASS_AUC is
    NaN unless every class occurs (a one-vs-rest AUC needs both sides)."""
    from sklearn.metrics import accuracy_score, roc_auc_score

    y, p = np.asarray(classes, dtype=int), np.asarray(probabilities, dtype=float)
    if p.ndim != 2 or len(p) != len(y) or len(y) == 0 or not np.isin(y, range(p.shape[1])).all():
        raise ValueError(f"need classes in range({p.shape[-1]}) and probabilities (n, C) of one length, "
                         f"got {y.shape} and {p.shape}")
    every_class = len(np.unique(y)) == p.shape[1]
    auc = roc_auc_score(np.eye(p.shape[1], dtype=int)[y], p, average="macro") if every_class else np.nan
    return {"CLASS_ACC": float(accuracy_score(y, p.argmax(axis=1))), "CLASS_AUC": float(auc)}


def bootstrap_ci(labels, scores, metric: str, *, n_resamples: int = 1000, alpha: float = 0.05, seed: int = 0,
                 probabilities: bool = True, budget: int = BOOTSTRAP_BUDGET) -> tuple[float, float]:
    """Percentile interval of `metric` over stratified resamples: reals and fakes are resampled
    separately, so every resample keeps the test set's class proportions and has both classes.

    Cost is bounded by `budget` (resamples x clips): when the test set is too large, each resample
    draws m = resample_size(...) < n clips (an m-out-of-n bootstrap) and the interval's distances
    from the estimate are scaled by sqrt(m / n), the 1/sqrt(n) rate of AUC, AP, EER and ACC."""
    _check_metric(metric)
    if metric == "ACC" and not probabilities:
        raise ValueError("ACC needs probabilities: it is computed at a threshold of 0.5")
    if not 0 < alpha < 1 or n_resamples < 1:
        raise ValueError(f"need 0 < alpha < 1 and n_resamples >= 1, got alpha={alpha}, n_resamples={n_resamples}")
    y, s = _validate(labels, scores, probabilities)
    if metric != "ACC" and not 0 < y.sum() < len(y):
        return np.nan, np.nan
    m = resample_size(len(y), n_resamples, budget)
    values = np.concatenate([_batch_metric(y[rows], s[rows], metric)
                             for rows in stratified_resamples(y, n_resamples, m, seed)])
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    if m < len(y):
        value = _batch_metric(y[None], s[None], metric)[0]
        low, high = value + np.sqrt(m / len(y)) * (np.array([low, high]) - value)
    return float(low), float(high)


def resample_size(n: int, n_resamples: int, budget: int = BOOTSTRAP_BUDGET) -> int:
    """Clips per bootstrap resample: all n while n_resamples x n fits the budget, else budget // n_resamples."""
    return int(min(n, max(2, budget // n_resamples)))


def stratified_resamples(labels: np.ndarray, n_resamples: int, m: int, seed: int):
    """Index arrays (b, m) of `n_resamples` resamples with replacement, in batches that fit memory:
    fakes drawn from the fakes and reals from the reals, in the labels' proportions (m = n: the
    class counts themselves)."""
    rng = np.random.default_rng(seed)
    fakes, reals = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    m_fake = min(len(fakes), max(int(len(fakes) > 0), round(m * len(fakes) / len(labels))))
    m_real = min(len(reals), max(int(len(reals) > 0), m - m_fake))
    chunk = max(1, _BATCH_ELEMENTS // m)
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        yield np.concatenate([fakes[rng.integers(0, len(fakes), (b, m_fake))],
                              reals[rng.integers(0, len(reals), (b, m_real))]], axis=1)


def wilson_ci(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of a proportion: never outside [0, 1], sensible at 0 or n successes."""
    from scipy.stats import norm

    z, p = norm.ppf(1 - alpha / 2), successes / n
    centre, half = (p + z * z / (2 * n)), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float((centre - half) / (1 + z * z / n)), float((centre + half) / (1 + z * z / n))


def calibration_metrics(labels, probabilities, bins: int = ECE_BINS) -> dict[str, float]:
    """ECE (the count-weighted mean |mean score - fraction of fakes| over `bins` equal-width bins of
    [0, 1]) and the Brier score (scikit-learn's), in CALIBRATION_METRICS order."""
    from sklearn.metrics import brier_score_loss

    y, s = _validate(labels, probabilities, True)
    curve = reliability_curve(y, s, bins)
    ece = np.nansum(curve["count"] * np.abs(curve["mean_score"] - curve["fraction_fake"])) / len(y)
    return {"ECE": float(ece), "BRIER": float(brier_score_loss(y, s))}


def reliability_curve(labels, scores, bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Per equal-width bin of [0, 1] (the last closed on the right): mean score, fraction of fakes
    and count; NaN means for an empty bin. What a reliability diagram draws and ECE sums."""
    y, s = _validate(labels, scores, True)
    if bins < 1:
        raise ValueError(f"need at least one bin, got {bins}")
    which = np.minimum((s * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"edges": np.linspace(0, 1, bins + 1), "count": count,
                "mean_score": np.bincount(which, s, bins) / count,
                "fraction_fake": np.bincount(which, y, bins) / count}


def aggregate_windows(window_scores, how: str) -> float:
    """One video score from its windows' scores.

    Inputs are logits (any real number, higher = more fake) and so is the output, whatever `how`:
    mean_logit, max, min and median pool the logits themselves; lse is log(mean(exp(x))), a
    smooth max that stays on the logits' scale (a constant x gives x back); mean_prob averages
    the windows' probabilities sigmoid(x) and returns the logit of that mean.
    """
    x = np.asarray(window_scores, dtype=float)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"window scores must be a non-empty 1-D sequence, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"window scores must be finite logits; got {x[~np.isfinite(x)][:5].tolist()}")
    if how == "mean_logit":
        return float(x.mean())
    if how == "mean_prob":
        # logit(mean(sigmoid(x))) = log(sum(sigmoid(x))) - log(sum(sigmoid(-x))), computed in log space
        return float(np.logaddexp.reduce(-np.logaddexp(0, -x)) - np.logaddexp.reduce(-np.logaddexp(0, x)))
    if how == "max":
        return float(x.max())
    if how == "min":
        return float(x.min())
    if how == "median":
        return float(np.median(x))
    if how == "lse":
        return float(np.logaddexp.reduce(x) - np.log(len(x)))
    raise ValueError(f"unknown aggregation '{how}'; choose one of {', '.join(AGGREGATIONS)}")


def frame_labels(n_frames: int, frame_rate: float, segments) -> np.ndarray:
    """1 for the frames whose centre lies inside a fake segment (start, end) in seconds, else 0."""
    centres = (np.arange(n_frames) + 0.5) / frame_rate
    labels = np.zeros(n_frames, dtype=np.int64)
    for start, end in segments:
        labels[(centres >= start) & (centres < end)] = 1
    return labels


def localisation_auc(frame_scores, frame_rate: float, segments) -> float:
    """Frame-level AUC of one clip's frame scores against its fake segments; NaN when the frames
    fall into one class only (all fake, or segments outside the scored frames)."""
    scores = np.asarray(frame_scores, dtype=float)
    labels = frame_labels(len(scores), frame_rate, segments)
    if not 0 < labels.sum() < len(labels):
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric '{metric}'; choose one of {', '.join(METRICS)}")


def _validate(labels, scores, probabilities: bool) -> tuple[np.ndarray, np.ndarray]:
    y, s = np.asarray(labels), np.asarray(scores, dtype=float)
    if y.ndim != 1 or s.shape != y.shape or len(y) == 0:
        raise ValueError(f"labels and scores must be non-empty 1-D and of one length, got {y.shape} and {s.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 (real) or 1 (fake), got {sorted(set(np.unique(y).tolist()) - {0, 1})[:5]}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{int((~np.isfinite(s)).sum())} scores are not finite")
    if probabilities and (s.min() < 0 or s.max() > 1):
        raise ValueError(f"scores in [{s.min():.3g}, {s.max():.3g}] are not probabilities: pass probabilities=False")
    return y.astype(int), s


def _eer(fpr: np.ndarray, tpr: np.ndarray) -> np.ndarray:
    """Equal error rate of each row's ROC (vertices from (0, 0) to (1, 1), repeats allowed): where the
    piecewise-linear curve crosses FPR = FNR, interpolated along the segment that crosses it."""
    gap = fpr - (1 - tpr)  # -1 at (0, 0), rises to +1 at (1, 1)
    i = np.argmax(gap >= 0, axis=1)[:, None]  # first vertex on or past the line; its predecessor is before it
    g0, g1 = np.take_along_axis(gap, i - 1, 1), np.take_along_axis(gap, i, 1)
    f0, f1 = np.take_along_axis(fpr, i - 1, 1), np.take_along_axis(fpr, i, 1)
    return (f0 - g0 / (g1 - g0) * (f1 - f0))[:, 0]


def _batch_metric(y: np.ndarray, s: np.ndarray, metric: str) -> np.ndarray:
    """`metric` of each row of (labels, scores), both (B, n), every row holding both classes for
    AUC/AP/EER; the same definitions as scikit-learn's, vectorised over rows."""
    if metric == "ACC":
        return np.mean((s >= THRESHOLD) == y, axis=1)
    order = np.argsort(-s, axis=1, kind="stable")
    s, y = np.take_along_axis(s, order, 1), np.take_along_axis(y, order, 1)
    tp, fp = np.cumsum(y, axis=1), np.cumsum(1 - y, axis=1)
    # Thresholds sit between distinct scores: every clip of a tie group takes the group's last counts.
    n = s.shape[1]
    last_of_group = np.ones_like(s, dtype=bool)
    last_of_group[:, :-1] = s[:, 1:] != s[:, :-1]
    group_end = np.minimum.accumulate(np.where(last_of_group, np.arange(n), n)[:, ::-1], axis=1)[:, ::-1]
    tp, fp = np.take_along_axis(tp, group_end, 1), np.take_along_axis(fp, group_end, 1)
    zero = np.zeros((len(s), 1))
    tpr = np.concatenate([zero, tp], axis=1) / tp[:, -1:]
    if metric == "AP":
        return np.sum(np.diff(tpr, axis=1) * tp / (tp + fp), axis=1)
    fpr = np.concatenate([zero, fp], axis=1) / fp[:, -1:]
    if metric == "AUC":
        return np.trapezoid(tpr, fpr, axis=1)
    return _eer(fpr, tpr)
