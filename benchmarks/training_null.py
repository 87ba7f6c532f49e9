"""Benchmark: what a model trained on random labels reports (the null hypothesis).

Each set: 60 training + 40 test patients, labels drawn at random (Bernoulli 0.5), 200 pure-noise
features, the default classification grid, train/test mode, 2 cores. Nothing can be learnt, so
an honest CV estimate averages 0.5 and its 95 % interval lies wholly above 0.5 in about 2.5 %
of the sets. Goals (issue 15): cv_auc_mean <= 0.53 and ci_excludes_05 <= 0.07.

Run from the repository root (no services needed):

    .venv/bin/python benchmarks/training_null.py [--sets 30] [--seed 2000]

One line per set, then the summary as the last line:
`training_null: sets=<n> cv_auc_mean=<x> ci_excludes_05=<share> test_auc_mean=<y>` (one line),
followed on the same line by the best-of-grid CV AUC mean that the nested estimate replaced
and the seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.null_data import null_set  # noqa: E402
from workers.training.engine import train  # noqa: E402


def main() -> None:
    """Train on the null sets and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=30)
    parser.add_argument("--seed", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    started = time.perf_counter()
    cv, lows, tests, selection = [], [], [], []
    for offset in range(args.sets):
        data = null_set(args.seed + offset, n_train=60, n_test=40, n_features=200)
        result = train(data, lambda *a, **k: None, n_jobs=args.jobs)
        auc = result.training_metrics["auc"]
        cv.append(auc["mean"])
        lows.append(auc["inf_value"])
        tests.append(result.test_metrics["auc"]["mean"])
        selection.append(result.selection_cv_metrics["auc"]["mean"])
        print(
            f"set {offset + 1}: nested_cv_auc={auc['mean']:.3f} "
            f"[{auc['inf_value']:.3f}, {auc['sup_value']:.3f}] "
            f"best_of_grid_cv_auc={selection[-1]:.3f} test_auc={tests[-1]:.3f} "
            f"model={result.best_algorithm}",
            flush=True,
        )
    excluding = float(np.mean(np.array(lows) > 0.5))
    print(
        f"training_null: sets={args.sets} cv_auc_mean={np.mean(cv):.3f} "
        f"ci_excludes_05={excluding:.3f} test_auc_mean={np.mean(tests):.3f} "
        f"best_of_grid_cv_auc_mean={np.mean(selection):.3f} "
        f"seconds={time.perf_counter() - started:.0f}"
    )


if __name__ == "__main__":
    main()
