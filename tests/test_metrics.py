import math
import time

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from avbench.metrics import (AGGREGATIONS, METRICS, _batch_metric, aggregate_windows, bootstrap_ci, class_metrics,
                             compute_metrics, four_class_label, higher_is_better)


def test_perfect_scores():
    m = compute_metrics([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], probabilities=True)
    assert m == {"AUC": 1.0, "AP": 1.0, "ACC": 1.0, "EER": 0.0}
    assert list(m) == list(METRICS)


def test_inverted_scores():
    m = compute_metrics([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1], probabilities=True)
    # AP by hand: the fakes come 3rd (precision 1/3) and 4th (precision 2/4), each half the recall
    assert m == pytest.approx({"AUC": 0.0, "AP": 0.5 * 1 / 3 + 0.5 * 2 / 4, "ACC": 0.0, "EER": 1.0})


def test_hand_computed_mixed_case():
    m = compute_metrics([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], probabilities=True)
    # pairs (fake > real): 0.4>0.1, 0.9>0.1, 0.9>0.6 of 4; fakes ranked 1st (P=1) and 3rd (P=2/3)
    assert m == pytest.approx({"AUC": 0.75, "AP": 0.5 + 0.5 * 2 / 3, "ACC": 0.5, "EER": 0.5})


def test_all_tied_scores_are_chance():
    m = compute_metrics([0, 0, 0, 1], [0.5] * 4, probabilities=True)
    assert m == pytest.approx({"AUC": 0.5, "AP": 0.25, "ACC": 0.25, "EER": 0.5})


def test_eer_interpolates_along_a_tied_segment():
    # ROC vertices (0, 0) -> (0, 1/2) -> (2/3, 1) -> (1, 1): the tie at 0.5 makes a sloped segment
    # tpr = 1/2 + 3/4 fpr, which crosses fpr = 1 - tpr at fpr = 2/7
    m = compute_metrics([1, 1, 0, 0, 0], [3.0, 0.5, 0.5, 0.5, -1.0], probabilities=False)
    assert m["EER"] == pytest.approx(2 / 7)


def test_one_class_gives_nan_not_an_error():
    m = compute_metrics([1, 1, 1], [0.2, 0.7, 0.9], probabilities=True)
    assert math.isnan(m["AUC"]) and math.isnan(m["AP"]) and math.isnan(m["EER"])
    assert m["ACC"] == pytest.approx(2 / 3)


def test_acc_only_for_probabilities():
    logits = [-2.0, 3.0, 0.5, 4.0]
    assert "ACC" not in compute_metrics([0, 1, 0, 1], logits, probabilities=False)
    with pytest.raises(ValueError, match="probabilities=False"):
        compute_metrics([0, 1, 0, 1], logits, probabilities=True)


def test_ap_uses_raw_scores_not_thresholded_ones():
    labels, scores = [0, 1, 0, 1], [0.6, 0.9, 0.1, 0.7]
    # raw: both fakes rank above every real, so AP = 1; at 0.5 three clips tie as "fake" and AP = 2/3
    thresholded = average_precision_score(labels, np.array(scores) >= 0.5)
    assert thresholded == pytest.approx(2 / 3)
    assert compute_metrics(labels, scores, probabilities=True)["AP"] == 1.0


@pytest.mark.parametrize("bad", [([0, 2], [0.1, 0.2]), ([0, 1], [0.1]), ([0, 1], [0.1, np.nan]), ([], [])])
def test_invalid_inputs_are_refused(bad):
    with pytest.raises(ValueError):
        compute_metrics(*bad, probabilities=False)


@pytest.mark.parametrize("metric", ["AUC", "AP", "EER", "ACC"])
def test_batch_engine_matches_scikit_learn_with_ties(metric):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, (20, 60))
    y[:, :2] = [0, 1]
    s = np.round(rng.uniform(size=(20, 60)) * 0.6 + 0.4 * y, 1)  # coarse rounding: many ties
    expected = [compute_metrics(yi, si, probabilities=True)[metric] for yi, si in zip(y, s)]
    assert _batch_metric(y.astype(float), s, metric) == pytest.approx(expected, abs=1e-12)
    if metric == "AUC":
        assert expected == pytest.approx([roc_auc_score(yi, si) for yi, si in zip(y, s)])


def _separable(n, rng):
    y = np.r_[np.zeros(n // 2), np.ones(n - n // 2)].astype(int)
    return y, 1 / (1 + np.exp(-(rng.normal(size=n) + 0.5 * (2 * y - 1))))


@pytest.mark.parametrize("metric", METRICS)
def test_bootstrap_ci_contains_the_estimate_and_narrows_with_n(metric):
    rng = np.random.default_rng(0)
    widths = []
    for n in (60, 2000):
        y, s = _separable(n, rng)
        low, high = bootstrap_ci(y, s, metric, n_resamples=400, seed=1)
        assert low <= compute_metrics(y, s, probabilities=True)[metric] <= high
        widths.append(high - low)
    assert widths[1] < widths[0] / 3  # width shrinks like 1/sqrt(n): sqrt(2000/60) ~ 5.8


def test_bootstrap_is_seeded_and_stratified():
    rng = np.random.default_rng(0)
    y, s = np.r_[np.zeros(50), 1].astype(int), rng.uniform(size=51)
    # With one fake, an unstratified resample lacks it about a third of the time and AUC is undefined.
    ci = bootstrap_ci(y, s, "AUC", n_resamples=200, seed=5)
    assert all(np.isfinite(ci))
    assert ci == bootstrap_ci(y, s, "AUC", n_resamples=200, seed=5)
    assert ci != bootstrap_ci(y, s, "AUC", n_resamples=200, seed=6)


def test_bootstrap_edge_cases():
    assert all(math.isnan(v) for v in bootstrap_ci([1, 1, 1], [0.2, 0.5, 0.9], "AUC"))
    low, high = bootstrap_ci([1, 1, 1], [0.2, 0.5, 0.9], "ACC", n_resamples=200)  # ACC needs one class only
    assert 0 <= low < 2 / 3 < high <= 1
    with pytest.raises(ValueError, match="ACC needs probabilities"):
        bootstrap_ci([0, 1], [-1.0, 2.0], "ACC", probabilities=False)
    with pytest.raises(ValueError, match="unknown metric"):
        bootstrap_ci([0, 1], [0.1, 0.9], "F1")


def test_bootstrap_of_1000_clips_takes_about_a_second():
    rng = np.random.default_rng(0)
    y, s = _separable(1000, rng)
    start = time.perf_counter()
    for metric in ("AUC", "AP", "EER"):
        bootstrap_ci(y, s, metric, n_resamples=1000)
    assert (time.perf_counter() - start) / 3 < 2.0


def test_aggregations_by_hand():
    x = [0.0, 2.0, 4.0]
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    p = np.mean(sigmoid(np.array(x)))
    expected = {"mean_logit": 2.0, "max": 4.0, "min": 0.0, "median": 2.0,
                "lse": np.log(np.mean(np.exp(x))), "mean_prob": np.log(p / (1 - p))}
    assert set(expected) == set(AGGREGATIONS)
    for how, value in expected.items():
        assert aggregate_windows(x, how) == pytest.approx(value), how


@pytest.mark.parametrize("how", AGGREGATIONS)
def test_aggregations_stay_on_the_logit_scale(how):
    assert aggregate_windows([1.7] * 5, how) == pytest.approx(1.7)
    assert aggregate_windows([800.0, 800.0], how) == pytest.approx(800.0)  # no overflow to inf or NaN


def test_aggregation_errors_name_the_choices():
    with pytest.raises(ValueError, match="mean_logit, mean_prob, max, min, median, lse"):
        aggregate_windows([0.0], "mean")
    with pytest.raises(ValueError):
        aggregate_windows([], "max")
    with pytest.raises(ValueError):
        aggregate_windows([0.0, np.nan], "max")


def test_higher_is_better():
    assert [higher_is_better(m) for m in METRICS] == [True, True, True, False]
    with pytest.raises(ValueError):
        higher_is_better("F1")


def test_localisation_auc_against_fake_segments():
    from avbench.metrics import frame_labels, localisation_auc

    # 10 frames at 5 fps: frame centres 0.1, 0.3, ... 1.9 s; the fake segment covers 0.8-1.2 s
    assert frame_labels(10, 5.0, [(0.8, 1.2)]).tolist() == [0, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    scores = np.zeros(10)
    scores[4:6] = 1.0
    assert localisation_auc(scores, 5.0, [(0.8, 1.2)]) == 1.0
    assert localisation_auc(-scores, 5.0, [(0.8, 1.2)]) == 0.0
    assert math.isnan(localisation_auc(scores, 5.0, [(0.0, 5.0)]))  # every frame fake: undefined


def test_four_class_labels_follow_which_modality_is_fake():
    assert [four_class_label(0, None, None), four_class_label(1, 1, 0), four_class_label(1, 0, 1),
            four_class_label(1, 1, 1)] == [0, 1, 2, 3]  # RARV, RAFV, FARV, FAFV
    assert four_class_label(1, None, 1) is None and four_class_label(1, 0, 0) is None  # unknown; desynchronised


def test_class_metrics_are_accuracy_and_the_macro_one_vs_rest_auc():
    rng = np.random.default_rng(0)
    y = np.r_[np.arange(4), rng.integers(0, 4, 36)]
    p = rng.dirichlet(np.ones(4), len(y))
    p[np.arange(len(y)), y] += 0.5 * rng.random(len(y))  # better than chance
    p /= p.sum(axis=1, keepdims=True)
    got = class_metrics(y, p)
    assert got["CLASS_ACC"] == pytest.approx(np.mean(p.argmax(axis=1) == y))
    assert got["CLASS_AUC"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert got["CLASS_AUC"] == pytest.approx(np.mean([roc_auc_score(y == c, p[:, c]) for c in range(4)]))
    missing = class_metrics(y[y != 2], p[y != 2])
    assert math.isnan(missing["CLASS_AUC"]) and 0 <= missing["CLASS_ACC"] <= 1
    with pytest.raises(ValueError, match="range"):
        class_metrics([0, 5], p[:2])


def test_weighted_f1_and_unweighted_recall_at_the_threshold():
    from sklearn.metrics import f1_score

    from avbench.metrics import threshold_metrics

    labels, scores = [0, 0, 0, 1, 1, 1, 1, 1], [0.1, 0.6, 0.2, 0.9, 0.4, 0.8, 0.7, 0.5]
    predicted = [0, 1, 0, 1, 0, 1, 1, 1]  # >= 0.5 is fake
    got = threshold_metrics(labels, scores)
    assert got["WA-F1"] == pytest.approx(f1_score(labels, predicted, average="weighted"))
    assert got["UAR"] == pytest.approx((2 / 3 + 4 / 5) / 2)  # the mean of the two classes' recalls
    assert threshold_metrics([0, 0, 1, 1], [0.9, 0.9, 0.9, 0.9])["UAR"] == 0.5  # everything fake: chance
