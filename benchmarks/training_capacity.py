"""Benchmark: how long one training takes as cohorts grow (nested CV, default grids, 2 cores).

Synthetic radiomics-like tables (benchmarks/training.py's generator: a hidden risk drives the
outcome and 15 % of the features), full-dataset mode, the default grid of each kind. For
survival the hidden risk drives an exponential event time with about 30 % censoring.

Run from the repository root (no services needed):

    .venv/bin/python benchmarks/training_capacity.py [--patients 150 300 600] [--features 1130]

One line per (kind, size): `training_capacity: kind=<k> patients=<n> features=<p>
candidates=<c> seconds=<s> nested=<metric>` (one line each).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import training  # noqa: E402  (benchmarks/training.py: the cohort generator)

from shared.modeling import grids  # noqa: E402
from workers.training.engine import TrainingData, train  # noqa: E402


def outcome(kind: str, labels: pd.Series, seed: int) -> pd.DataFrame:
    """The outcome table of a kind: the 0/1 label, or a time and event driven by it."""
    if kind == "classification":
        return labels.to_frame("label")
    rng = np.random.default_rng(seed)
    risk = labels.astype(int).to_numpy() + rng.normal(scale=0.5, size=labels.size)
    time_ = rng.exponential(30 * np.exp(-risk)) + 0.1
    event = rng.random(labels.size) < 0.7
    return pd.DataFrame({"time": np.round(time_, 1), "event": event}, index=labels.index)


def main() -> None:
    """Time one training per kind and size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, nargs="+", default=[150, 300, 600])
    parser.add_argument("--features", type=int, default=training.N_FEATURES)
    parser.add_argument("--kinds", nargs="+", default=["classification", "survival"])
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    training.N_FEATURES = args.features
    for n in args.patients:
        training.N_PATIENTS = n
        features, labels = training.cohort()
        for kind in args.kinds:
            data = TrainingData(
                kind,
                features,
                (),
                outcome(kind, labels, n),
                "1" if kind == "classification" else None,
                tuple(labels.index),
                None,
            )
            started = time.perf_counter()
            result = train(data, lambda *a, **k: None, n_jobs=args.jobs)
            seconds = time.perf_counter() - started
            metric = "auc" if kind == "classification" else "c-index"
            print(
                f"training_capacity: kind={kind} patients={n} features={args.features} "
                f"candidates={grids.count_candidates(kind)} seconds={seconds:.1f} "
                f"nested={result.training_metrics[metric]['mean']:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
