"""Hyper-parameter grids of model training, as plain data (no scikit-learn import).

They live in shared/ because both sides read them: the web edge checks a training request's
`algorithms` against `algorithms(kind)` (an unknown name is a 400 before anything is queued),
and the training engine turns each candidate into an estimator
(workers/training/estimators.py). Every candidate is (algorithm, scaler, parameters). Scalers
only apply to the radiomics columns (clinical columns carry their own encoding).

Why these grids are small: with ~100 patients and ~1,000 features, the useful regularisation
range of each linear model fits in a few log-spaced values, and the old grid's 240 calibrated
SVM candidates (poly and sigmoid kernels, six gammas) were near-duplicates of one another.
Forests do not depend on the scaling of their inputs, so they are searched with one scaler.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Params = dict[str, Any]

SCALERS: tuple[str, ...] = ("StandardScaler", "MinMaxScaler")
# The scalers each algorithm is searched with (scale-free algorithms need only one).
SCALE_FREE: frozenset[str] = frozenset({"RandomForestClassifier", "RandomSurvivalForest"})

CLASSIFICATION_ALGORITHMS: tuple[str, ...] = (
    "LogisticRegression",
    "SVC",
    "RandomForestClassifier",
)
SURVIVAL_ALGORITHMS: tuple[str, ...] = (
    "CoxPHSurvivalAnalysis",
    "CoxnetSurvivalAnalysis",
    "IPCRidge",
    "RandomSurvivalForest",
)

# Each classifier is searched with and without class weights inversely proportional to the
# class frequencies ("balanced"): with an uncommon positive class, weighting moves the
# predictions at the fixed 0.5 threshold towards it (sensitivity) at little cost in AUC.
CLASS_WEIGHTS: tuple[str | None, ...] = (None, "balanced")


def _weighted(params: list[Params]) -> list[Params]:
    """Return every parameter set once per class weighting."""
    return [{**p, "class_weight": w} for p in params for w in CLASS_WEIGHTS]


CLASSIFICATION_GRID: dict[str, list[Params]] = {
    # `penalty` is named explicitly ("l2", "l1", "elasticnet"); the engine maps it to l1_ratio.
    "LogisticRegression": _weighted(
        [
            *({"penalty": "l2", "C": c} for c in (0.01, 0.1, 1.0)),
            *({"penalty": "l1", "C": c} for c in (0.1, 1.0)),
            {"penalty": "elasticnet", "C": 0.1, "l1_ratio": 0.5},
        ]
    ),
    "SVC": _weighted(
        [
            *({"kernel": "linear", "C": c} for c in (0.001, 0.01)),
            *({"kernel": "rbf", "C": c, "gamma": "scale"} for c in (1.0, 10.0)),
        ]
    ),
    # Fully grown trees (leaf 1) end in pure leaves whatever the weights, so weighting only
    # changes their probabilities through the splits chosen; with 5 patients a leaf it also
    # shifts the leaf probabilities towards the weighted class. Forests cost most, so only the
    # latter is searched with weights.
    "RandomForestClassifier": [
        {"n_estimators": 100, "max_features": "sqrt", "min_samples_leaf": 1, "class_weight": None},
        *_weighted([{"n_estimators": 100, "max_features": "sqrt", "min_samples_leaf": 5}]),
    ],
}

SURVIVAL_GRID: dict[str, list[Params]] = {
    # A small ridge keeps the Newton steps defined when features outnumber events.
    "CoxPHSurvivalAnalysis": [{"alpha": a} for a in (1.0, 10.0, 100.0, 1000.0)],
    "CoxnetSurvivalAnalysis": [
        {"alpha": a, "l1_ratio": r} for r in (0.5, 0.9) for a in (0.05, 0.1, 0.2, 0.4, 0.8)
    ],
    "IPCRidge": [{"alpha": a} for a in (1.0, 10.0, 100.0, 1000.0)],
    "RandomSurvivalForest": [
        {"n_estimators": 100, "max_features": "sqrt", "min_samples_leaf": leaf} for leaf in (3, 10)
    ],
}


def algorithms(kind: str) -> tuple[str, ...]:
    """Return the algorithm keys of a model kind ("classification" | "survival")."""
    if kind == "classification":
        return CLASSIFICATION_ALGORITHMS
    if kind == "survival":
        return SURVIVAL_ALGORITHMS
    raise ValueError(f"unknown model kind {kind!r}")


def unknown_algorithms(kind: str, names: Iterable[str]) -> list[str]:
    """Return the names that are not algorithms of a model kind, sorted."""
    return sorted(set(names) - set(algorithms(kind)))


def grid(kind: str) -> dict[str, list[Params]]:
    """Return the default grid of a model kind: algorithm -> list of parameter dicts."""
    algorithms(kind)
    return CLASSIFICATION_GRID if kind == "classification" else SURVIVAL_GRID


def scalers_for(algorithm: str) -> tuple[str, ...]:
    """Return the scalers an algorithm is searched with."""
    return SCALERS[:1] if algorithm in SCALE_FREE else SCALERS


def candidates(
    kind: str,
    only: tuple[str, ...] | list[str] | None = None,
    custom: dict[str, list[Params]] | None = None,
    scalers: tuple[str, ...] | None = None,
) -> list[tuple[str, str, Params]]:
    """Return every (algorithm, scaler, parameters) candidate of a grid.

    `only` keeps some algorithms; `custom` replaces the parameter lists of the algorithms it
    names (tests and benchmarks use small grids); `scalers` restricts the scalers.
    """
    chosen = {**grid(kind), **(custom or {})}
    unknown = unknown_algorithms(kind, [*(only or ()), *(custom or ())])
    if unknown:
        raise ValueError(f"unknown {kind} algorithm(s): {', '.join(unknown)}")
    return [
        (name, scaler, dict(params))
        for name, grid_params in chosen.items()
        if only is None or name in only
        for scaler in scalers_for(name)
        if scalers is None or scaler in scalers or name in SCALE_FREE
        for params in grid_params
    ]


def count_candidates(kind: str) -> int:
    """Return the number of candidates of the default grid."""
    return len(candidates(kind))
