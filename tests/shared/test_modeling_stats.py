"""shared.modeling.stats against scikit-learn / scikit-survival and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score
from sksurv.metrics import concordance_index_censored

from shared.modeling import stats


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_scikit_learn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    score = np.round(rng.normal(size=60) + y, 1)  # rounding makes ties
    assert stats.roc_auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert math.isnan(stats.roc_auc(np.ones(5), np.arange(5)))


@pytest.mark.parametrize("seed", range(5))
def test_c_index_matches_scikit_survival_with_tied_times_and_risks(seed):
    rng = np.random.default_rng(seed)
    time = rng.integers(1, 15, 80).astype(float)  # many tied times
    event = rng.random(80) < 0.6
    risk = np.round(-time / 5 + rng.normal(size=80), 1)  # tied risks too
    expected = concordance_index_censored(event, time, risk)[0]
    assert stats.c_index(time, event, risk) == pytest.approx(expected, abs=1e-12)
    assert math.isnan(stats.c_index([1.0, 2.0], [False, False], [0.1, 0.2]))


def test_classification_scores_by_hand():
    y = [1, 1, 1, 0, 0, 0, 0]
    pred = [1, 1, 0, 1, 0, 0, 0]
    scores = stats.classification_scores(y, [0.9, 0.8, 0.3, 0.7, 0.2, 0.1, 0.4], pred)
    assert scores["accuracy"] == pytest.approx(5 / 7)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["sensitivity"] == pytest.approx(2 / 3)
    assert scores["specificity"] == pytest.approx(3 / 4)
    assert scores["auc"] == pytest.approx(roc_auc_score(y, [0.9, 0.8, 0.3, 0.7, 0.2, 0.1, 0.4]))
    assert math.isnan(stats.classification_scores([0, 1], [0.1, 0.2], [0, 0])["precision"])


def test_stratified_resamples_keep_strata_and_are_reproducible():
    strata = np.array([0] * 12 + [1] * 28)
    a = stats.stratified_resamples(strata, 300, seed=7)
    b = stats.stratified_resamples(strata, 300, seed=7)
    assert a.shape == (300, 40) and np.array_equal(a, b)
    assert (strata[a] == 1).sum(axis=1).tolist() == [28] * 300  # class sizes kept
    assert not np.array_equal(a, stats.stratified_resamples(strata, 300, seed=8))


def test_percentile_bootstrap_covers_the_true_auc():
    """Coverage of the 95 % percentile CI of AUC over simulated test sets is near 95 %."""
    rng = np.random.default_rng(0)
    shift = 1.0  # binormal model: true AUC = Phi(shift / sqrt(2))
    true_auc = sps.norm.cdf(shift / math.sqrt(2))
    hits, widths = 0, []
    n_sets = 120
    for k in range(n_sets):
        y = np.array([0] * 40 + [1] * 40)
        score = rng.normal(size=80) + shift * y
        per = stats.bootstrap_scores(
            lambda i, y=y, s=score: {"auc": stats.roc_auc(y[i], s[i])}, y, 300, seed=k
        )
        summary, values = stats.bootstrap_summary({"auc": stats.roc_auc(y, score)}, per, ["auc"])
        assert len(values["auc"]) == 300
        low, high = summary["auc"]["inf_value"], summary["auc"]["sup_value"]
        assert low <= summary["auc"]["mean"] <= high
        hits += low <= true_auc <= high
        widths.append(high - low)
    assert 0.85 <= hits / n_sets <= 1.0
    assert 0.1 < float(np.mean(widths)) < 0.3


def test_bootstrap_keeps_undefined_resamples_in_place():
    """Issue 15 §6: resample k is column k of every metric, NaN where the metric is undefined.

    Only patient 0 (a negative) is predicted positive, so precision is undefined in exactly
    the resamples that leave patient 0 out; the CI comes from the defined ones.
    """
    y = np.array([0] * 14 + [1] * 6)
    prediction = np.zeros(20, dtype=int)
    prediction[0] = 1
    resamples = stats.stratified_resamples(y, 200, 7)
    per = stats.bootstrap_scores(
        lambda i: stats.classification_scores(y[i], np.arange(20)[i], prediction[i]), y, 200, 7
    )
    summary, values = stats.bootstrap_summary(
        stats.classification_scores(y, np.arange(20), prediction), per, ["auc", "precision"]
    )
    assert len(values["auc"]) == len(values["precision"]) == 200
    undefined = [not np.isin(0, r) for r in resamples]
    assert 0 < sum(undefined) < 200
    assert [math.isnan(v) for v in values["precision"]] == undefined
    defined = [v for v in values["precision"] if not math.isnan(v)]
    assert summary["precision"]["inf_value"] == np.percentile(defined, 2.5)
    assert summary["auc"]["order"] == 0 and summary["precision"]["order"] == 1


def test_corrected_ci_and_ttest_by_hand():
    a = np.array([0.71, 0.65, 0.80, 0.74, 0.69, 0.77, 0.62, 0.73, 0.70, 0.76])
    b = np.array([0.68, 0.66, 0.75, 0.70, 0.70, 0.71, 0.60, 0.72, 0.66, 0.70])
    n_train, n_test = 80, 20
    # Hand computation: J = 10, variance inflated by 1/J + n_test/n_train = 0.1 + 0.25.
    mean = sum(a) / 10
    var = sum((x - mean) ** 2 for x in a) / 9
    half = 2.2621571627409915 * math.sqrt(0.35 * var)  # t(0.975, 9)
    got = stats.corrected_ci(a, n_train, n_test)
    assert got == pytest.approx((mean, mean - half, mean + half), abs=1e-9)

    d = a - b
    dm = sum(d) / 10
    dv = sum((x - dm) ** 2 for x in d) / 9
    t = dm / math.sqrt(0.35 * dv)
    result = stats.corrected_ttest(a, b, n_train, n_test)
    assert result["t"] == pytest.approx(t, abs=1e-12)
    assert result["p_value"] == pytest.approx(2 * sps.t.sf(abs(t), 9), abs=1e-12)
    # The correction makes the test more conservative than the naive paired t-test.
    assert result["p_value"] > sps.ttest_rel(a, b).pvalue
    assert stats.corrected_ttest(a, a, n_train, n_test)["p_value"] == 1.0


def test_paired_bootstrap_difference():
    rng = np.random.default_rng(3)
    y = np.array([0] * 50 + [1] * 50)
    good = rng.normal(size=100) + 1.5 * y
    weak = rng.normal(size=100) + 0.2 * y
    better = stats.paired_bootstrap_auc(y, good, weak, n_resamples=400)
    assert better["difference"] > 0.2 and better["inf_value"] > 0 and better["p_value"] < 0.01
    same = stats.paired_bootstrap_auc(y, good, good, n_resamples=400)
    assert same["difference"] == 0 and same["p_value"] == 1.0

    time = rng.exponential(10, 100)
    event = rng.random(100) < 0.7
    risk = -time + rng.normal(scale=3, size=100)
    diff = stats.paired_bootstrap_c_index(time, event, risk, rng.normal(size=100), n_resamples=200)
    assert diff["difference"] > 0.2 and diff["n"] == 200


def test_holm_matches_the_step_down_procedure_by_hand():
    """Issue 15 §7: Holm's adjustment (sorted p x (m - rank), running maximum, capped at 1)."""
    raw = [0.01, 0.04, 0.03, 0.005, 0.5]
    # sorted: 0.005*5=0.025, 0.01*4=0.04, 0.03*3=0.09, 0.04*2=0.08->0.09, 0.5*1=0.5
    assert stats.holm(raw) == pytest.approx([0.04, 0.09, 0.09, 0.025, 0.5])
    assert stats.holm([0.6, 0.7]) == [1.0, 1.0]
    assert stats.holm([]) == []
