"""workers.training.estimators: the SVC's probabilities (PlattSVC) and the IPCRidge risk."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.calibration import CalibratedClassifierCV
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import SVC

from workers.training.estimators import PlattSVC


def _weak_signal(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """40 patients, 30 noise features, one of them shifted a little by the class."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 30))
    y = np.array([0, 1] * 20)
    x[:, 0] += 0.8 * y
    return x, y


def _sklearn_calibrated(x: np.ndarray, y: np.ndarray, **svc: object) -> CalibratedClassifierCV:
    """scikit-learn's sigmoid calibration on the same out-of-fold splits as PlattSVC."""
    folds = StratifiedKFold(5, shuffle=True, random_state=42)
    model = SVC(random_state=42, **svc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CalibratedClassifierCV(model, method="sigmoid", cv=folds, ensemble=False).fit(x, y)


@pytest.mark.parametrize("seed", [0, 2, 4, 6])
def test_platt_svc_equals_scikit_learn_sigmoid_calibration(seed):
    """Where scikit-learn's fitted sigmoid increases, PlattSVC is the same calibration."""
    x, y = _weak_signal(seed)
    settings = {"kernel": "linear", "C": 0.001}
    reference = _sklearn_calibrated(x, y, **settings)
    ours = PlattSVC(random_state=42, **settings).fit(x, y)
    expected = reference.predict_proba(x)[:, 1]
    assert spearmanr(ours.decision_function(x), expected).statistic > 0  # not a reversed case
    assert ours.predict_proba(x)[:, 1] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("seed", [1, 3, 5])
def test_platt_svc_never_reverses_the_svc_ranking(seed):
    """scikit-learn's unconstrained sigmoid on out-of-fold values of a heavily regularised SVC
    comes out decreasing here: its probabilities rank patients backwards (AUC 1 - AUC)."""
    x, y = _weak_signal(seed)
    settings = {"kernel": "linear", "C": 0.001}
    reference = _sklearn_calibrated(x, y, **settings).predict_proba(x)[:, 1]
    ours = PlattSVC(random_state=42, **settings).fit(x, y)
    decision = ours.decision_function(x)
    assert spearmanr(decision, reference).statistic < 0
    probability = ours.predict_proba(x)[:, 1]
    assert spearmanr(decision, probability).statistic == pytest.approx(1.0)
    assert roc_auc_score(y, probability) == pytest.approx(roc_auc_score(y, decision))
    assert (ours.predict(x) == (probability > 0.5)).all()
