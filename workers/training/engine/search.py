"""The cross-validation searches: splits, every candidate scored in parallel, ranking, refits.

Each (search, split, scaler, algorithm) group runs in a joblib loky worker process and fits
its split's preprocessing once for all its candidates; results come back one by one, and this
process emits the progress events, so the caller's callback never runs in a pool process.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import RepeatedStratifiedKFold, StratifiedKFold
from sklearn.pipeline import Pipeline

from shared.modeling.interface import (
    Progress,
)
from shared.modeling.plan import MAX_FOLDS, TrainingInputError
from workers.training.engine.inputs import (
    Prepared,
    smallest_group,
    strata_of,
    target,
)
from workers.training.engine.scoring import (
    REFIT_METRIC,
    score_model,
)
from workers.training.estimators import make_estimator
from workers.training.preprocess import column_transformer

log = logging.getLogger(__name__)


Candidate = tuple[str, str, dict[str, Any]]

Split = tuple[np.ndarray, np.ndarray]

FIT_ERRORS = (ValueError, ArithmeticError, np.linalg.LinAlgError)

FINAL = -1  # key of the final search (on all training patients); outer searches are 0..J-1

FALLBACKS = 5  # candidates tried, best first, when a refit fails


def _score_group(
    prepared: Prepared,
    key: tuple[int, int],
    rows: Split,
    scaler: str,
    algorithm: str,
    members: list[tuple[int, dict[str, Any]]],
    seed: int,
) -> tuple[tuple[int, int], list[tuple[int, dict[str, float], str | None]]]:
    """Fit one split's preprocessing once, then fit and score each candidate of a group.

    Runs in a pool process. A candidate that fails (e.g. a singular Cox fit) scores nothing
    and its error is returned, so one bad corner of the grid does not stop the search.
    """
    # Pool processes only run these fits: convergence and "all coefficients are zero" notices
    # of weak candidates are expected in a grid search and would flood the worker log.
    warnings.simplefilter("ignore")
    fit_rows, val_rows = rows
    pre = column_transformer(prepared.radiomics, prepared.clinical, scaler)
    x_fit = pre.fit_transform(prepared.x.iloc[fit_rows])
    x_val = pre.transform(prepared.x.iloc[val_rows])
    y_fit = target(prepared.kind, prepared.y, fit_rows)
    out = []
    for index, params in members:
        try:
            model = make_estimator(algorithm, params, seed).fit(x_fit, y_fit)
            out.append(
                (index, score_model(prepared.kind, model, x_val, prepared.y, val_rows), None)
            )
        except FIT_ERRORS as exc:
            out.append((index, {}, f"{algorithm} {params}: {exc}"))
    return key, out


class Ticker:
    """Emits exactly `promised` progress("training") events over `units` units of work."""

    def __init__(self, progress: Progress, promised: int, units: int) -> None:
        self.progress, self.promised, self.units = progress, promised, units
        self.done = self.emitted = 0

    def unit_done(self) -> None:
        """Count one unit; emit the events it is worth."""
        self.done += 1
        target = (
            self.promised if self.done >= self.units else self.done * self.promised // self.units
        )
        while self.emitted < min(target, self.promised):
            self.emitted += 1
            self.progress("training")


def candidate_groups(candidates: list[Candidate]) -> dict[tuple[str, str], list[tuple[int, dict]]]:
    """Group candidate indices by (scaler, algorithm): they share a fitted preprocessor."""
    groups: dict[tuple[str, str], list[tuple[int, dict]]] = defaultdict(list)
    for index, (algorithm, scaler, params) in enumerate(candidates):
        groups[(scaler, algorithm)].append((index, params))
    return groups


@dataclass
class Grid:
    """Scores of every candidate on every split of one search, and the fits that failed."""

    scores: np.ndarray  # [candidate, split] -> metric dict ({} when the fit failed)
    errors: dict[int, list[str]]  # candidate -> error of each failed split


def _folds(
    kind: str, y: dict[str, np.ndarray], rows: np.ndarray, n_splits: int, seed: int
) -> list[Split]:
    """Return stratified k-fold splits of some rows (absolute row positions)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        parts = cv.split(np.zeros(rows.size), strata_of(kind, y, rows))
        return [(rows[a], rows[b]) for a, b in parts]


def outer_splits(prepared: Prepared, train_rows: np.ndarray, seed: int) -> list[Split]:
    """Return the outer splits: the plan's repeated stratified k-fold of the training rows."""
    layout = prepared.actual
    cv = RepeatedStratifiedKFold(
        n_splits=layout.n_splits, n_repeats=layout.n_repeats, random_state=seed
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        strata = strata_of(prepared.kind, prepared.y, train_rows)
        return [(train_rows[a], train_rows[b]) for a, b in cv.split(train_rows, strata)]


def inner_splits(prepared: Prepared, rows: np.ndarray, seed: int) -> list[Split]:
    """Return the k-fold splits of a model-selection search over some training rows."""
    smallest = smallest_group(prepared.kind, strata_of(prepared.kind, prepared.y, rows))
    return _folds(prepared.kind, prepared.y, rows, max(2, min(MAX_FOLDS, smallest)), seed)


def run_searches(
    prepared: Prepared,
    candidates: list[Candidate],
    searches: dict[int, list[Split]],
    ticker: Ticker,
    seed: int,
    n_jobs: int,
) -> dict[int, Grid]:
    """Score every candidate on every split of every search, in one parallel pass."""
    groups = candidate_groups(candidates)
    grids_ = {
        key: Grid(np.empty((len(candidates), len(splits)), dtype=object), defaultdict(list))
        for key, splits in searches.items()
    }
    tasks = (
        delayed(_score_group)(prepared, (key, s), rows, scaler, algo, members, seed)
        for key, splits in searches.items()
        for s, rows in enumerate(splits)
        for (scaler, algo), members in groups.items()
    )
    runner = Parallel(n_jobs=n_jobs, backend="loky", return_as="generator_unordered")
    for (key, split), results in runner(tasks):
        grid = grids_[key]
        for index, values, error in results:
            grid.scores[index, split] = values
            if error:
                grid.errors[index].append(error)
        ticker.unit_done()
    return grids_


def ranking(kind: str, grid: Grid) -> list[int]:
    """Return the candidates that fitted on every split, best mean refit metric first.

    Ties keep grid order. A candidate that failed on any split is never chosen (as
    GridSearchCV with error_score=nan), whatever it scored on the splits it survived.
    """
    metric = REFIT_METRIC[kind]
    means = {}
    for index, row in enumerate(grid.scores):
        values = np.array([s.get(metric, math.nan) for s in row], dtype=float)
        if index not in grid.errors and np.isfinite(values).any():
            means[index] = float(np.nanmean(values))
    if not means:
        raise TrainingInputError(_nothing_fitted(grid, metric))
    return sorted(means, key=lambda i: -means[i])


def _nothing_fitted(grid: Grid, metric: str) -> str:
    """Say why no candidate could be chosen."""
    if not grid.errors:
        return f"no candidate could be scored ({metric} undefined on every fold)"
    first = sorted({e for errors in grid.errors.values() for e in errors})[:3]
    return "no candidate could be fitted on every cross-validation fold: " + "; ".join(first)


def _fit(prepared: Prepared, candidate: Candidate, seed: int, rows: np.ndarray) -> Pipeline:
    """Fit a candidate's whole pipeline on some rows."""
    algorithm, scaler, params = candidate
    pipeline = Pipeline(
        [
            ("preprocess", column_transformer(prepared.radiomics, prepared.clinical, scaler)),
            ("model", make_estimator(algorithm, params, seed, final=True)),
        ]
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        pipeline.fit(prepared.x.iloc[rows], target(prepared.kind, prepared.y, rows))
    return pipeline


def fit_first(
    prepared: Prepared, candidates: list[Candidate], order: list[int], seed: int, rows: np.ndarray
) -> tuple[int, Pipeline]:
    """Fit the best-ranked candidate on some rows; the next one if its fit fails.

    A penalised Cox fit can diverge on more patients after converging on every fold.
    """
    errors = []
    for index in order[:FALLBACKS]:
        try:
            return index, _fit(prepared, candidates[index], seed, rows)
        except FIT_ERRORS as exc:
            algorithm, _, params = candidates[index]
            log.warning("refit of %s %s failed: %s", algorithm, params, exc)
            errors.append(f"{algorithm}: {exc}")
    raise TrainingInputError(f"the best candidates could not be fitted: {'; '.join(errors)}")


def _outer_score(
    prepared: Prepared,
    split: int,
    candidates: list[Candidate],
    order: list[int],
    rows: Split,
    seed: int,
) -> tuple[int, int, dict[str, float]]:
    """Refit an outer fold's choice on its training part; score it on its validation part."""
    warnings.simplefilter("ignore")
    fit_rows, val_rows = rows
    chosen, pipeline = fit_first(prepared, candidates, order, seed, fit_rows)
    x_val = prepared.x.iloc[val_rows]
    try:
        scores = score_model(prepared.kind, pipeline, x_val, prepared.y, val_rows)
    except FIT_ERRORS:
        scores = {}  # an undefined outer score is left out of the estimate (reported)
    return split, chosen, scores


@dataclass
class Nested:
    """The outer splits' scores and what each outer training fold chose."""

    scores: list[dict[str, float]]
    chosen: list[int]


def run_nested(
    prepared: Prepared,
    candidates: list[Candidate],
    searched: dict[int, Grid],
    outer: list[Split],
    ticker: Ticker,
    seed: int,
    n_jobs: int,
) -> Nested:
    """Refit each outer training fold's inner choice and score it on its validation fold."""
    orders = [ranking(prepared.kind, searched[k]) for k in range(len(outer))]
    tasks = (
        delayed(_outer_score)(prepared, k, candidates, orders[k], rows, seed)
        for k, rows in enumerate(outer)
    )
    scores: list[dict[str, float]] = [{} for _ in outer]
    chosen = [0] * len(outer)
    runner = Parallel(n_jobs=n_jobs, backend="loky", return_as="generator_unordered")
    for k, index, values in runner(tasks):
        scores[k], chosen[k] = values, index
        ticker.unit_done()
    return Nested(scores, chosen)
