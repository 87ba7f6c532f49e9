"""predict(): a stored pipeline on new patients; with their outcome, external validation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from shared.modeling.interface import PredictionResult, missing_columns, missing_text
from shared.modeling.plan import TrainingInputError
from workers.training.engine.scoring import (
    N_RESAMPLES,
    bootstrap_metrics,
    predict_rows,
)


def predict(
    pipeline: Any,
    kind: str,
    features: pd.DataFrame,
    outcome: pd.DataFrame | None,
    positive_class: str | None,
    *,
    seed: int = 42,
    n_resamples: int = N_RESAMPLES,
) -> PredictionResult:
    """Apply a trained pipeline to new patients; with their outcome, external validation.

    Raises TrainingInputError naming the input columns the features lack. Patients without
    any radiomics value are skipped (with the reason).
    """
    required = [str(c) for c in pipeline.feature_names_in_]
    missing = missing_columns(required, features.columns)
    if missing:
        raise TrainingInputError(missing_text("The feature table", missing))
    meta = getattr(pipeline, "qi2_metadata", {})
    x = features.loc[:, required].copy()
    x.index = x.index.astype(str)
    radiomics = [c for c in meta.get("radiomics_columns", []) if c in x.columns]
    if radiomics:
        x[radiomics] = x[radiomics].apply(pd.to_numeric, errors="coerce").astype(float)
    skipped: dict[str, str] = {}
    if radiomics:
        empty = x[radiomics].isna().all(axis=1)
        skipped = {p: "no radiomics feature values" for p in x.index[empty]}
        x = x.loc[~empty]
    if x.empty:
        return PredictionResult({}, skipped, None)
    out = predict_rows(kind, pipeline, x)
    predictions = _prediction_dicts(kind, list(x.index), out)
    metrics = None
    if outcome is not None:
        metrics = _external_metrics(
            kind, meta, x.index, out, outcome, positive_class, seed, n_resamples
        )
    return PredictionResult(predictions, skipped, metrics)


def _prediction_dicts(kind: str, ids: list[str], out: dict[str, np.ndarray]) -> dict:
    """Return {pid: {...}} predictions."""
    if kind == "classification":
        return {
            p: {"prediction": int(c), "probabilities": [1 - float(v), float(v)]}
            for p, c, v in zip(ids, out["prediction"], out["probability"], strict=True)
        }
    return {p: {"risk_score": float(v)} for p, v in zip(ids, out["risk"], strict=True)}


def _external_metrics(
    kind: str,
    meta: dict,
    ids: pd.Index,
    out: dict[str, np.ndarray],
    outcome: pd.DataFrame,
    positive_class: str | None,
    seed: int,
    n_resamples: int,
) -> dict | None:
    """Bootstrap metrics of predictions against known outcomes (None without any)."""
    outcome = outcome.copy()
    outcome.index = outcome.index.astype(str)
    keep = np.array([p in outcome.index for p in ids], dtype=bool)
    if not keep.any():
        return None
    rows = outcome.loc[ids[keep]]
    sub = {k: v[keep] for k, v in out.items()}
    if kind == "classification":
        classes = meta.get("classes") or sorted(set(rows["label"].astype(str)))
        positive = str(positive_class) if positive_class is not None else classes[-1]
        labels = rows["label"].astype(str).to_numpy()
        known = np.isin(labels, classes) if classes else np.ones(labels.size, bool)
        y = {"y": (labels[known] == positive).astype(int)}
        sub = {k: v[known] for k, v in sub.items()}
    else:
        y = {"time": rows["time"].to_numpy(float), "event": rows["event"].astype(bool).to_numpy()}
    if next(iter(y.values())).size == 0:
        return None
    summary, _, _ = bootstrap_metrics(kind, y, sub, seed, n_resamples)
    return summary
