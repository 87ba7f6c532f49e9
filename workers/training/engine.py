"""Model training and prediction, pure compute (no database, Celery or Flask).

train(): the grid of shared/modeling/grids.py searched by repeated stratified k-fold CV on
the training patients, every candidate one scikit-learn Pipeline (ColumnTransformer +
estimator) so that imputation, encoding and scaling are fitted on training folds only. The
best candidate (AUC / c-index) is refitted on all training patients; in train/test mode it is
then evaluated on the test patients with stratified percentile bootstrap CIs and permutation
importance.

Parallelism: the (split, scaler, algorithm) groups run in joblib's loky worker processes;
their results come back to this process one by one (an unordered generator), and this
process emits the progress events, so the caller's callback never runs in a pool process.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import platform
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import RepeatedStratifiedKFold
from sklearn.pipeline import Pipeline
from sksurv.util import Surv

from shared.modeling import grids, stats
from shared.modeling.plan import TrainingInputError, TrainingPlan, plan
from workers.training.estimators import final_estimator, make_estimator
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
N_RESAMPLES = 1000
IMPORTANCE_REPEATS = 10
TESTING_EVENTS = 10  # progress("testing") events over the bootstrap
REFIT_METRIC = {"classification": "auc", "survival": "c-index"}
LIBRARIES = ("scikit-learn", "scikit-survival", "numpy", "scipy", "pandas", "joblib")


@dataclass(frozen=True)
class TrainingData:
    """Everything train() needs; see docs/training-interface.md."""

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
    training_metrics: dict
    cv_scores: dict[str, list[float]]
    cv_signature: dict
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
    dropped: list[str]
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
    return _build(data, train_ids, test_ids, dropped, promised, actual)


def _build(
    data: TrainingData,
    train_ids: list[str],
    test_ids: list[str],
    dropped: list[str],
    promised: TrainingPlan,
    actual: TrainingPlan,
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
    clinical = [c for c in data.clinical]
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
    return _Prepared(
        data.kind,
        train_ids,
        test_ids,
        list(radiomics.columns),
        clinical,
        x,
        y,
        classes,
        dropped,
        promised,
        actual,
    )


def _target(kind: str, y: dict[str, np.ndarray], rows: np.ndarray | slice) -> Any:
    """Return the estimator target of some rows (0/1 labels or a survival structured array)."""
    if kind == "classification":
        return y["y"][rows]
    return Surv.from_arrays(event=y["event"][rows], time=y["time"][rows])


def _strata(kind: str, y: dict[str, np.ndarray], rows: np.ndarray | slice) -> np.ndarray:
    """Return what folds and bootstrap resamples are stratified on: the class or the event."""
    return y["y"][rows] if kind == "classification" else y["event"][rows].astype(int)


# --- scoring -------------------------------------------------------------------------------------
def _class1_score(model: Any, x: Any) -> np.ndarray:
    """Return a score increasing with the probability of class 1."""
    if hasattr(model, "decision_function"):
        return np.asarray(model.decision_function(x), dtype=float)
    return np.asarray(model.predict_proba(x)[:, 1], dtype=float)


def _scores(kind: str, model: Any, x: Any, y: dict[str, np.ndarray], rows: np.ndarray) -> dict:
    """Score a fitted estimator (or pipeline) on some rows."""
    if kind == "classification":
        return stats.classification_scores(y["y"][rows], _class1_score(model, x), model.predict(x))
    return stats.survival_scores(y["time"][rows], y["event"][rows], model.predict(x))


def _score_group(
    prepared: _Prepared,
    split: int,
    train_rows: np.ndarray,
    test_rows: np.ndarray,
    scaler: str,
    algorithm: str,
    members: list[tuple[int, dict[str, Any]]],
    seed: int,
) -> tuple[int, list[tuple[int, dict[str, float], str | None]]]:
    """Fit one split's preprocessing once, then fit and score each candidate of a group.

    Runs in a pool process. A candidate that fails (e.g. a singular Cox fit) scores NaN and
    its error is returned, so one bad corner of the grid does not stop the search.
    """
    # Pool processes only run these fits: convergence and "all coefficients are zero" notices
    # of weak candidates are expected in a grid search and would flood the worker log.
    warnings.simplefilter("ignore")
    pre = column_transformer(prepared.radiomics, prepared.clinical, scaler)
    x_fit = pre.fit_transform(prepared.x.iloc[train_rows])
    x_val = pre.transform(prepared.x.iloc[test_rows])
    y_fit = _target(prepared.kind, prepared.y, train_rows)
    out = []
    for index, params in members:
        try:
            model = make_estimator(algorithm, params, seed).fit(x_fit, y_fit)
            out.append((index, _scores(prepared.kind, model, x_val, prepared.y, test_rows), None))
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            out.append((index, {}, f"{algorithm} {params}: {exc}"))
    return split, out


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


def _search(
    prepared: _Prepared,
    candidates: list[Candidate],
    splits: list[tuple[np.ndarray, np.ndarray]],
    ticker: _Ticker,
    seed: int,
    n_jobs: int,
) -> tuple[np.ndarray, list[str]]:
    """Score every candidate on every split; return scores[candidate][split] dicts and errors."""
    groups = _groups(candidates)
    scores = np.empty((len(candidates), len(splits)), dtype=object)
    remaining = [len(groups)] * len(splits)
    errors: list[str] = []
    tasks = (
        delayed(_score_group)(prepared, s, tr, te, scaler, algo, members, seed)
        for s, (tr, te) in enumerate(splits)
        for (scaler, algo), members in groups.items()
    )
    runner = Parallel(n_jobs=n_jobs, backend="loky", return_as="generator_unordered")
    for split, results in runner(tasks):
        for index, values, error in results:
            scores[index, split] = values
            if error:
                errors.append(error)
        remaining[split] -= 1
        if remaining[split] == 0:
            ticker.unit_done()
    return scores, errors


def _ranking(kind: str, scores: np.ndarray) -> list[int]:
    """Return the scored candidates, best mean refit metric first (grid order on ties)."""
    metric = REFIT_METRIC[kind]
    means = []
    for row in scores:
        values = np.array([s.get(metric, math.nan) for s in row], dtype=float)
        means.append(float(np.nanmean(values)) if np.isfinite(values).any() else -math.inf)
    order = [i for i in sorted(range(len(means)), key=lambda i: -means[i]) if means[i] > -math.inf]
    if not order:
        raise TrainingInputError(f"no candidate could be scored ({metric} undefined on every fold)")
    return order


def _refit_best(
    prepared: _Prepared,
    candidates: list[Candidate],
    scores: np.ndarray,
    seed: int,
    train_rows: np.ndarray,
) -> tuple[int, Pipeline]:
    """Refit the best candidate on all training patients; the next one if its fit fails.

    A penalised Cox fit can diverge on all patients after converging on every fold.
    """
    errors = []
    for index in _ranking(prepared.kind, scores)[:5]:
        try:
            return index, _refit(prepared, candidates[index], seed, train_rows)
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            algorithm, _, params = candidates[index]
            log.warning("refit of %s %s failed: %s", algorithm, params, exc)
            errors.append(f"{algorithm}: {exc}")
    raise TrainingInputError(f"the best candidates could not be fitted: {'; '.join(errors)}")


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
    """Search the grid, refit the best candidate and (train/test mode) evaluate it.

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
    actual = prepared.actual
    ticker = _Ticker(progress, prepared.promised.n_steps, actual.n_steps)
    n_train = len(prepared.train_ids)
    train_rows = np.arange(n_train)
    cv = RepeatedStratifiedKFold(
        n_splits=actual.n_splits, n_repeats=actual.n_repeats, random_state=data.seed
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        splits = list(cv.split(np.zeros(n_train), _strata(data.kind, prepared.y, train_rows)))
    scores, errors = _search(prepared, candidates, splits, ticker, data.seed, n_jobs)
    for error in sorted(set(errors))[:5]:
        log.warning("candidate failed in CV: %s", error)
    best, pipeline = _refit_best(prepared, candidates, scores, data.seed, train_rows)
    algorithm, scaler, params = candidates[best]
    ticker.unit_done()
    result = _result(prepared, pipeline, candidates[best], scores[best], splits, data.seed)
    if prepared.test_ids:
        _evaluate_test(prepared, result, progress, data.seed, n_resamples, importance_repeats)
    log.info(
        "trained %s (%s, %s): %d candidates x %d splits",
        algorithm,
        scaler,
        params,
        len(candidates),
        len(splits),
    )
    return result


def _refit(
    prepared: _Prepared, candidate: Candidate, seed: int, train_rows: np.ndarray
) -> Pipeline:
    """Fit the best candidate's pipeline on all training patients; attach what predict needs."""
    algorithm, scaler, params = candidate
    n_minor = 0
    if prepared.kind == "classification":
        n_minor = int(np.bincount(prepared.y["y"][train_rows], minlength=2).min())
    pipeline = Pipeline(
        [
            ("preprocess", column_transformer(prepared.radiomics, prepared.clinical, scaler)),
            ("model", final_estimator(algorithm, params, seed, n_minor)),
        ]
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        pipeline.fit(prepared.x.iloc[train_rows], _target(prepared.kind, prepared.y, train_rows))
    pipeline.qi2_metadata = {
        "kind": prepared.kind,
        "classes": prepared.classes,
        "radiomics_columns": prepared.radiomics,
        "clinical_columns": [c.name for c in prepared.clinical],
    }
    return pipeline


def _validation_text(prepared: _Prepared) -> str:
    """Describe the CV as the model card shows it, with the notes of the plan."""
    plan_ = prepared.actual
    text = (
        f"Repeated Stratified K-Fold Cross-Validation ({plan_.n_splits} folds, "
        f"{plan_.n_repeats} repetitions"
    )
    text += ", stratified on the event)" if prepared.kind == "survival" else ")"
    notes = list(plan_.notes)
    if prepared.dropped:
        notes.append(f"{len(prepared.dropped)} patient(s) left out for missing clinical values.")
    return " ".join([text, *notes])


def _result(
    prepared: _Prepared,
    pipeline: Pipeline,
    candidate: Candidate,
    best_scores: np.ndarray,
    splits: list[tuple[np.ndarray, np.ndarray]],
    seed: int,
) -> TrainingResult:
    """Build the result of the CV part."""
    algorithm, scaler, params = candidate
    metrics = stats.metric_names(prepared.kind)
    cv_scores = {m: [float(s.get(m, math.nan)) for s in best_scores] for m in metrics}
    n_val = float(np.mean([len(te) for _, te in splits]))
    n_fit = float(np.mean([len(tr) for tr, _ in splits]))
    uses_radiomics = bool(prepared.radiomics)
    return TrainingResult(
        pipeline=pipeline,
        best_algorithm=algorithm,
        best_data_normalization=scaler if uses_radiomics else None,
        hyperparameters=dict(params),
        feature_names=[str(n) for n in pipeline[:-1].get_feature_names_out()],
        input_columns=list(prepared.x.columns),
        training_validation=_validation_text(prepared),
        test_validation=None,
        training_metrics=stats.cv_summary(cv_scores, metrics, n_fit, n_val),
        cv_scores=cv_scores,
        cv_signature={
            "n_splits": prepared.actual.n_splits,
            "n_repeats": prepared.actual.n_repeats,
            "seed": seed,
            "patients": list(prepared.train_ids),
        },
        dropped_patients=list(prepared.dropped),
        library_versions=library_versions(),
        notes=list(prepared.actual.notes),
    )


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
    result.test_validation = f"Stratified percentile bootstrap ({n_resamples} repetitions)"
    result.test_metrics, result.test_bootstrap_values, result.test_scores_values = (
        summary,
        values,
        per,
    )
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


def _column_blocks(pre: Any, columns: list[str]) -> list[np.ndarray]:
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
    blocks = _column_blocks(pre, list(x_test.columns))
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
