"""M4: paired tests between stored models (§6.8 ModelComparison), valid or explained.

- Same test patients: paired bootstrap of the metric difference on identical resamples of the
  test patients (each model's stored predictions against the stored truth).
- No usable test set, but the same outer folds (equal `cv_signature`, which holds a hash of
  the folds' patients and of the training labels): the Nadeau-Bengio corrected resampled t-test
  on the per-split nested CV scores. Models trained before the signature held the folds
  themselves are not paired this way.
- Anything else: a readable string in the cell; the diagonal is 1.0.

Every pair is a test, so `p_values_holm` adds Holm's adjustment over the pairs of the request
that have a p-value (family-wise error rate), beside the raw values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.modeling import stats
from shared.modeling.models import TrainedModel
from shared.modeling.results import as_float, is_survival

DIFFERENT_KINDS = "not comparable: one model is a classifier, the other a survival model"
NO_COMMON_GROUND = (
    "not comparable: the models were neither tested on the same patients nor cross-validated "
    "on the same patients and folds"
)


def metric_of(model: TrainedModel) -> str:
    """Return the metric models of this kind are compared on."""
    return "c-index" if is_survival(model) else "auc"


def _test_arrays(model: TrainedModel) -> tuple[list[str], dict[str, Any]] | None:
    """Return a model's test patients (sorted) and its per-patient score, if stored."""
    truths = model.test_outcomes or {}
    if not truths or not model.test_predictions:
        return None
    scores: dict[str, Any] = {}
    for patient in truths:
        if is_survival(model):
            value = (model.test_predictions.get(patient) or {}).get("risk_score")
        else:
            item = (model.test_predictions_probabilities or {}).get(patient) or {}
            probabilities = item.get("probabilities") or []
            value = probabilities[-1] if probabilities else None
        if not np.isfinite(as_float(value)):
            return None
        scores[patient] = as_float(value)
    return sorted(truths), scores


def _same_test_set(a: TrainedModel, b: TrainedModel) -> float | None:
    """Return the paired-bootstrap p-value when both models hold the same tested patients."""
    first, second = _test_arrays(a), _test_arrays(b)
    if first is None or second is None or first[0] != second[0]:
        return None
    patients = first[0]
    truths = a.test_outcomes or {}
    if truths != (b.test_outcomes or {}):
        return None  # same patients but another truth (another outcome): not paired
    score_a = np.array([first[1][p] for p in patients])
    score_b = np.array([second[1][p] for p in patients])
    if is_survival(a):
        time = np.array([float(truths[p]["time"]) for p in patients])
        event = np.array([bool(truths[p]["event"]) for p in patients])
        return stats.paired_bootstrap_c_index(time, event, score_a, score_b)["p_value"]
    truth = np.array([int(truths[p]) for p in patients])
    return stats.paired_bootstrap_auc(truth, score_a, score_b)["p_value"]


def _same_folds(a: TrainedModel, b: TrainedModel, metric: str) -> float | None:
    """Return the corrected resampled t-test p-value when both share patients and folds."""
    signature = a.cv_signature or {}
    if "folds" not in signature or "labels" not in signature or signature != b.cv_signature:
        return None  # without the folds' own hash, equal settings do not mean equal folds
    scores_a = (a.cv_scores or {}).get(metric)
    scores_b = (b.cv_scores or {}).get(metric)
    if not scores_a or not scores_b or len(scores_a) != len(scores_b):
        return None
    n_splits = int(a.cv_signature.get("n_splits") or 0)
    patients = a.cv_signature.get("patients")
    n = len(patients) if isinstance(patients, list) else int(patients or 0)
    if n_splits < 2 or n < n_splits:
        return None
    # Each split validates on about 1/k of the training patients and trains on the rest.
    n_test = n // n_splits
    a_values = np.array([as_float(v) for v in scores_a])
    b_values = np.array([as_float(v) for v in scores_b])
    result = stats.corrected_ttest(a_values, b_values, n - n_test, n_test)
    return result["p_value"]


def compare_pair(a: TrainedModel, b: TrainedModel) -> float | str:
    """Return the p-value of a valid paired test of two models, or why there is none."""
    if is_survival(a) != is_survival(b):
        return DIFFERENT_KINDS
    metric = metric_of(a)
    for test in (_same_test_set, lambda x, y: _same_folds(x, y, metric)):
        p_value = test(a, b)
        if p_value is not None:
            return float(p_value) if np.isfinite(p_value) else "not comparable: undefined p-value"
    return NO_COMMON_GROUND


def comparison(models: list[TrainedModel]) -> dict[str, Any]:
    """Return the ModelComparison of some models (both matrices hold the same p-values)."""
    matrix: dict[str, dict[str, float | str]] = {}
    for a in models:
        row: dict[str, float | str] = {}
        for b in models:
            row[f"model_{b.id}"] = 1.0 if a.id == b.id else compare_pair(a, b)
        matrix[f"model_{a.id}"] = row
    return {
        "model_ids": [m.id for m in models],
        "comparison_matrix": matrix,
        "p_values": {k: dict(v) for k, v in matrix.items()},
        "p_values_holm": _holm_matrix(models, matrix),
    }


def _holm_matrix(
    models: list[TrainedModel], matrix: dict[str, dict[str, float | str]]
) -> dict[str, dict[str, float | str]]:
    """Return the matrix with Holm-adjusted p-values over the distinct pairs that have one."""
    keys = [f"model_{m.id}" for m in models]
    pairs = [
        (a, b)
        for i, a in enumerate(keys)
        for b in keys[i + 1 :]
        if a != b and isinstance(matrix[a][b], float)
    ]
    adjusted = dict(zip(pairs, stats.holm([matrix[a][b] for a, b in pairs]), strict=True))
    out = {a: dict(row) for a, row in matrix.items()}
    for (a, b), value in adjusted.items():
        out[a][b] = out[b][a] = value
    return out
