"""The test-set evaluation of the final model: bootstrap metrics and permutation importance."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from shared.modeling.interface import (
    Progress,
    TrainingResult,
)
from workers.training.engine.inputs import (
    Prepared,
)
from workers.training.engine.scoring import (
    REFIT_METRIC,
    bootstrap_metrics,
    metric_fn,
    predict_rows,
)

IMPORTANCE_REPEATS = 10

TESTING_EVENTS = 10  # progress("testing") events over the bootstrap


def evaluate_test(
    prepared: Prepared,
    result: TrainingResult,
    progress: Progress,
    seed: int,
    n_resamples: int,
    importance_repeats: int,
) -> None:
    """Predict the test patients, bootstrap the metrics and compute permutation importance."""
    kind = prepared.kind
    rows = np.arange(len(prepared.train_ids), len(prepared.x))
    x_test = prepared.x.iloc[rows]
    y_test = {k: v[rows] for k, v in prepared.y.items()}
    out = predict_rows(kind, result.pipeline, x_test)
    every = max(1, n_resamples // TESTING_EVENTS)

    def tick(i: int, total: int) -> None:
        if i % every == 0:
            progress("testing", current=i, total=total)

    summary, values, per = bootstrap_metrics(kind, y_test, out, seed, n_resamples, tick)
    progress("testing", current=n_resamples, total=n_resamples)
    ids = prepared.test_ids
    result.test_validation = _test_text(prepared, n_resamples)
    result.test_metrics, result.test_bootstrap_values, result.test_scores_values = (
        summary,
        values,
        per,
    )
    result.evaluation["test"] = {
        "method": "stratified percentile bootstrap of the final model's test predictions",
        "resamples": n_resamples,
        "stratified_on": "event" if kind == "survival" else "class",
        "patients": len(ids),
        "left_out": {
            "count": len(prepared.dropped_test),
            "patients": list(prepared.dropped_test),
            "reason": "missing clinical value (policy Drop)",
        },
        "undefined_resamples": {
            m: int(sum(1 for v in column if not math.isfinite(v))) for m, column in values.items()
        },
    }
    result.evaluation["feature_importance"] = {
        "computed_on": "test set",
        "patients": len(ids),
        "repeats": importance_repeats,
        "metric": REFIT_METRIC[kind],
        "method": "permutation importance: mean drop of the metric when one input column is "
        "shuffled between the test patients",
    }
    if kind == "classification":
        result.test_outcomes = {p: int(v) for p, v in zip(ids, y_test["y"], strict=True)}
        result.test_predictions = {
            p: {"prediction": int(v)} for p, v in zip(ids, out["prediction"], strict=True)
        }
        result.test_predictions_probabilities = {
            p: {"probabilities": [1 - float(v), float(v)]}
            for p, v in zip(ids, out["probability"], strict=True)
        }
    else:
        result.test_outcomes = {
            p: {"time": float(t), "event": bool(e)}
            for p, t, e in zip(ids, y_test["time"], y_test["event"], strict=True)
        }
        result.test_predictions = {
            p: {"risk_score": float(v)} for p, v in zip(ids, out["risk"], strict=True)
        }
    result.test_feature_importance = _importance(
        prepared, result.pipeline, x_test, y_test, seed, importance_repeats
    )


def _test_text(prepared: Prepared, n_resamples: int) -> str:
    """Describe the test evaluation, with the test patients a Drop policy left out."""
    text = (
        f"Stratified percentile bootstrap ({n_resamples} repetitions) on "
        f"{len(prepared.test_ids)} test patients"
    )
    if prepared.dropped_test:
        text += (
            f"; {len(prepared.dropped_test)} test patient(s) left out for a missing clinical "
            "value (policy Drop)"
        )
    return text


def _column_blocks(pre: Any) -> list[np.ndarray]:
    """Return, per raw input column, the indices of its columns in the transformed matrix."""
    blocks = []
    for name, _, inputs in pre.transformers_:
        if name == "remainder":
            continue
        where = pre.output_indices_[name]
        if name == "radiomics":  # one output per input (imputer keeps empty features)
            blocks += [np.array([where.start + i]) for i in range(len(inputs))]
        else:
            blocks.append(np.arange(where.start, where.stop))
    return blocks


def _importance(
    prepared: Prepared,
    pipeline: Pipeline,
    x_test: pd.DataFrame,
    y_test: dict[str, np.ndarray],
    seed: int,
    repeats: int,
) -> list[dict]:
    """Permutation importance of each input column on the test set, sorted descending.

    The mean drop in AUC / c-index when one raw column's values are shuffled between the test
    patients (a one-hot clinical column counts once), `repeats` shuffles per column. The
    preprocessing works row by row once fitted, so shuffling a raw column equals shuffling
    its transformed columns: the test set is transformed once, and the shuffled copies of
    many columns go through the model in one call. NaN when the metric is undefined.
    """
    pre, model = pipeline.named_steps["preprocess"], pipeline[-1]
    base = np.asarray(pre.transform(x_test), dtype=float)
    blocks = _column_blocks(pre)
    n = base.shape[0]
    kind = prepared.kind

    def score(x: np.ndarray) -> np.ndarray:
        """Return the metric of each stacked copy of the test set in x."""
        out = predict_rows(kind, model, x)
        values = []
        for i in range(x.shape[0] // n):
            part = {k: v[i * n : (i + 1) * n] for k, v in out.items()}
            values.append(metric_fn(kind, y_test, part)(np.arange(n))[REFIT_METRIC[kind]])
        return np.array(values, dtype=float)

    reference = float(score(base)[0])
    rng = np.random.RandomState(seed)
    drops = np.zeros((len(blocks), repeats))
    chunk = max(1, 200_000 // max(1, base.size))  # columns per model call (bounded memory)
    for r in range(repeats):
        orders = [rng.permutation(n) for _ in blocks]
        for start in range(0, len(blocks), chunk):
            part = range(start, min(start + chunk, len(blocks)))
            stacked = np.tile(base, (len(part), 1))
            for k, j in enumerate(part):
                cols = blocks[j]
                stacked[k * n : (k + 1) * n, cols] = base[orders[j]][:, cols]
            drops[list(part), r] = reference - score(stacked)
    means = drops.mean(axis=1)
    pairs = [
        {"feature_name": str(name), "importance_value": float(value)}
        for name, value in zip(x_test.columns, means, strict=True)
    ]
    return sorted(
        pairs,
        key=lambda d: -d["importance_value"] if math.isfinite(d["importance_value"]) else math.inf,
    )
