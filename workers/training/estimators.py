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

# Solver per logistic penalty: lbfgs for ridge, liblinear (fast, exact L1) for lasso, saga
# (the only one) for the elastic net. The grid names the penalty; sklearn 1.8+ wants l1_ratio.
LOGISTIC = {
    "l2": {"l1_ratio": 0.0, "solver": "lbfgs", "max_iter": 1000},
    "l1": {"l1_ratio": 1.0, "solver": "liblinear"},
    "elasticnet": {"solver": "saga", "max_iter": 1000, "tol": 1e-3},
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
