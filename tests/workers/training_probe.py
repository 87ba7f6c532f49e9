"""A probe task on the project's Celery app: engine.train inside a real prefork pool process.

Started by test_training_celery.py as `celery -A tests.workers.training_probe worker -Q training
-P prefork`; the worker is the project's (same app, signals and thread caps) plus this task.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
import warnings

import numpy as np
import pandas as pd
from cloudpickle import register_pickle_by_value
from joblib import Parallel, delayed

from shared.modeling.plan import plan
from workers.celery_app import app
from workers.training.engine import TrainingData, train

PROBE_TASK = "training.probe_engine"
# Two logistic candidates: the test is about which processes work and report, not the grid
# (the default grid took half a minute per pool; the prefork pool runs it on one core).
SMALL_GRID = {"LogisticRegression": [{"penalty": "l2", "C": 0.1}, {"penalty": "l2", "C": 1.0}]}


def _pid_after(seconds: float) -> int:
    """Sleep (so that each pool process gets work), then return this process's pid."""
    time.sleep(seconds)
    return os.getpid()


@app.task(name=PROBE_TASK)
def probe_engine(n_jobs: int) -> dict:
    """Train a small model with n_jobs; report which processes emitted events and did work."""
    rng = np.random.default_rng(0)
    features = pd.DataFrame(
        rng.normal(size=(40, 20)), index=[f"P{i}" for i in range(40)]
    ).add_prefix("CT-GTV-f")
    outcome = pd.DataFrame({"label": ["a", "b"] * 20}, index=features.index)
    data = TrainingData("classification", features, (), outcome, None, tuple(features.index), None)
    event_pids: list[int] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(
            data,
            lambda *_a, **_k: event_pids.append(os.getpid()),
            algorithms=list(SMALL_GRID),
            grid=SMALL_GRID,
            n_jobs=n_jobs,
        )
        # The pool processes cannot import the tests package: send the function by value.
        register_pickle_by_value(sys.modules[__name__])
        loky_pids = Parallel(n_jobs=n_jobs, backend="loky")(
            delayed(_pid_after)(0.1) for _ in range(20)
        )
    return {
        "task_pid": os.getpid(),
        "daemon": bool(multiprocessing.current_process().daemon),
        "event_pids": sorted(set(event_pids)),
        "n_events": len(event_pids),
        "n_steps": plan("classification", "fulldataset", list(outcome["label"])).n_steps,
        "n_outer": len(result.cv_scores["auc"]),
        "loky_pids": sorted(set(loky_pids)),
        "warnings": [str(w.message) for w in caught if "n_jobs=1" in str(w.message)],
    }
