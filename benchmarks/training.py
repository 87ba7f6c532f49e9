"""Benchmark: the default classification grid through engine.train, against plain scikit-learn.

150 synthetic patients x 1,130 radiomics-like features (informative: a hidden risk drives the
label and part of the features), 2 cores, all measured in one run:

- project_s: workers.training.engine.train in full-dataset mode: nested cross-validation
  (5 outer folds x 2 repetitions, each with a 5-fold inner search of the default grid), then
  the final 5-fold search on all patients and the refit of its best candidate;
- plain_s: the same work in plain scikit-learn: `cross_validate(GridSearchCV(...))` over the
  same outer folds (a 5-fold inner GridSearchCV, refit on AUC), then `GridSearchCV.fit` on all
  patients, with the same pipelines, grid and metrics;
- ref_grid_s: the old backend's 266-candidate grid (CalibratedClassifierCV(SVC) with four
  kernels, saga logistic regressions, forests up to 1,000 trees) as one plain GridSearchCV on
  the final search's folds (not nested: nested, it would take about half an hour).

AUCs: auc_nested is the project's reported (nested) estimate; auc_project is the project's
best-of-grid mean on the final search's folds and auc_ref the old grid's on the same folds
(both optimistic in the same way, so comparable with each other).

Run from the repository root (no services needed):

    .venv/bin/python benchmarks/training.py

The last line is `training: project_s=<x> plain_s=<y> nested_ratio=<x/y> ref_grid_s=<z>
ref_speedup=<z/x> auc_nested=<n> auc_project=<a> auc_ref=<b>` (on one line).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import make_scorer, precision_score, recall_score
from sklearn.model_selection import (
    GridSearchCV,
    RepeatedStratifiedKFold,
    StratifiedKFold,
    cross_validate,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.svm import SVC

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.modeling import grids  # noqa: E402
from shared.modeling.plan import plan  # noqa: E402
from workers.training.engine import TrainingData, train  # noqa: E402
from workers.training.estimators import make_estimator  # noqa: E402
from workers.training.preprocess import column_transformer  # noqa: E402

N_PATIENTS = 150
N_FEATURES = 1130  # 12 image types x 93 texture/first-order features + 14 shape features
N_FACTORS = 20
SEED = 20261129
N_JOBS = 2

SCORING = {
    "auc": "roc_auc",
    "accuracy": "accuracy",
    "precision": make_scorer(precision_score, zero_division=np.nan),
    "sensitivity": make_scorer(recall_score),
    "specificity": make_scorer(recall_score, pos_label=0),
}


def cohort(seed: int = SEED) -> tuple[pd.DataFrame, pd.Series]:
    """Correlated radiomics-like features; a hidden risk drives the label and 15 % of them."""
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=N_PATIENTS)
    label = (risk + rng.normal(scale=0.8, size=N_PATIENTS) > 0).astype(int)
    factors = np.column_stack([risk, rng.normal(size=(N_PATIENTS, N_FACTORS - 1))])
    loadings = rng.normal(size=(N_FACTORS, N_FEATURES)) * (
        rng.random((N_FACTORS, N_FEATURES)) < 0.3
    )
    loadings[0] = np.where(rng.random(N_FEATURES) < 0.15, rng.normal(0.8, 0.2, N_FEATURES), 0)
    values = factors @ loadings + rng.normal(scale=1.0, size=(N_PATIENTS, N_FEATURES))
    # Radiomics magnitudes: 1e-3 .. 1e6 with offsets, a few energies near 1e10; 0.1 % missing.
    scale = 10 ** rng.uniform(-3, 6, N_FEATURES)
    scale[:12] = 1e10
    values = values * scale + scale * rng.uniform(0, 5, N_FEATURES)
    values[rng.random(values.shape) < 0.001] = np.nan
    ids = [f"B{i:03d}" for i in range(N_PATIENTS)]
    features = pd.DataFrame(
        values, index=ids, columns=[f"CT-GTV-f{j:04d}" for j in range(N_FEATURES)]
    )
    return features, pd.Series(np.where(label == 1, "1", "0"), index=ids)


def outer_for(labels: pd.Series) -> RepeatedStratifiedKFold:
    """The engine's outer folds for these labels (plan() decides folds and repeats)."""
    layout = plan("classification", "fulldataset", list(labels))
    return RepeatedStratifiedKFold(
        n_splits=layout.n_splits, n_repeats=layout.n_repeats, random_state=42
    )


def inner_cv() -> StratifiedKFold:
    """A 5-fold search's folds (the engine's final search uses these on all patients)."""
    return StratifiedKFold(n_splits=5, shuffle=True, random_state=42)


def run_project(features: pd.DataFrame, labels: pd.Series) -> tuple[float, float, float, str]:
    """engine.train on the default grid; return (seconds, nested AUC, best-of-grid AUC, best)."""
    data = TrainingData(
        "classification", features, (), labels.to_frame("label"), "1", tuple(labels.index), None
    )
    events = []
    started = time.perf_counter()
    result = train(data, lambda *a, **k: events.append(a), n_jobs=N_JOBS)
    elapsed = time.perf_counter() - started
    best = f"{result.best_algorithm} {result.best_data_normalization} {result.hyperparameters}"
    nested = result.training_metrics["auc"]["mean"]
    return elapsed, nested, result.selection_cv_metrics["auc"]["mean"], best


def project_grid(columns: list[str]) -> list[dict]:
    """The default grid as GridSearchCV parameter dicts over the same pipeline steps."""
    return [
        {
            "preprocess": [column_transformer(columns, [], scaler)],
            "model": [make_estimator(algorithm, params, 42)],
        }
        for algorithm, scaler, params in grids.candidates("classification")
    ]


def reference_grid() -> list[dict]:
    """The old backend's grid (reference-backend.md §3.7): 266 candidates."""
    scalers = [StandardScaler(), MinMaxScaler()]
    svm = CalibratedClassifierCV(SVC(random_state=42))
    return [
        {
            "preprocessor": scalers,
            "classifier": [LogisticRegression(solver="lbfgs", max_iter=1000, random_state=42)],
        },
        {
            # penalty {l1, l2, elasticnet} with l1_ratio 0.5, in scikit-learn 1.9's terms
            "preprocessor": scalers,
            "classifier": [
                LogisticRegression(solver="saga", max_iter=1000, l1_ratio=r, random_state=42)
                for r in (1.0, 0.0, 0.5)
            ],
        },
        {
            "preprocessor": scalers,
            "classifier": [svm],
            "classifier__estimator__C": [0.01, 0.1, 1, 10, 100],
            "classifier__estimator__gamma": ["scale", "auto", 1, 0.1, 0.01, 0.001],
            "classifier__estimator__kernel": ["linear", "rbf", "poly", "sigmoid"],
        },
        {
            "preprocessor": scalers,
            "classifier": [RandomForestClassifier(random_state=42)],
            "classifier__max_depth": [10, 100, None],
            "classifier__n_estimators": [10, 100, 1000],
        },
    ]


def run_search(pipeline: Pipeline, grid: list[dict], x, y, cv) -> tuple[float, float, int]:
    """Plain GridSearchCV (refit on AUC); return (seconds, best CV AUC, candidates)."""
    search = GridSearchCV(pipeline, grid, scoring=SCORING, refit="auc", cv=cv, n_jobs=N_JOBS)
    started = time.perf_counter()
    search.fit(x, y)
    elapsed = time.perf_counter() - started
    return elapsed, float(search.best_score_), len(search.cv_results_["params"])


def run_plain_nested(grid: list[dict], x, y, outer) -> tuple[float, float]:
    """Plain nested CV plus the final search on all patients; return (seconds, nested AUC)."""
    pipeline = Pipeline([("preprocess", "passthrough"), ("model", "passthrough")])
    search = GridSearchCV(
        pipeline, grid, scoring=SCORING, refit="auc", cv=inner_cv(), n_jobs=N_JOBS
    )
    started = time.perf_counter()
    scores = cross_validate(search, x, y, cv=outer, scoring=SCORING)
    search.fit(x, y)  # the final model, as the project also delivers one
    return time.perf_counter() - started, float(np.mean(scores["test_auc"]))


def main() -> None:
    """Run the three measurements and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="rounds of project + plain")
    parser.add_argument("--skip-ref", action="store_true", help="skip the 266-candidate grid")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    # Precision is NaN for a fold without a positive prediction (as in the engine).
    warnings.filterwarnings("ignore", message="One or more of the test scores are non-finite")
    os.environ["PYTHONWARNINGS"] = "ignore"  # also in the loky processes
    features, labels = cohort()
    y = (labels == "1").to_numpy(dtype=int)
    outer = outer_for(labels)
    columns = list(features.columns)
    print(
        f"{N_PATIENTS} patients x {N_FEATURES} features, {outer.get_n_splits()} outer splits x "
        f"5 inner folds, {grids.count_candidates('classification')} candidates, "
        f"n_jobs={N_JOBS}, load average {os.getloadavg()[0]:.1f}"
    )
    project, plain = [], []
    for round_ in range(args.repeat):
        order = ("project", "plain") if round_ % 2 == 0 else ("plain", "project")
        for which in order:
            if which == "project":
                seconds, auc_nested, auc_project, best = run_project(features, labels)
                project.append(seconds)
                print(
                    f"  project {seconds:.1f} s, nested CV AUC {auc_nested:.3f}, best-of-grid "
                    f"{auc_project:.3f} ({best}), load {os.getloadavg()[0]:.1f}"
                )
            else:
                seconds, auc_plain = run_plain_nested(project_grid(columns), features, y, outer)
                plain.append(seconds)
                print(
                    f"  plain   {seconds:.1f} s, nested CV AUC {auc_plain:.3f}, "
                    f"load {os.getloadavg()[0]:.1f}"
                )
    project_s, plain_s = min(project), min(plain)
    ref_s, auc_ref = float("nan"), float("nan")
    if not args.skip_ref:
        ref_pipeline = Pipeline(
            [
                ("impute", SimpleImputer()),
                ("preprocessor", "passthrough"),
                ("classifier", "passthrough"),
            ]
        )
        ref_s, auc_ref, n = run_search(ref_pipeline, reference_grid(), features, y, inner_cv())
        print(
            f"  ref     {ref_s:.1f} s, CV AUC {auc_ref:.3f} ({n} candidates), "
            f"load {os.getloadavg()[0]:.1f}"
        )
    print(
        f"training: project_s={project_s:.2f} plain_s={plain_s:.2f} "
        f"nested_ratio={project_s / plain_s:.3f} "
        f"ref_grid_s={ref_s:.2f} ref_speedup={ref_s / project_s:.2f} "
        f"auc_nested={auc_nested:.3f} auc_project={auc_project:.3f} auc_ref={auc_ref:.3f}"
    )


if __name__ == "__main__":
    main()
