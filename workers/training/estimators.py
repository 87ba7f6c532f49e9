"""Estimators of the grids (shared/modeling/grids.py): algorithm key + parameters -> estimator.

`final=True` is the estimator a model stores, used for every reported figure (outer folds of
the nested CV, test set, predictions). The model-selection searches rank candidates with
`final=False`, which differs only for the SVC (no probabilities: its decision function ranks
patients exactly as the stored model's probabilities do, so the AUC that selects it is the
stored model's) and the Coxnet (no baseline model).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
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


def platt(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Fit Platt's sigmoid P(y=1 | s) = 1 / (1 + exp(-(a * s + b))) with a >= 0.

    Platt's smoothed targets keep the fit finite when the scores separate the classes. The
    bound on the slope keeps the probabilities in the order of the scores: an unconstrained
    fit on out-of-fold scores of a near-constant SVC can come out decreasing.
    """
    y = np.asarray(y, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    target = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(ab: np.ndarray) -> tuple[float, np.ndarray]:
        z = ab[0] * scores + ab[1]
        gradient = expit(z) - target
        return float(np.sum(np.logaddexp(0, z) - target * z)), np.array(
            [gradient @ scores, gradient.sum()]
        )

    start = np.array([0.0, np.log((n_pos + 1) / (n_neg + 1))])
    fit = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=[(0, None), (None, None)])
    return float(fit.x[0]), float(fit.x[1])


class PlattSVC(ClassifierMixin, BaseEstimator):
    """An SVC with Platt-scaled probabilities that rank patients as its decision function does.

    The sigmoid is fitted on out-of-fold decision values (stratified, at most 5 folds), as
    scikit-learn's CalibratedClassifierCV(method="sigmoid", ensemble=False) does, but its slope
    may not be negative: unconstrained, a heavily regularised SVC's out-of-fold values can fit
    a decreasing sigmoid that reverses its ranking (seen: outer-fold AUC 0.18 where the SVC's
    own AUC was 0.82). When out-of-fold values carry no ranking (slope 0), the sigmoid is
    fitted on the SVC's own training decision values instead. `predict` is
    P(class 1) > DECISION_THRESHOLD, the rule of every classifier here.
    """

    def __init__(
        self,
        C: float = 1.0,
        kernel: str = "rbf",
        gamma: str | float = "scale",
        class_weight: str | dict | None = None,
        random_state: int | None = None,
        calibration_folds: int = 5,
    ) -> None:
        self.C = C
        self.kernel = kernel
        self.gamma = gamma
        self.class_weight = class_weight
        self.random_state = random_state
        self.calibration_folds = calibration_folds

    def _svc(self) -> SVC:
        """Return the unfitted SVC."""
        return SVC(
            C=self.C,
            kernel=self.kernel,
            gamma=self.gamma,
            class_weight=self.class_weight,
            random_state=self.random_state,
        )

    def fit(self, X: Any, y: Any) -> PlattSVC:
        """Fit the SVC on all the data and the sigmoid on out-of-fold decision values."""
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        if self.classes_.size != 2:
            raise ValueError("PlattSVC needs exactly two classes")
        positive = y == self.classes_[1]
        self.svc_ = self._svc().fit(X, y)
        folds = max(2, min(self.calibration_folds, int(np.bincount(positive).min())))
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.random_state)
        held_out = cross_val_predict(self._svc(), X, y, cv=cv, method="decision_function")
        self.slope_, self.intercept_ = platt(held_out, positive)
        if self.slope_ == 0:
            self.slope_, self.intercept_ = platt(self.svc_.decision_function(X), positive)
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Return the SVC's decision values (positive: class 1)."""
        return self.svc_.decision_function(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Return [P(class 0), P(class 1)] per row."""
        p = expit(self.slope_ * self.decision_function(X) + self.intercept_)
        return np.column_stack([1 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        """Return class 1 where its probability is above the decision threshold."""
        return self.classes_[(self.predict_proba(X)[:, 1] > DECISION_THRESHOLD).astype(int)]


def make_estimator(algorithm: str, params: dict[str, Any], seed: int, final: bool = False) -> Any:
    """Return the unfitted estimator of one candidate.

    `final`: the estimator as stored (SVC with probabilities, Coxnet with its baseline model
    for survival curves); otherwise the cheaper one the searches rank.
    """
    params = dict(params)
    if algorithm == "LogisticRegression":
        return LogisticRegression(**LOGISTIC[params.pop("penalty")], **params, random_state=seed)
    if algorithm == "SVC":
        return PlattSVC(**params, random_state=seed) if final else SVC(**params, random_state=seed)
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
