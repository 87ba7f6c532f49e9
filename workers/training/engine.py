"""Model training and prediction, pure compute (no database, Celery or Flask).

train(): nested cross-validation on the training patients (shared/modeling/plan.py). Every
candidate of the grid (shared/modeling/grids.py) is one scikit-learn Pipeline (ColumnTransformer
+ estimator), so imputation, encoding and scaling are fitted on training folds only.

- Outer folds (k folds x r repetitions, stratified) estimate the performance of the whole
  procedure: within each outer training fold an inner k-fold search chooses the algorithm and
  its hyper-parameters, the choice is refitted on that outer training fold and scored on the
  outer validation fold. These scores are `training_metrics` (the reported estimate).
- The final model is the same inner search run on all training patients, its best candidate
  refitted on them. That search's best mean score is `selection_cv_metrics`: optimistic (the
  best of many), kept for reference only.
- In train/test mode the final model is then evaluated on the test patients with stratified
  percentile bootstrap CIs and permutation importance.

Parallelism: the (search, split, scaler, algorithm) groups run in joblib's loky worker
processes; each group fits its split's preprocessing once for all its candidates. Results come
back to this process one by one (an unordered generator), and this process emits the progress
events, so the caller's callback never runs in a pool process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import platform
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import RepeatedStratifiedKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sksurv.util import Surv

from shared.modeling import grids, stats
from shared.modeling.plan import MAX_FOLDS, MIN_GROUP, TrainingInputError, TrainingPlan, plan
from workers.training.estimators import DECISION_THRESHOLD, make_estimator
from workers.training.preprocess import ClinicalColumn, column_transformer

__all__ = [
    "ClinicalColumn",
    "PredictionResult",
    "TrainingData",
    "TrainingInputError",
    "TrainingResult",
    "predict",
    "train",
]

log = logging.getLogger(__name__)

Progress = Callable[..., None]
Candidate = tuple[str, str, dict[str, Any]]
Split = tuple[np.ndarray, np.ndarray]
N_RESAMPLES = 1000
IMPORTANCE_REPEATS = 10
TESTING_EVENTS = 10  # progress("testing") events over the bootstrap
REFIT_METRIC = {"classification": "auc", "survival": "c-index"}
LIBRARIES = ("scikit-learn", "scikit-survival", "numpy", "scipy", "pandas", "joblib")
FIT_ERRORS = (ValueError, ArithmeticError, np.linalg.LinAlgError)
FINAL = -1  # key of the final search (on all training patients); outer searches are 0..J-1
FALLBACKS = 5  # candidates tried, best first, when a refit fails


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


# --- the data ------------------------------------------------------------------------------------
@dataclass
class _Prepared:
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


def _prepare(data: TrainingData) -> _Prepared:
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
) -> _Prepared:
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
    return _Prepared(
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


def _target(kind: str, y: dict[str, np.ndarray], rows: np.ndarray | slice) -> Any:
    """Return the estimator target of some rows (0/1 labels or a survival structured array)."""
    if kind == "classification":
        return y["y"][rows]
    return Surv.from_arrays(event=y["event"][rows], time=y["time"][rows])


def _strata(kind: str, y: dict[str, np.ndarray], rows: np.ndarray | slice) -> np.ndarray:
    """Return what folds and bootstrap resamples are stratified on: the class or the event."""
    return y["y"][rows] if kind == "classification" else y["event"][rows].astype(int)


def _smallest_group(kind: str, strata: np.ndarray) -> int:
    """Return the size of the smallest group the folds must spread (plan()'s rule)."""
    counts = np.bincount(strata, minlength=2)
    if kind == "survival" and counts[0] < MIN_GROUP:  # few censored: the events decide
        return int(counts[1])
    return int(counts.min())


# --- scoring -------------------------------------------------------------------------------------
def _class1_score(model: Any, x: Any) -> np.ndarray:
    """Return a score increasing with the probability of class 1."""
    if hasattr(model, "decision_function"):
        return np.asarray(model.decision_function(x), dtype=float)
    return np.asarray(model.predict_proba(x)[:, 1], dtype=float)


def _scores(kind: str, model: Any, x: Any, y: dict[str, np.ndarray], rows: np.ndarray) -> dict:
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


def _score_group(
    prepared: _Prepared,
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
    y_fit = _target(prepared.kind, prepared.y, fit_rows)
    out = []
    for index, params in members:
        try:
            model = make_estimator(algorithm, params, seed).fit(x_fit, y_fit)
            out.append((index, _scores(prepared.kind, model, x_val, prepared.y, val_rows), None))
        except FIT_ERRORS as exc:
            out.append((index, {}, f"{algorithm} {params}: {exc}"))
    return key, out


class _Ticker:
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


def _groups(candidates: list[Candidate]) -> dict[tuple[str, str], list[tuple[int, dict]]]:
    """Group candidate indices by (scaler, algorithm): they share a fitted preprocessor."""
    groups: dict[tuple[str, str], list[tuple[int, dict]]] = defaultdict(list)
    for index, (algorithm, scaler, params) in enumerate(candidates):
        groups[(scaler, algorithm)].append((index, params))
    return groups


# --- the searches --------------------------------------------------------------------------------
@dataclass
class _Grid:
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
        parts = cv.split(np.zeros(rows.size), _strata(kind, y, rows))
        return [(rows[a], rows[b]) for a, b in parts]


def _outer_splits(prepared: _Prepared, train_rows: np.ndarray, seed: int) -> list[Split]:
    """Return the outer splits: the plan's repeated stratified k-fold of the training rows."""
    layout = prepared.actual
    cv = RepeatedStratifiedKFold(
        n_splits=layout.n_splits, n_repeats=layout.n_repeats, random_state=seed
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        strata = _strata(prepared.kind, prepared.y, train_rows)
        return [(train_rows[a], train_rows[b]) for a, b in cv.split(train_rows, strata)]


def _inner_splits(prepared: _Prepared, rows: np.ndarray, seed: int) -> list[Split]:
    """Return the k-fold splits of a model-selection search over some training rows."""
    smallest = _smallest_group(prepared.kind, _strata(prepared.kind, prepared.y, rows))
    return _folds(prepared.kind, prepared.y, rows, max(2, min(MAX_FOLDS, smallest)), seed)


def _run_searches(
    prepared: _Prepared,
    candidates: list[Candidate],
    searches: dict[int, list[Split]],
    ticker: _Ticker,
    seed: int,
    n_jobs: int,
) -> dict[int, _Grid]:
    """Score every candidate on every split of every search, in one parallel pass."""
    groups = _groups(candidates)
    grids_ = {
        key: _Grid(np.empty((len(candidates), len(splits)), dtype=object), defaultdict(list))
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


def _ranking(kind: str, grid: _Grid) -> list[int]:
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


def _nothing_fitted(grid: _Grid, metric: str) -> str:
    """Say why no candidate could be chosen."""
    if not grid.errors:
        return f"no candidate could be scored ({metric} undefined on every fold)"
    first = sorted({e for errors in grid.errors.values() for e in errors})[:3]
    return "no candidate could be fitted on every cross-validation fold: " + "; ".join(first)


def _fit(prepared: _Prepared, candidate: Candidate, seed: int, rows: np.ndarray) -> Pipeline:
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
        pipeline.fit(prepared.x.iloc[rows], _target(prepared.kind, prepared.y, rows))
    return pipeline


def _fit_first(
    prepared: _Prepared, candidates: list[Candidate], order: list[int], seed: int, rows: np.ndarray
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
    prepared: _Prepared,
    split: int,
    candidates: list[Candidate],
    order: list[int],
    rows: Split,
    seed: int,
) -> tuple[int, int, dict[str, float]]:
    """Refit an outer fold's choice on its training part; score it on its validation part."""
    warnings.simplefilter("ignore")
    fit_rows, val_rows = rows
    chosen, pipeline = _fit_first(prepared, candidates, order, seed, fit_rows)
    x_val = prepared.x.iloc[val_rows]
    try:
        scores = _scores(prepared.kind, pipeline, x_val, prepared.y, val_rows)
    except FIT_ERRORS:
        scores = {}  # an undefined outer score is left out of the estimate (reported)
    return split, chosen, scores


# --- train ---------------------------------------------------------------------------------------
def train(
    data: TrainingData,
    progress: Progress,
    *,
    algorithms: Sequence[str] | None = None,
    grid: dict[str, list[dict[str, Any]]] | None = None,
    scalers: tuple[str, ...] | None = None,
    n_jobs: int = -1,
    n_resamples: int = N_RESAMPLES,
    importance_repeats: int = IMPORTANCE_REPEATS,
) -> TrainingResult:
    """Run nested CV, the final search and refit and (train/test mode) the test evaluation.

    Calls progress("training") exactly plan(...).n_steps times, then in train/test mode
    progress("testing", current=i, total=n) a few times. `algorithms`, `grid` and `scalers`
    restrict the default grid (grids.candidates).
    """
    prepared = _prepare(data)
    if n_jobs != 1 and multiprocessing.current_process().daemon:
        log.warning(
            "training runs on one core: joblib cannot start processes from a daemonic process "
            "(Celery prefork pool); run the training worker with --pool threads"
        )
    only = None if algorithms is None else list(algorithms)
    candidates = grids.candidates(data.kind, only, grid, scalers)
    train_rows = np.arange(len(prepared.train_ids))
    outer = _outer_splits(prepared, train_rows, data.seed)
    searches = {FINAL: _inner_splits(prepared, train_rows, data.seed)}
    for k, (fit_rows, _) in enumerate(outer):
        searches[k] = _inner_splits(prepared, fit_rows, data.seed + 1 + k)
    units = sum(len(s) for s in searches.values()) * len(_groups(candidates)) + len(outer) + 1
    ticker = _Ticker(progress, prepared.promised.n_steps, units)
    searched = _run_searches(prepared, candidates, searches, ticker, data.seed, n_jobs)
    nested = _nested(prepared, candidates, searched, outer, ticker, data.seed, n_jobs)
    order = _ranking(prepared.kind, searched[FINAL])
    best, pipeline = _fit_first(prepared, candidates, order, data.seed, train_rows)
    ticker.unit_done()
    _attach_metadata(pipeline, prepared)
    result = _result(prepared, pipeline, candidates, best, searched, searches, outer, nested)
    result.cv_signature["seed"] = data.seed
    if prepared.test_ids:
        _evaluate_test(prepared, result, progress, data.seed, n_resamples, importance_repeats)
    log.info(
        "trained %s: %d candidates, %d outer x %d inner-search splits",
        candidates[best],
        len(candidates),
        len(outer),
        len(searches[FINAL]),
    )
    return result


@dataclass
class _Nested:
    """The outer splits' scores and what each outer training fold chose."""

    scores: list[dict[str, float]]
    chosen: list[int]


def _nested(
    prepared: _Prepared,
    candidates: list[Candidate],
    searched: dict[int, _Grid],
    outer: list[Split],
    ticker: _Ticker,
    seed: int,
    n_jobs: int,
) -> _Nested:
    """Refit each outer training fold's inner choice and score it on its validation fold."""
    orders = [_ranking(prepared.kind, searched[k]) for k in range(len(outer))]
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
    return _Nested(scores, chosen)


def _attach_metadata(pipeline: Pipeline, prepared: _Prepared) -> None:
    """Attach what predict() needs to the final pipeline."""
    pipeline.qi2_metadata = {
        "kind": prepared.kind,
        "classes": prepared.classes,
        "radiomics_columns": prepared.radiomics,
        "clinical_columns": [c.name for c in prepared.clinical],
    }


def _validation_text(prepared: _Prepared, inner: list[int]) -> str:
    """Describe the nested CV as the model card shows it, with the notes of the plan."""
    layout = prepared.actual
    low, high = min(inner), max(inner)
    inner_text = f"{low}" if low == high else f"{low}-{high}"
    text = (
        f"Nested CV: {layout.n_splits} outer × {inner_text} inner folds, "
        f"{layout.n_repeats} repetitions"
    )
    text += " (stratified on the event)." if prepared.kind == "survival" else "."
    text += " Algorithm and hyper-parameters chosen within each outer training fold."
    notes = list(layout.notes)
    if prepared.dropped:
        notes.append(f"{len(prepared.dropped)} patient(s) left out for missing clinical values.")
    return " ".join([text, *notes])


def _digest(value: Any) -> str:
    """Return the SHA-256 of a JSON value."""
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()


def _fold_signature(prepared: _Prepared, outer: list[Split]) -> dict[str, str]:
    """Return hashes of the outer validation folds (patient ids) and of the training outcome.

    M4 pairs two models' CV scores only when both are equal: the same folds, scored against
    the same truth.
    """
    folds = [sorted(prepared.train_ids[i] for i in val) for _, val in outer]
    rows = np.arange(len(prepared.train_ids))
    truth = {k: [v.item() for v in values[rows]] for k, values in sorted(prepared.y.items())}
    return {"folds": _digest(folds), "labels": _digest([prepared.train_ids, truth])}


def _failures(candidates: list[Candidate], grid: _Grid, n_splits: int) -> list[dict]:
    """Describe the candidates of a search that failed on some splits (never chosen)."""
    out = []
    for index, errors in sorted(grid.errors.items()):
        algorithm, scaler, params = candidates[index]
        out.append(
            {
                "algorithm": algorithm,
                "normalization": scaler,
                "hyperparameters": dict(params),
                "failed_splits": len(errors),
                "splits": n_splits,
                "error": errors[0][:300],
            }
        )
    return out


def _result(
    prepared: _Prepared,
    pipeline: Pipeline,
    candidates: list[Candidate],
    best: int,
    searched: dict[int, _Grid],
    searches: dict[int, list[Split]],
    outer: list[Split],
    nested: _Nested,
) -> TrainingResult:
    """Build the result of the CV part."""
    algorithm, scaler, params = candidates[best]
    metrics = stats.metric_names(prepared.kind)
    cv_scores = {m: [float(s.get(m, math.nan)) for s in nested.scores] for m in metrics}
    final = searched[FINAL]
    # Only the selection metric: the searches rank with the cheaper estimators (raw SVC
    # decisions), so their other metrics would follow another decision rule than the model's.
    metric = REFIT_METRIC[prepared.kind]
    selection = {metric: [float(s.get(metric, math.nan)) for s in final.scores[best]]}
    inner = [len(searches[k]) for k in range(len(outer))]
    evaluation = _evaluation(prepared, candidates, searched, searches, outer, nested)
    return TrainingResult(
        pipeline=pipeline,
        best_algorithm=algorithm,
        best_data_normalization=scaler if prepared.radiomics else None,
        hyperparameters=dict(params),
        feature_names=[str(n) for n in pipeline[:-1].get_feature_names_out()],
        input_columns=list(prepared.x.columns),
        training_validation=_validation_text(prepared, inner),
        test_validation=None,
        training_metrics=stats.cv_summary(cv_scores, metrics, *_sizes(outer)),
        cv_scores=cv_scores,
        cv_signature={
            "scheme": "nested",
            "n_splits": prepared.actual.n_splits,
            "n_repeats": prepared.actual.n_repeats,
            "patients": list(prepared.train_ids),
            **_fold_signature(prepared, outer),
        },
        selection_cv_metrics=stats.cv_summary(selection, [metric], *_sizes(searches[FINAL])),
        evaluation=evaluation,
        dropped_patients=list(prepared.dropped),
        library_versions=library_versions(),
        notes=list(prepared.actual.notes) + evaluation["notes"],
    )


def _sizes(splits: list[Split]) -> tuple[float, float]:
    """Return the mean sizes of the fitting and validation parts of some splits."""
    return float(np.mean([len(a) for a, _ in splits])), float(np.mean([len(b) for _, b in splits]))


def _evaluation(
    prepared: _Prepared,
    candidates: list[Candidate],
    searched: dict[int, _Grid],
    searches: dict[int, list[Split]],
    outer: list[Split],
    nested: _Nested,
) -> dict[str, Any]:
    """Say how every figure of the model was obtained (model card, M1's extra fields)."""
    metric = REFIT_METRIC[prepared.kind]
    final = searched[FINAL]
    failed = _failures(candidates, final, len(searches[FINAL]))
    inner_failed = sum(len(e) for k in range(len(outer)) for e in searched[k].errors.values())
    undefined = sum(1 for s in nested.scores if not math.isfinite(s.get(metric, math.nan)))
    chosen = Counter(candidates[i][0] for i in nested.chosen)
    notes = []
    if failed:
        notes.append(
            f"{len(failed)} of {len(candidates)} candidates failed on some folds of the final "
            "search and were never chosen."
        )
    if undefined:
        notes.append(f"{metric} undefined on {undefined} outer fold(s), left out of the estimate.")
    out: dict[str, Any] = {
        "method": "nested cross-validation",
        "reported_metrics": "training_metrics: mean over the outer validation folds, with the "
        "Nadeau-Bengio corrected t interval",
        "selection_cv_metrics": "best candidate's mean over the final search's folds: "
        "optimistic (the best of the grid), for reference only",
        "outer": {
            "folds": prepared.actual.n_splits,
            "repetitions": prepared.actual.n_repeats,
            "splits": len(outer),
            "stratified_on": "event" if prepared.kind == "survival" else "class",
        },
        "inner": {"folds": [len(searches[k]) for k in range(len(outer))], "repetitions": 1},
        "selection_metric": metric,
        "candidates": len(candidates),
        "chosen_per_outer_split": [
            {"algorithm": a, "normalization": s, "hyperparameters": dict(p)}
            for a, s, p in (candidates[i] for i in nested.chosen)
        ],
        "chosen_algorithms": dict(sorted(chosen.items())),
        "final_search": {"folds": len(searches[FINAL]), "repetitions": 1},
        "failed_candidates": failed,
        "failed_inner_fits": inner_failed,
        "undefined_outer_scores": undefined,
        "notes": notes,
    }
    if prepared.kind == "classification":
        out["decision_threshold"] = DECISION_THRESHOLD
        out["decision_rule"] = (
            f"positive class when its predicted probability is above {DECISION_THRESHOLD}"
        )
    return out


def library_versions() -> dict[str, str]:
    """Return the versions of Python and the libraries a stored pipeline depends on."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


# --- test set ------------------------------------------------------------------------------------
def _predict_rows(kind: str, pipeline: Any, x: pd.DataFrame) -> dict[str, np.ndarray]:
    """Return class-1 probabilities and predictions, or risk scores."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        if kind == "classification":
            return {
                "probability": np.asarray(pipeline.predict_proba(x)[:, 1], dtype=float),
                "prediction": np.asarray(pipeline.predict(x), dtype=int),
            }
        return {"risk": np.asarray(pipeline.predict(x), dtype=float)}


def _metric_fn(kind: str, y: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> Callable:
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
    score = _metric_fn(kind, y, out)
    strata = y["y"] if kind == "classification" else y["event"].astype(int)
    per = stats.bootstrap_scores(score, strata, n_resamples, seed, progress)
    point = score(np.arange(strata.size))
    summary, values = stats.bootstrap_summary(point, per, stats.metric_names(kind))
    return summary, values, per


def _evaluate_test(
    prepared: _Prepared,
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
    out = _predict_rows(kind, result.pipeline, x_test)
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


def _test_text(prepared: _Prepared, n_resamples: int) -> str:
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
    prepared: _Prepared,
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
        out = _predict_rows(kind, model, x)
        values = []
        for i in range(x.shape[0] // n):
            part = {k: v[i * n : (i + 1) * n] for k, v in out.items()}
            values.append(_metric_fn(kind, y_test, part)(np.arange(n))[REFIT_METRIC[kind]])
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


# --- predict -------------------------------------------------------------------------------------
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
    missing = [c for c in required if c not in features.columns]
    if missing:
        shown = ", ".join(missing[:20]) + (
            f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        )
        raise TrainingInputError(
            f"the features lack {len(missing)} column(s) the model needs: {shown}"
        )
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
    out = _predict_rows(kind, pipeline, x)
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
