"""train(): nested CV, the final search and refit, and the result with its evaluation."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import platform
from collections import Counter
from collections.abc import Sequence
from importlib import metadata
from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline

from shared.modeling import grids, stats
from shared.modeling.interface import (
    Progress,
    TrainingData,
    TrainingResult,
)
from workers.training.engine.evaluation import (
    IMPORTANCE_REPEATS,
    evaluate_test,
)
from workers.training.engine.inputs import (
    Prepared,
    prepare,
)
from workers.training.engine.scoring import (
    N_RESAMPLES,
    REFIT_METRIC,
)
from workers.training.engine.search import (
    FINAL,
    Candidate,
    Grid,
    Nested,
    Split,
    Ticker,
    candidate_groups,
    fit_first,
    inner_splits,
    outer_splits,
    ranking,
    run_nested,
    run_searches,
)
from workers.training.estimators import DECISION_THRESHOLD

log = logging.getLogger(__name__)


LIBRARIES = ("scikit-learn", "scikit-survival", "numpy", "scipy", "pandas", "joblib")


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
    prepared = prepare(data)
    if n_jobs != 1 and multiprocessing.current_process().daemon:
        log.warning(
            "training runs on one core: joblib cannot start processes from a daemonic process "
            "(Celery prefork pool); run the training worker with --pool threads"
        )
    only = None if algorithms is None else list(algorithms)
    candidates = grids.candidates(data.kind, only, grid, scalers)
    train_rows = np.arange(len(prepared.train_ids))
    outer = outer_splits(prepared, train_rows, data.seed)
    searches = {FINAL: inner_splits(prepared, train_rows, data.seed)}
    for k, (fit_rows, _) in enumerate(outer):
        searches[k] = inner_splits(prepared, fit_rows, data.seed + 1 + k)
    units = (
        sum(len(s) for s in searches.values()) * len(candidate_groups(candidates)) + len(outer) + 1
    )
    ticker = Ticker(progress, prepared.promised.n_steps, units)
    searched = run_searches(prepared, candidates, searches, ticker, data.seed, n_jobs)
    nested = run_nested(prepared, candidates, searched, outer, ticker, data.seed, n_jobs)
    order = ranking(prepared.kind, searched[FINAL])
    best, pipeline = fit_first(prepared, candidates, order, data.seed, train_rows)
    ticker.unit_done()
    _attach_metadata(pipeline, prepared)
    result = _result(prepared, pipeline, candidates, best, searched, searches, outer, nested)
    result.cv_signature["seed"] = data.seed
    if prepared.test_ids:
        evaluate_test(prepared, result, progress, data.seed, n_resamples, importance_repeats)
    log.info(
        "trained %s: %d candidates, %d outer x %d inner-search splits",
        candidates[best],
        len(candidates),
        len(outer),
        len(searches[FINAL]),
    )
    return result


def _attach_metadata(pipeline: Pipeline, prepared: Prepared) -> None:
    """Attach what predict() needs to the final pipeline."""
    pipeline.qi2_metadata = {
        "kind": prepared.kind,
        "classes": prepared.classes,
        "radiomics_columns": prepared.radiomics,
        "clinical_columns": [c.name for c in prepared.clinical],
    }


def _validation_text(prepared: Prepared, inner: list[int]) -> str:
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


def _fold_signature(prepared: Prepared, outer: list[Split]) -> dict[str, str]:
    """Return hashes of the outer validation folds (patient ids) and of the training outcome.

    M4 pairs two models' CV scores only when both are equal: the same folds, scored against
    the same truth.
    """
    folds = [sorted(prepared.train_ids[i] for i in val) for _, val in outer]
    rows = np.arange(len(prepared.train_ids))
    truth = {k: [v.item() for v in values[rows]] for k, values in sorted(prepared.y.items())}
    return {"folds": _digest(folds), "labels": _digest([prepared.train_ids, truth])}


def _failures(candidates: list[Candidate], grid: Grid, n_splits: int) -> list[dict]:
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
    prepared: Prepared,
    pipeline: Pipeline,
    candidates: list[Candidate],
    best: int,
    searched: dict[int, Grid],
    searches: dict[int, list[Split]],
    outer: list[Split],
    nested: Nested,
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
    prepared: Prepared,
    candidates: list[Candidate],
    searched: dict[int, Grid],
    searches: dict[int, list[Split]],
    outer: list[Split],
    nested: Nested,
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
