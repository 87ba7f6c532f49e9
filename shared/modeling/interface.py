"""The boundary between the platform and the training engine: plain data, pandas only.

`shared/modeling/flows.py` builds a TrainingData from the stored rows and maps a TrainingResult
to the model row; the pure engine (`workers/training/engine/`) reads and returns these types.
Neither side copies the other's: both import them from here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd

SHOWN_MISSING = 5  # missing columns a message names (the others are counted)


@dataclass(frozen=True)
class ClinicalColumn:
    """A clinical column of TrainingData.features with its type and policies (§6.7)."""

    name: str  # e.g. "12::Age"
    feat_type: str  # "Number" | "Categorical"
    encoding: str  # "None" | "One-Hot Encoding" | "Normalization" | "Ordered Categories"
    missing_values: str  # "Drop" | "Mode" | "Median" | "Mean" | "None"


@dataclass(frozen=True)
class TrainingData:
    """Everything train() needs; see docs/training.md."""

    kind: str  # "classification" | "survival"
    features: pd.DataFrame  # index = patient id; radiomics float, clinical raw
    clinical: tuple[ClinicalColumn, ...]
    outcome: pd.DataFrame  # classification: "label"; survival: "time", "event"
    positive_class: str | None
    training_patients: tuple[str, ...]
    test_patients: tuple[str, ...] | None  # None = full-dataset mode (CV only)
    seed: int = 42


@dataclass
class TrainingResult:
    """A trained model with its validation (shapes of API contract §6.6)."""

    pipeline: Any
    best_algorithm: str
    best_data_normalization: str | None
    hyperparameters: dict[str, Any]
    feature_names: list[str]
    input_columns: list[str]
    training_validation: str
    test_validation: str | None
    training_metrics: dict  # nested CV: the reported estimate
    cv_scores: dict[str, list[float]]  # nested CV: one value per outer split
    cv_signature: dict
    selection_cv_metrics: dict  # the final search's best mean: optimistic, for reference
    evaluation: dict = field(default_factory=dict)  # how every figure was obtained
    test_metrics: dict | None = None
    test_outcomes: dict | None = None
    test_predictions: dict | None = None
    test_predictions_probabilities: dict | None = None
    test_bootstrap_values: dict[str, list[float]] | None = None
    test_scores_values: list[dict[str, float]] | None = None
    test_feature_importance: list[dict] | None = None
    dropped_patients: list[str] = field(default_factory=list)
    library_versions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class PredictionResult:
    """Predictions of a stored pipeline on new patients, and metrics when labels are known."""

    predictions: dict[str, dict[str, Any]]
    skipped: dict[str, str]
    metrics: dict | None = None


class Progress(Protocol):
    """What train() reports to: a phase, and for "testing" the step reached of how many."""

    def __call__(self, phase: str, current: int | None = None, total: int | None = None) -> None:
        """Record one step of a phase."""


def missing_columns(required: Iterable[str], available: Collection[str]) -> list[str]:
    """Return the required columns that are not available, in their order."""
    return [str(c) for c in required if c not in available]


def missing_text(source: str, missing: list[str]) -> str:
    """Say which columns a model needs that `source` lacks: the first few, then a count."""
    more = f" and {len(missing) - SHOWN_MISSING} more" if len(missing) > SHOWN_MISSING else ""
    return f"{source} lacks features the model needs: {', '.join(missing[:SHOWN_MISSING])}{more}"
