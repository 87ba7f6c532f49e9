"""Null-hypothesis training data: random labels, pure-noise features (tests and benchmarks).

A model trained on these data has nothing to learn: an honest estimate of its AUC is 0.5 and
its 95 % interval lies wholly above 0.5 in about 2.5 % of the sets.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workers.training.engine import TrainingData


def null_set(seed: int, n_train: int = 60, n_test: int = 0, n_features: int = 200) -> TrainingData:
    """Return one null data set: Bernoulli(0.5) labels (at least 3 per class), noise features."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    ids = [f"N{seed}-{i:03d}" for i in range(n)]
    labels = rng.integers(0, 2, size=n)
    while min(np.bincount(labels[:n_train], minlength=2)) < 3:
        labels = rng.integers(0, 2, size=n)
    features = pd.DataFrame(
        rng.normal(size=(n, n_features)),
        index=ids,
        columns=[f"CT-GTV-noise{j:03d}" for j in range(n_features)],
    )
    outcome = pd.DataFrame({"label": np.where(labels == 1, "1", "0")}, index=ids)
    return TrainingData(
        kind="classification",
        features=features,
        clinical=(),
        outcome=outcome,
        positive_class="1",
        training_patients=tuple(ids[:n_train]),
        test_patients=tuple(ids[n_train:]) if n_test else None,
    )
