"""Estimators of the grids (shared/modeling/grids.py): algorithm key + parameters -> estimator.

`final=True` is the estimator a model stores, used for every reported figure (outer folds of
the nested CV, test set, predictions). The model-selection searches rank candidates with
`final=False`, which differs only for the SVC (its raw decision function, without the costly
calibration; only the selection metric is read from it) and the Coxnet (no baseline model).
"""

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
# Every classifier here predicts the positive class when its probability is above this (the
# SVC too, through its calibrated probabilities): one rule in CV, on the test set and later.
DECISION_THRESHOLD = 0.5


class RiskIPCRidge(IPCRidge):
    """IPCRidge whose predict() returns a risk score: minus the predicted survival time.

    IPCRidge predicts times (longer = better); every other survival model here predicts a
    risk (higher = worse), which is what the c-index and the stored risk scores expect.
    scikit-survival's score() negates the predictions of estimators that say they predict
    times (`_predict_risk_score = False`); this one predicts a risk, so score() must not.
    """

    _predict_risk_score = True

    def predict(self, X: Any) -> np.ndarray:
        """Return -(predicted survival time)."""
        return -super().predict(X)


def calibrated_svc(params: dict[str, Any], seed: int, n_minor: int) -> CalibratedClassifierCV:
    """Return an SVC with Platt-scaled probabilities (one SVC on all the data, one sigmoid).

    The replacement of the deprecated SVC(probability=True). The sigmoid is fitted by an
    internal stratified CV of at most 5 folds, fewer when the smaller class is smaller.
    """
    folds = max(2, min(5, n_minor))
    svc = SVC(**params, random_state=seed)
    return CalibratedClassifierCV(svc, method="sigmoid", cv=folds, ensemble=False)


def make_estimator(
    algorithm: str, params: dict[str, Any], seed: int, n_minor: int = 5, final: bool = False
) -> Any:
    """Return the unfitted estimator of one candidate.

    `n_minor` is the size of the smaller class of the data it will be fitted on (the SVC's
    calibration folds). `final`: the estimator as stored (calibrated SVC, Coxnet with its
    baseline model for survival curves); otherwise the cheaper one the searches rank.
    """
    params = dict(params)
    if algorithm == "LogisticRegression":
        return LogisticRegression(**LOGISTIC[params.pop("penalty")], **params, random_state=seed)
    if algorithm == "SVC":
        return calibrated_svc(params, seed, n_minor) if final else SVC(**params, random_state=seed)
    if algorithm == "RandomForestClassifier":
        return RandomForestClassifier(**params, random_state=seed, n_jobs=1)
    if algorithm == "CoxPHSurvivalAnalysis":
        return CoxPHSurvivalAnalysis(**params)
    if algorithm == "CoxnetSurvivalAnalysis":
        alpha = params.pop("alpha")
        return CoxnetSurvivalAnalysis(alphas=[alpha], **params, fit_baseline_model=final)
    if algorithm == "IPCRidge":
        return RiskIPCRidge(**params)
    if algorithm == "RandomSurvivalForest":
        return RandomSurvivalForest(**params, random_state=seed, n_jobs=1)
    raise ValueError(f"unknown algorithm {algorithm!r}")
