"""Model metrics and their uncertainty, numpy/scipy only (the web process uses them too).

- ROC AUC (Mann-Whitney, average ranks for ties) and Harrell's c-index (the pairs and tie
  rules of scikit-survival's `concordance_index_censored`), the classification metrics.
- Stratified percentile bootstrap with a fixed seed: the same seed, strata and patient order
  give the same resamples, so two models' bootstraps on one test set are paired.
- Nadeau & Bengio (2003) corrected resampled t: CI of a CV mean and the paired t-test.

Undefined metrics (one class, no comparable pair, no positive prediction) are float("nan").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy import stats as sps

CLASSIFICATION_METRICS: tuple[str, ...] = (
    "auc",
    "accuracy",
    "precision",
    "sensitivity",
    "specificity",
)
SURVIVAL_METRICS: tuple[str, ...] = ("c-index",)
NAN = float("nan")
RISK_TIE_TOLERANCE = 1e-8  # as scikit-survival


def metric_names(kind: str) -> tuple[str, ...]:
    """Return the metric keys of a model kind, in display order."""
    return CLASSIFICATION_METRICS if kind == "classification" else SURVIVAL_METRICS


# --- point metrics -------------------------------------------------------------------------------
def roc_auc(y: Sequence[int] | np.ndarray, score: Sequence[float] | np.ndarray) -> float:
    """Return the ROC AUC of scores for 0/1 labels (NaN when a class is absent)."""
    y = np.asarray(y, dtype=bool)
    score = np.asarray(score, dtype=float)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return NAN
    ranks = sps.rankdata(score)  # average ranks: a tie counts one half
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def c_index(
    time: Sequence[float] | np.ndarray,
    event: Sequence[bool] | np.ndarray,
    risk: Sequence[float] | np.ndarray,
) -> float:
    """Return Harrell's concordance index of risk scores (NaN without a comparable pair).

    A pair (i, j) is comparable when i had the event and j was seen longer, or j was
    censored at i's event time; it is concordant when i has the higher risk, and risks
    within 1e-8 count one half.
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=bool)
    risk = np.asarray(risk, dtype=float)
    ti, tj = time[:, None], time[None, :]
    comparable = event[:, None] & ((ti < tj) | ((ti == tj) & ~event[None, :]))
    n_pairs = int(comparable.sum())
    if n_pairs == 0:
        return NAN
    diff = risk[:, None] - risk[None, :]
    tied = np.abs(diff) <= RISK_TIE_TOLERANCE
    concordant = (diff > 0) & ~tied
    return float(((concordant & comparable).sum() + 0.5 * (tied & comparable).sum()) / n_pairs)


def _ratio(num: int, den: int) -> float:
    """Return num / den, NaN when den is 0."""
    return num / den if den else NAN


def classification_scores(
    y: Sequence[int] | np.ndarray,
    probability: Sequence[float] | np.ndarray,
    prediction: Sequence[int] | np.ndarray,
) -> dict[str, float]:
    """Return auc (from the class-1 scores) and the metrics of the 0/1 predictions."""
    y = np.asarray(y, dtype=bool)
    pred = np.asarray(prediction, dtype=bool)
    tp = int((y & pred).sum())
    tn = int((~y & ~pred).sum())
    fp = int((~y & pred).sum())
    fn = int((y & ~pred).sum())
    return {
        "auc": roc_auc(y, probability),
        "accuracy": _ratio(tp + tn, y.size),
        "precision": _ratio(tp, tp + fp),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
    }


def survival_scores(
    time: Sequence[float] | np.ndarray,
    event: Sequence[bool] | np.ndarray,
    risk: Sequence[float] | np.ndarray,
) -> dict[str, float]:
    """Return the survival metrics of risk scores (higher = higher risk)."""
    return {"c-index": c_index(time, event, risk)}


# --- bootstrap -----------------------------------------------------------------------------------
def stratified_resamples(
    strata: Sequence[object] | np.ndarray, n_resamples: int, seed: int
) -> np.ndarray:
    """Return (n_resamples, n) indices drawn with replacement within each stratum.

    Every resample keeps each stratum's size. Deterministic in (strata, n_resamples, seed).
    """
    strata = np.asarray(strata)
    rng = np.random.default_rng(seed)
    out = np.empty((n_resamples, strata.size), dtype=np.intp)
    start = 0
    for value in np.unique(strata):  # sorted: independent of the patients' order of strata
        members = np.flatnonzero(strata == value)
        picks = rng.integers(0, members.size, size=(n_resamples, members.size))
        out[:, start : start + members.size] = members[picks]
        start += members.size
    return out


def bootstrap_scores(
    score: Callable[[np.ndarray], Mapping[str, float]],
    strata: Sequence[object] | np.ndarray,
    n_resamples: int = 1000,
    seed: int = 42,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, float]]:
    """Return score(indices) for each stratified resample, in resample order."""
    resamples = stratified_resamples(strata, n_resamples, seed)
    out = []
    for i, indices in enumerate(resamples):
        if progress is not None:
            progress(i, n_resamples)
        out.append({k: float(v) for k, v in score(indices).items()})
    return out


def percentile_ci(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Return the percentile interval of bootstrap values, skipping NaN (NaN if none left)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return NAN, NAN
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_summary(
    point: Mapping[str, float],
    per_resample: Sequence[Mapping[str, float]],
    metrics: Sequence[str],
    level: float = 0.95,
) -> tuple[dict[str, dict[str, float]], dict[str, list[float]]]:
    """Return ({metric: mean/inf/sup/order}, {metric: value of each resample}).

    `mean` is the estimate on the whole set; the bounds are percentile bootstrap bounds over
    the resamples where the metric is defined. The values keep one entry per resample, in
    resample order (NaN where the metric is undefined), so position k is resample k for
    every metric.
    """
    summary: dict[str, dict[str, float]] = {}
    values: dict[str, list[float]] = {}
    for order, name in enumerate(metrics):
        column = np.array([r.get(name, NAN) for r in per_resample], dtype=float)
        values[name] = [float(v) for v in column]
        low, high = percentile_ci(column, level)
        summary[name] = {
            "mean": float(point.get(name, NAN)),
            "inf_value": low,
            "sup_value": high,
            "order": order,
        }
    return summary, values


def paired_bootstrap_difference(
    score_a: Callable[[np.ndarray], float],
    score_b: Callable[[np.ndarray], float],
    strata: Sequence[object] | np.ndarray,
    n_resamples: int = 1000,
    seed: int = 42,
    level: float = 0.95,
) -> dict[str, float]:
    """Bootstrap score_a - score_b on identical stratified resamples of one test set.

    Returns the difference on the whole set, its percentile CI, a two-sided p-value
    (twice the smaller tail share of differences at or beyond 0) and the resamples used.
    """
    every = np.arange(np.asarray(strata).size)
    observed = score_a(every) - score_b(every)
    diffs = np.array(
        [score_a(idx) - score_b(idx) for idx in stratified_resamples(strata, n_resamples, seed)]
    )
    diffs = diffs[np.isfinite(diffs)]
    if diffs.size == 0 or not math.isfinite(observed):
        return {"difference": NAN, "inf_value": NAN, "sup_value": NAN, "p_value": NAN, "n": 0}
    low, high = percentile_ci(diffs, level)
    tail = min((diffs <= 0).mean(), (diffs >= 0).mean())
    p_value = min(1.0, 2 * max(float(tail), 1 / diffs.size))
    return {
        "difference": float(observed),
        "inf_value": low,
        "sup_value": high,
        "p_value": p_value,
        "n": int(diffs.size),
    }


def paired_bootstrap_auc(
    y: Sequence[int] | np.ndarray,
    score_a: Sequence[float] | np.ndarray,
    score_b: Sequence[float] | np.ndarray,
    n_resamples: int = 1000,
    seed: int = 42,
) -> dict[str, float]:
    """Paired bootstrap of AUC(a) - AUC(b) on one test set, stratified on the class."""
    y, a, b = np.asarray(y), np.asarray(score_a, dtype=float), np.asarray(score_b, dtype=float)
    return paired_bootstrap_difference(
        lambda i: roc_auc(y[i], a[i]), lambda i: roc_auc(y[i], b[i]), y, n_resamples, seed
    )


def paired_bootstrap_c_index(
    time: Sequence[float] | np.ndarray,
    event: Sequence[bool] | np.ndarray,
    risk_a: Sequence[float] | np.ndarray,
    risk_b: Sequence[float] | np.ndarray,
    n_resamples: int = 1000,
    seed: int = 42,
) -> dict[str, float]:
    """Paired bootstrap of c-index(a) - c-index(b) on one test set, stratified on the event."""
    t, e = np.asarray(time, dtype=float), np.asarray(event, dtype=bool)
    a, b = np.asarray(risk_a, dtype=float), np.asarray(risk_b, dtype=float)
    return paired_bootstrap_difference(
        lambda i: c_index(t[i], e[i], a[i]),
        lambda i: c_index(t[i], e[i], b[i]),
        e,
        n_resamples,
        seed,
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Return Holm's step-down adjusted p-values (family-wise error), in the input order.

    The i-th smallest of m p-values is multiplied by (m - i), made non-decreasing along the
    sorted order and capped at 1.
    """
    values = np.asarray(p_values, dtype=float)
    order = np.argsort(values, kind="mergesort")
    m = values.size
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * values[index]))
        adjusted[index] = running
    return [float(v) for v in adjusted]


# --- cross-validation (Nadeau & Bengio) ----------------------------------------------------------
def _corrected_scale(values: np.ndarray, n_train: int, n_test: int) -> float:
    """Return the corrected standard error: sqrt((1/J + n_test/n_train) * sample variance)."""
    return math.sqrt((1 / values.size + n_test / n_train) * float(np.var(values, ddof=1)))


def corrected_ci(
    scores: Sequence[float] | np.ndarray, n_train: int, n_test: int, level: float = 0.95
) -> tuple[float, float, float]:
    """Return (mean, low, high): the CV mean with the Nadeau-Bengio corrected t interval.

    `scores` holds one value per split (k folds x r repeats; NaN splits are left out);
    n_train / n_test are the sizes of a split's training and validation parts. Bounds are
    not clipped to the metric's range.
    """
    values = np.asarray(scores, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return NAN, NAN, NAN
    mean = float(values.mean())
    if values.size < 2:
        return mean, NAN, NAN
    half = sps.t.ppf((1 + level) / 2, values.size - 1) * _corrected_scale(values, n_train, n_test)
    return mean, float(mean - half), float(mean + half)


def corrected_ttest(
    scores_a: Sequence[float] | np.ndarray,
    scores_b: Sequence[float] | np.ndarray,
    n_train: int,
    n_test: int,
) -> dict[str, float]:
    """Corrected resampled t-test of two models scored on the same CV splits.

    Returns the mean difference (a - b), t and the two-sided p-value (J - 1 degrees of
    freedom). NaN when fewer than 2 paired finite splits; p = 1 when all differences are 0.
    """
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    if a.shape != b.shape:
        raise ValueError("the two models were not scored on the same splits")
    diffs = (a - b)[np.isfinite(a) & np.isfinite(b)]
    if diffs.size < 2:
        return {"difference": NAN, "t": NAN, "p_value": NAN, "n": int(diffs.size)}
    mean = float(diffs.mean())
    scale = _corrected_scale(diffs, n_train, n_test)
    if scale == 0:
        return {
            "difference": mean,
            "t": NAN if mean else 0.0,
            "p_value": 0.0 if mean else 1.0,
            "n": int(diffs.size),
        }
    t = mean / scale
    return {
        "difference": mean,
        "t": float(t),
        "p_value": float(2 * sps.t.sf(abs(t), diffs.size - 1)),
        "n": int(diffs.size),
    }


def cv_summary(
    cv_scores: Mapping[str, Sequence[float]],
    metrics: Sequence[str],
    n_train: int,
    n_test: int,
    level: float = 0.95,
) -> dict[str, dict[str, float]]:
    """Return {metric: mean/inf/sup/order} of per-split CV scores (corrected t interval).

    Every metric here lies in [0, 1], so the bounds are clipped to it (a t interval is
    symmetric and can overshoot near 1).
    """
    out = {}
    for order, name in enumerate(metrics):
        mean, low, high = corrected_ci(cv_scores.get(name, []), n_train, n_test, level)
        low, high = (min(max(v, 0.0), 1.0) if math.isfinite(v) else v for v in (low, high))
        out[name] = {"mean": mean, "inf_value": low, "sup_value": high, "order": order}
    return out
