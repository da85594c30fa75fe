"""Significance between detectors, the record's intervals and calibration: against hand values and a
direct O(n^2) computation, then `avbench compare` and `leaderboard --significance` on demo runs."""

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from avbench import metrics, protocol
from avbench.cli import app
from avbench.runner import RunSettings, Runner
from avbench.significance import auc_variance, delong_test, holm, interval, paired_bootstrap

cli = CliRunner()


def structural_components(labels, scores_a, scores_b):
    """DeLong 1988 as written: psi over every (fake, real) pair; the AUCs and var(AUC_a - AUC_b)."""
    y = np.asarray(labels)

    def components(s):
        x, r = s[y == 1][:, None], s[y == 0][None, :]
        psi = (x > r) + 0.5 * (x == r)
        return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)

    (auc_a, v10_a, v01_a), (auc_b, v10_b, v01_b) = components(scores_a), components(scores_b)
    m, n = len(v10_a), len(v01_a)
    s10, s01 = np.cov(np.stack([v10_a, v10_b])), np.cov(np.stack([v01_a, v01_b]))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    return auc_a, auc_b, var


def test_delong_by_hand():
    # fakes 0.9, 0.4 and reals 0.5, 0.1: V10 = (1, 1/2), V01 = (1/2, 1), AUC 3/4,
    # var = var(V10)/2 + var(V01)/2 = 0.125/2 + 0.125/2
    assert auc_variance([1, 1, 0, 0], [0.9, 0.4, 0.5, 0.1]) == pytest.approx((0.75, 0.125))


def test_delong_agrees_with_the_structural_components_on_tied_scores():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    a = np.round(rng.normal(size=300) + y, 1)  # rounded: many ties
    b = np.round(rng.normal(size=300) + 0.5 * y + 0.3 * a, 1)
    auc_a, auc_b, var = structural_components(y, a, b)
    result = delong_test(y, a, b)
    assert (result["a"], result["b"]) == pytest.approx((auc_a, auc_b), abs=1e-12)
    assert result["se"] == pytest.approx(math.sqrt(var), rel=1e-9)
    assert result["p"] == pytest.approx(math.erfc(abs(auc_a - auc_b) / math.sqrt(var) / math.sqrt(2)), rel=1e-9)
    assert result["a"] == pytest.approx(metrics.compute_metrics(y, a, probabilities=False)["AUC"], abs=1e-12)


def test_delong_variance_is_near_the_bootstrap_variance():
    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.4).astype(int)
    s = rng.normal(size=2000) + y
    _, var = auc_variance(y, s)
    boot = np.concatenate([metrics._batch_metric(y[rows], s[rows], "AUC")
                           for rows in metrics.stratified_resamples(y, 2000, len(y), seed=1)])
    assert 0.8 < var / boot.var() < 1.25


def test_a_detector_against_itself_is_not_significant_and_a_clear_difference_is():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    good, noise = rng.normal(size=400) + 2 * y, rng.normal(size=400)
    same = delong_test(y, good, good)
    assert same["diff"] == 0 and same["p"] == 1 and math.isnan(same["z"])
    assert delong_test(y, good, noise)["p"] < 1e-6
    for metric in ("AP", "EER"):
        assert paired_bootstrap(y, good, good, metric, n_resamples=200)["p"] == 1
        different = paired_bootstrap(y, good, noise, metric, n_resamples=200)
        assert different["p"] == pytest.approx(1 / 201) and different["ci_low"] * different["ci_high"] > 0


def test_paired_bootstrap_is_seeded():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 200)
    a, b = rng.normal(size=200) + y, rng.normal(size=200) + 0.8 * y
    first = paired_bootstrap(y, a, b, "AP", n_resamples=300, seed=4)
    assert first == paired_bootstrap(y, a, b, "AP", n_resamples=300, seed=4)
    assert first["ci_low"] != paired_bootstrap(y, a, b, "AP", n_resamples=300, seed=5)["ci_low"]


def test_holm_on_a_known_family():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06 (monotone)
    adjusted = holm([0.01, 0.04, 0.03, float("nan"), 0.005])
    assert adjusted[[0, 1, 2, 4]] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and math.isnan(adjusted[3])
    assert holm([0.5, 0.9]).tolist() == [1.0, 1.0]  # 0.5 x 2 caps at 1; the larger p may not fall below it


def test_the_record_states_its_interval_rules():
    rng = np.random.default_rng(5)
    y = (rng.random(20_000) < 0.5).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(size=20_000) + y)))
    assert interval(y, p, "AUC", n_resamples=100, seed=0, probabilities=True)[2] == "delong"
    assert interval(y, p, "ACC", n_resamples=100, seed=0, probabilities=True)[2] == "wilson"
    assert interval(y, p, "AP", n_resamples=100, seed=0, probabilities=True)[2] == "bootstrap(100 resamples)"
    low, high, rule = interval(y, p, "EER", n_resamples=1000, seed=0, probabilities=True)
    assert rule == "bootstrap(1000 resamples of 5000 of 20000 clips, scaled by sqrt(m/n))"
    full = metrics.bootstrap_ci(y, p, "EER", n_resamples=300, budget=10**9)
    assert low < metrics.compute_metrics(y, p, probabilities=True)["EER"] < high
    assert 0.75 < (high - low) / (full[1] - full[0]) < 1.33  # the m-out-of-n interval, scaled, is as wide


def test_ece_and_brier_by_hand():
    y, s = [0, 0, 1, 1], [0.1, 0.4, 0.6, 0.9]
    # two bins: (0.1, 0.4) mean 0.25 with no fake, (0.6, 0.9) mean 0.75 all fake: ECE 0.25
    assert metrics.calibration_metrics(y, s, bins=2) == pytest.approx({"ECE": 0.25, "BRIER": 0.085})
    assert metrics.calibration_metrics(y, s)["ECE"] == pytest.approx(0.25)  # 15 bins: one clip each
    curve = metrics.reliability_curve([0, 1, 1], [0.0, 0.95, 1.0], bins=2)
    assert curve["count"].tolist() == [1, 2] and curve["fraction_fake"].tolist() == [0.0, 1.0]
    assert curve["mean_score"] == pytest.approx([0.0, 0.975])
    assert [metrics.higher_is_better(m) for m in metrics.CALIBRATION_METRICS] == [False, False]
    assert metrics.ALL_METRICS.index("BRIER") < metrics.ALL_METRICS.index(metrics.LOCALISATION_METRIC)


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    """Two seeds of random and handcrafted on a demo corpus of 20 identities (36 test clips, about 40 s).
    The shared tiny_demo's test set (10 clips, 2 of them real) is too small for any test to tell two
    detectors apart: there handcrafted's AUC is 75% and no difference survives Holm's correction."""
    from avbench.demo import generate_corpus

    root, runs = tmp_path_factory.mktemp("demo20"), tmp_path_factory.mktemp("runs")
    generate_corpus(root, identities=20, real_per_identity=2, seconds=1.2, size=96)
    for name in ("random", "handcrafted"):
        Runner(RunSettings(detector=name, protocol=protocol.get("demo"), seeds=(0, 1), runs_dir=runs,
                           data_roots={"demo": root}, cache_dir=runs / "cache", bootstrap_resamples=20)).run()
    return runs


def test_records_hold_calibration_and_interval_rules(demo_runs):
    record = json.loads((demo_runs / "handcrafted" / "demo" / "seed0" / "record.json").read_text())
    rows = {(r["subset"], r["metric"]): r for r in record["metrics"]}
    assert rows["all", "AUC"]["ci_method"] == "delong" and rows["all", "ACC"]["ci_method"] == "wilson"
    assert rows["all", "AP"]["ci_method"] == "bootstrap(20 resamples)"
    assert rows["all", "ECE"]["binning"] == "15 equal-width bins on [0, 1]" and rows["all", "BRIER"]["value"] >= 0


def test_compare_calls_random_against_handcrafted_significant(demo_runs):
    result = cli.invoke(app, ["compare", "random", "handcrafted", "-p", "demo", "--runs-dir", str(demo_runs),
                              "--format", "json", "--resamples", "200"])
    assert result.exit_code == 0, result.output
    rows = {(r["seed"], r["subset"], r["metric"]): r for r in json.loads(result.output)}
    pooled = rows["pooled", "all", "AUC"]
    assert pooled["significant"] and pooled["p_holm"] < 0.01 and pooled["diff"] < 0
    assert pooled["n_common"] == pooled["a_total"] == pooled["b_scored"] == 36
    assert {r["seed"] for r in rows.values()} == {"0", "1", "pooled"}
    itself = json.loads(cli.invoke(app, ["compare", "handcrafted", "handcrafted", "-p", "demo", "--runs-dir",
                                         str(demo_runs), "--format", "json"]).output)
    assert not any(r["significant"] for r in itself) and {r["p"] for r in itself if r["p"] is not None} == {1.0}
    table = cli.invoke(app, ["compare", "random", "handcrafted", "-p", "demo", "--runs-dir", str(demo_runs)],
                       terminal_width=80)
    assert table.exit_code == 0 and "pooled" in table.output and "in common" in table.output
    assert max(map(len, table.output.splitlines())) <= 80


def test_compare_refuses_unknown_runs(demo_runs):
    result = cli.invoke(app, ["compare", "random", "nosuch", "-p", "demo", "--runs-dir", str(demo_runs)])
    assert result.exit_code == 2 and "no runs of detector 'nosuch'" in result.output


def test_leaderboard_marks_detectors_tied_with_the_best(demo_runs):
    result = cli.invoke(app, ["leaderboard", "--runs-dir", str(demo_runs), "--significance", "--format", "json",
                              "--metric", "AUC"])
    assert result.exit_code == 0, result.output
    cells = {(r["detector"], r["subset"]): r for r in json.loads(result.output)}
    assert cells["handcrafted", "all"]["tied_with_best"] is True
    assert cells["random", "all"]["tied_with_best"] is False and cells["random", "all"]["p_vs_best"] < 0.05
    assert cells["random", "AVG"]["tied_with_best"] is None


def test_compare_explains_itself():
    result = cli.invoke(app, ["compare", "--help"], terminal_width=80)
    assert result.exit_code == 0
    assert all(word in result.output for word in ("DeLong", "paired bootstrap", "pooled", "Holm", "--protocol"))
