"""Scores of fitted models: the selection metric, per-row predictions and bootstrap metrics."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from shared.modeling import stats

REFIT_METRIC = {"classification": "auc", "survival": "c-index"}

N_RESAMPLES = 1000


def _class1_score(model: Any, x: Any) -> np.ndarray:
    """Return a score increasing with the probability of class 1."""
    if hasattr(model, "decision_function"):
        return np.asarray(model.decision_function(x), dtype=float)
    return np.asarray(model.predict_proba(x)[:, 1], dtype=float)


def score_model(kind: str, model: Any, x: Any, y: dict[str, np.ndarray], rows: np.ndarray) -> dict:
    """Score a fitted estimator (or pipeline) on some rows; non-finite outputs are an error."""
    if kind == "classification":
        score, predicted = _class1_score(model, x), model.predict(x)
        if not np.isfinite(score).all():
            raise ArithmeticError("the model gave non-finite scores")
        return stats.classification_scores(y["y"][rows], score, predicted)
    risk = np.asarray(model.predict(x), dtype=float)
    if not np.isfinite(risk).all():
        raise ArithmeticError("the model gave non-finite risk scores")
    return stats.survival_scores(y["time"][rows], y["event"][rows], risk)


def predict_rows(kind: str, pipeline: Any, x: pd.DataFrame) -> dict[str, np.ndarray]:
    """Return class-1 probabilities and predictions, or risk scores."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        if kind == "classification":
            return {
                "probability": np.asarray(pipeline.predict_proba(x)[:, 1], dtype=float),
                "prediction": np.asarray(pipeline.predict(x), dtype=int),
            }
        return {"risk": np.asarray(pipeline.predict(x), dtype=float)}


def metric_fn(kind: str, y: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> Callable:
    """Return indices -> metric dict on the evaluated patients."""
    if kind == "classification":
        return lambda i: stats.classification_scores(
            y["y"][i], out["probability"][i], out["prediction"][i]
        )
    return lambda i: stats.survival_scores(y["time"][i], y["event"][i], out["risk"][i])


def bootstrap_metrics(
    kind: str,
    y: dict[str, np.ndarray],
    out: dict[str, np.ndarray],
    seed: int,
    n_resamples: int = N_RESAMPLES,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict, dict[str, list[float]], list[dict[str, float]]]:
    """Return (metrics with percentile CIs, values per metric, scores per resample)."""
    score = metric_fn(kind, y, out)
    strata = y["y"] if kind == "classification" else y["event"].astype(int)
    per = stats.bootstrap_scores(score, strata, n_resamples, seed, progress)
    point = score(np.arange(strata.size))
    summary, values = stats.bootstrap_summary(point, per, stats.metric_names(kind))
    return summary, values, per
