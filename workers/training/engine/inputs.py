"""Validated training inputs: the patients, the Drop filter, the input table and outcome arrays."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from sksurv.util import Surv

from shared.modeling.interface import (
    ClinicalColumn,
    TrainingData,
)
from shared.modeling.plan import MIN_GROUP, TrainingInputError, TrainingPlan, plan


@dataclass
class Prepared:
    """Validated inputs: the patients, the outcome arrays and the raw input columns."""

    kind: str
    train_ids: list[str]
    test_ids: list[str]
    radiomics: list[str]
    clinical: list[ClinicalColumn]
    x: pd.DataFrame  # train + test rows, input columns only
    y: dict[str, np.ndarray]  # "y" (0/1) or "time"/"event", aligned with x
    classes: list[str]  # classification: [negative, positive]
    dropped: list[str]  # training and test patients left out by a Drop policy
    dropped_test: list[str]  # the test patients among them
    promised: TrainingPlan  # the plan the platform computed: n_steps to emit
    actual: TrainingPlan  # the plan after "Drop" rows were removed


def _outcome_items(kind: str, outcome: pd.DataFrame, ids: Sequence[str]) -> list[Any]:
    """Return the outcome of some patients in plan()'s form."""
    if kind == "classification":
        return [str(v) for v in outcome.loc[list(ids), "label"]]
    rows = outcome.loc[list(ids)]
    return [(float(t), bool(e)) for t, e in zip(rows["time"], rows["event"], strict=True)]


def _labelled(data: TrainingData, ids: Sequence[str] | None) -> list[str]:
    """Return the patients of a list that have an outcome, in sorted order."""
    return sorted({str(p) for p in ids or ()} & set(map(str, data.outcome.index)))


def _check_columns(data: TrainingData) -> None:
    """Check the outcome columns and that clinical columns exist."""
    needed = ["label"] if data.kind == "classification" else ["time", "event"]
    lacking = [c for c in needed if c not in data.outcome.columns]
    if lacking:
        raise TrainingInputError(f"the outcome lacks the column(s) {', '.join(lacking)}")
    absent = [c.name for c in data.clinical if c.name not in data.features.columns]
    if absent:
        raise TrainingInputError(f"clinical column(s) not in the features: {', '.join(absent)}")


def _classes(labels: Sequence[str], positive: str | None) -> list[str]:
    """Return [negative, positive] labels of a binary outcome."""
    found = sorted(set(labels))
    if positive is None:
        return found
    if str(positive) not in found:
        raise TrainingInputError(
            f"positive class {positive!r} is not among the training labels ({', '.join(found)})"
        )
    return [c for c in found if c != str(positive)] + [str(positive)]


def _drop_missing(data: TrainingData, ids: list[str]) -> list[str]:
    """Return the patients with a missing value in a clinical column whose policy is Drop."""
    columns = [c.name for c in data.clinical if c.missing_values == "Drop"]
    if not columns:
        return []
    values = data.features.loc[ids, columns]
    missing = values.isna() | values.astype(str).apply(lambda s: s.str.strip() == "")
    return sorted(values.index[missing.any(axis=1)].astype(str))


def prepare(data: TrainingData) -> Prepared:
    """Validate the data, apply the Drop filter and build the input table and outcome arrays."""
    if data.kind not in ("classification", "survival"):
        raise TrainingInputError(f"unknown model type {data.kind!r}")
    _check_columns(data)
    features = data.features.set_axis(data.features.index.astype(str), axis=0)
    if not features.index.is_unique:
        raise TrainingInputError("the feature table has duplicate patient ids")
    outcome = data.outcome.set_axis(data.outcome.index.astype(str), axis=0)
    data = replace(data, features=features, outcome=outcome)
    train_ids = _labelled(data, data.training_patients)
    test_ids = [p for p in _labelled(data, data.test_patients) if p not in set(train_ids)]
    unknown = sorted(set(train_ids + test_ids) - set(data.features.index))
    if unknown:
        raise TrainingInputError(f"{len(unknown)} labelled patient(s) have no features")
    mode = "fulldataset" if data.test_patients is None else "traintest"
    if mode == "traintest" and not test_ids:
        raise TrainingInputError("train/test mode needs labelled test patients")
    promised = plan(data.kind, mode, _outcome_items(data.kind, data.outcome, train_ids))

    dropped = _drop_missing(data, train_ids + test_ids)
    train_ids = [p for p in train_ids if p not in set(dropped)]
    test_ids = [p for p in test_ids if p not in set(dropped)]
    actual = promised
    if dropped:
        try:
            actual = plan(data.kind, mode, _outcome_items(data.kind, data.outcome, train_ids))
        except TrainingInputError as exc:
            raise TrainingInputError(
                f"after leaving out {len(dropped)} patient(s) with missing clinical values "
                f"(policy Drop): {exc}"
            ) from None
        if mode == "traintest" and not test_ids:
            raise TrainingInputError("every test patient has a missing clinical value (Drop)")
    layout = {"promised": promised, "actual": actual, "dropped": dropped}
    return _build(data, train_ids, test_ids, layout)


def _build(
    data: TrainingData, train_ids: list[str], test_ids: list[str], layout: dict[str, Any]
) -> Prepared:
    """Build the input table (train then test rows) and the outcome arrays."""
    clinical_names = {c.name for c in data.clinical}
    ids = train_ids + test_ids
    radiomics = data.features.loc[
        ids, [c for c in data.features.columns if c not in clinical_names]
    ]
    radiomics = radiomics.apply(pd.to_numeric, errors="coerce").astype(float)
    # Columns without any training value carry nothing the model could learn.
    radiomics = radiomics.loc[:, radiomics.loc[train_ids].notna().any(axis=0)]
    clinical = list(data.clinical)
    if radiomics.shape[1] == 0 and not clinical:
        raise TrainingInputError("neither clinical nor imaging features were selected")
    x = pd.concat([radiomics, data.features.loc[ids, [c.name for c in clinical]]], axis=1)
    outcome = data.outcome.loc[ids]
    classes: list[str] = []
    if data.kind == "classification":
        labels = outcome["label"].astype(str)
        classes = _classes(list(labels.loc[train_ids]), data.positive_class)
        y = {"y": (labels == classes[1]).to_numpy(dtype=int)}
        unknown = sorted(set(labels) - set(classes))
        if unknown:
            raise TrainingInputError(f"test labels not seen in training: {', '.join(unknown)}")
    else:
        y = {
            "time": outcome["time"].to_numpy(dtype=float),
            "event": outcome["event"].astype(bool).to_numpy(),
        }
    tested = set(_labelled(data, data.test_patients))
    return Prepared(
        kind=data.kind,
        train_ids=train_ids,
        test_ids=test_ids,
        radiomics=list(radiomics.columns),
        clinical=clinical,
        x=x,
        y=y,
        classes=classes,
        dropped=layout["dropped"],
        dropped_test=[p for p in layout["dropped"] if p in tested],
        promised=layout["promised"],
        actual=layout["actual"],
    )


def target(kind: str, y: dict[str, np.ndarray], rows: np.ndarray | slice) -> Any:
    """Return the estimator target of some rows (0/1 labels or a survival structured array)."""
    if kind == "classification":
        return y["y"][rows]
    return Surv.from_arrays(event=y["event"][rows], time=y["time"][rows])


def strata_of(kind: str, y: dict[str, np.ndarray], rows: np.ndarray | slice) -> np.ndarray:
    """Return what folds and bootstrap resamples are stratified on: the class or the event."""
    return y["y"][rows] if kind == "classification" else y["event"][rows].astype(int)


def smallest_group(kind: str, strata: np.ndarray) -> int:
    """Return the size of the smallest group the folds must spread (plan()'s rule)."""
    counts = np.bincount(strata, minlength=2)
    if kind == "survival" and counts[0] < MIN_GROUP:  # few censored: the events decide
        return int(counts[1])
    return int(counts.min())
