"""Training on a synthetic DICOM + RTSTRUCT cohort extracted by the real extraction compute.

The cohort's tumour texture depends on a hidden risk that drives both the binary outcome
(oracle AUC ~0.8) and the survival time, so a sound pipeline finds it and a leaky or
sign-flipped one shows.
"""

from __future__ import annotations

import numpy as np
import pytest

from shared.modeling import grids
from tests.workers.training_support import Events, extracted_cohort, make_data
from workers.training.engine import train

N_PATIENTS = 150


@pytest.fixture(scope="module")
def cohort():
    return extracted_cohort(N_PATIENTS, seed=11)


def test_cohort_is_extracted_from_dicom(cohort):
    features, truth = cohort
    assert features.shape[0] == N_PATIENTS and features.shape[1] > 30
    assert any("glcm" in c for c in features.columns)
    assert set(truth["label"]) == {"0", "1"}


def test_best_classifier_finds_the_signal_and_not_shuffled_labels(cohort):
    features, truth = cohort
    ids = list(features.index)
    result = train(make_data("classification", features, truth, ids), Events(), n_jobs=2)
    auc = result.training_metrics["auc"]
    print(
        f"CV AUC {auc['mean']:.3f} [{auc['inf_value']:.3f}, {auc['sup_value']:.3f}] "
        f"({result.best_algorithm}, {result.best_data_normalization}, {result.hyperparameters})"
    )
    assert 0.70 <= auc["mean"] <= 0.95

    shuffled = truth.assign(label=np.random.default_rng(0).permutation(truth["label"].to_numpy()))
    null = train(make_data("classification", features, shuffled, ids), Events(), n_jobs=2)
    print(f"shuffled labels: CV AUC {null.training_metrics['auc']['mean']:.3f}")
    assert 0.35 <= null.training_metrics["auc"]["mean"] <= 0.65


@pytest.mark.parametrize("algorithm", grids.SURVIVAL_ALGORITHMS)
def test_each_survival_algorithm_ranks_risk(cohort, algorithm):
    features, truth = cohort
    data = make_data("survival", features, truth, list(features.index))
    result = train(data, Events(), algorithms=[algorithm], n_jobs=2)
    c_index = result.training_metrics["c-index"]["mean"]
    print(f"{algorithm}: CV c-index {c_index:.3f} ({result.hyperparameters})")
    assert result.best_algorithm == algorithm
    assert c_index > 0.62


def test_train_test_ci_contains_the_cv_auc(cohort):
    features, truth = cohort
    rng = np.random.default_rng(5)
    test = sorted(
        p
        for label in ("0", "1")
        for p in rng.permutation(truth.index[truth["label"] == label])[: N_PATIENTS // 6]
    )
    train_ids = sorted(set(features.index) - set(test))
    data = make_data("classification", features, truth, train_ids, test)
    events = Events()
    result = train(data, events, n_jobs=2)
    cv = result.training_metrics["auc"]["mean"]
    test_auc = result.test_metrics["auc"]
    print(
        f"train/test: CV AUC {cv:.3f}; test AUC {test_auc['mean']:.3f} "
        f"[{test_auc['inf_value']:.3f}, {test_auc['sup_value']:.3f}] on {len(test)} patients"
    )
    assert test_auc["inf_value"] <= cv <= test_auc["sup_value"]
    assert events.count("testing") >= 2
