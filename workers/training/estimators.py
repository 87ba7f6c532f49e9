"""Estimators of the grids (shared/modeling/grids.py): algorithm key + parameters -> estimator."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC
from sksurv.ensemble import RandomSurvivalForest
from sksurv.linear_model import CoxnetSurvivalAnalysis, CoxPHSurvivalAnalysis, IPCRidge

# Solver per logistic penalty (sklearn 1.8+ takes l1_ratio; the grid names the penalty).
# With far more features than patients, newton-cg reaches the exact ridge solution ~8x faster
# than lbfgs; liblinear is fast and exact for the lasso; only saga fits the elastic net, and a
# 1e-2 tolerance gives the same CV AUC as 1e-3 in a quarter of the time on 1,130 features.
LOGISTIC = {
    "l2": {"l1_ratio": 0.0, "solver": "newton-cg", "max_iter": 1000},
    "l1": {"l1_ratio": 1.0, "solver": "liblinear"},
    "elasticnet": {"solver": "saga", "max_iter": 1000, "tol": 1e-2},
}


class RiskIPCRidge(IPCRidge):
    """IPCRidge whose predict() returns a risk score: minus the predicted survival time.

    IPCRidge predicts times (longer = better); every other survival model here predicts a
    risk (higher = worse), which is what the c-index and the stored risk scores expect.
    """

    def predict(self, X: Any) -> np.ndarray:
        """Return -(predicted survival time)."""
        return -super().predict(X)


def make_estimator(algorithm: str, params: dict[str, Any], seed: int, final: bool = False) -> Any:
    """Return the unfitted estimator of one candidate (as scored in cross-validation)."""
    params = dict(params)
    if algorithm == "LogisticRegression":
        return LogisticRegression(**LOGISTIC[params.pop("penalty")], **params, random_state=seed)
    if algorithm == "SVC":
        # Scored by its decision function in CV; probabilities are added once, at the refit.
        return SVC(**params, random_state=seed)
    if algorithm == "RandomForestClassifier":
        return RandomForestClassifier(**params, random_state=seed, n_jobs=1)
    if algorithm == "CoxPHSurvivalAnalysis":
        return CoxPHSurvivalAnalysis(**params)
    if algorithm == "CoxnetSurvivalAnalysis":
        # One penalty per candidate; the final model keeps a baseline for survival curves.
        alpha = params.pop("alpha")
        return CoxnetSurvivalAnalysis(alphas=[alpha], **params, fit_baseline_model=final)
    if algorithm == "IPCRidge":
        return RiskIPCRidge(**params)
    if algorithm == "RandomSurvivalForest":
        return RandomSurvivalForest(**params, random_state=seed, n_jobs=1)
    raise ValueError(f"unknown algorithm {algorithm!r}")


def final_estimator(algorithm: str, params: dict[str, Any], seed: int, n_minor: int) -> Any:
    """Return the estimator refitted on all training patients (SVC: with probabilities).

    The SVC gets one Platt scaling fitted by internal CV (`ensemble=False`: one SVC on all
    the data, one sigmoid), the replacement of the deprecated SVC(probability=True); the
    fitted sigmoid is (normally) increasing, so its probabilities rank patients as the scored
    decision function did.
    """
    estimator = make_estimator(algorithm, params, seed, final=True)
    if algorithm == "SVC":
        folds = max(2, min(5, n_minor))
        return CalibratedClassifierCV(estimator, method="sigmoid", cv=folds, ensemble=False)
    return estimator
