"""The preprocessing half of a model pipeline: one ColumnTransformer over the raw columns.

Radiomics columns: median imputation, then the scaler under search. Each clinical column: its
own cast, missing-value policy and encoding (API contract §6.7). Everything here is fitted
inside the pipeline, so on the training folds only. "Drop" is a row filter applied before
training (engine/inputs.py); inside the pipeline a Drop column behaves like "None", so a
patient with a missing value can still be predicted later.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    StandardScaler,
)

from shared.modeling.interface import ClinicalColumn

SCALERS = {"StandardScaler": StandardScaler, "MinMaxScaler": MinMaxScaler}
MISSING = "missing"  # the category of a missing categorical value under "None"/"Drop"


def _as_float(frame: pd.DataFrame) -> np.ndarray:
    """Cast raw values to float; text that is not a number becomes NaN."""
    return frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)


def _as_text(frame: pd.DataFrame) -> np.ndarray:
    """Cast raw values to text (object array), keeping missing values as NaN."""
    values = frame.astype(object).to_numpy()
    out = np.empty(values.shape, dtype=object)
    for index, value in np.ndenumerate(values):
        text = None if pd.isna(value) else str(value).strip()
        out[index] = text if text else np.nan
    return out


def _same_names(transformer: object, names: Sequence[str]) -> Sequence[str]:
    """Feature names of a cast step: the input names, unchanged."""
    return names


def _numeric_imputer(policy: str) -> SimpleImputer:
    """Return the imputer of a numeric column for its missing-value policy."""
    strategy = {"Mean": "mean", "Median": "median", "Mode": "most_frequent"}.get(policy)
    if strategy is not None:
        return SimpleImputer(strategy=strategy, keep_empty_features=True)
    # "None" / "Drop": fill with the training median and say it was missing (the indicator lets
    # every model treat missing values apart; it is only added if training had missing values).
    return SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)


def clinical_transformer(column: ClinicalColumn) -> Pipeline:
    """Return the cast + imputation + encoding steps of one clinical column."""
    numeric = column.feat_type == "Number"
    if column.encoding == "Normalization" and numeric:
        return make_pipeline(_cast(float), _numeric_imputer(column.missing_values), MinMaxScaler())
    if column.encoding == "None" and numeric:
        return make_pipeline(_cast(float), _numeric_imputer(column.missing_values))
    if column.encoding in ("Ordered Categories", "Normalization"):
        return _ordered(column, numeric)
    # One-Hot Encoding, and a categorical column without encoding (text cannot enter a model).
    return make_pipeline(_cast(str), _category_imputer(column.missing_values), _one_hot())


def _cast(kind: type) -> FunctionTransformer:
    """Return a stateless cast of the raw column to float or text."""
    func = _as_float if kind is float else _as_text
    return FunctionTransformer(func, feature_names_out=_same_names)


def _category_imputer(policy: str) -> SimpleImputer:
    """Mode: most frequent training category; otherwise missing is its own category."""
    if policy in ("Mode", "Median", "Mean"):
        return SimpleImputer(strategy="most_frequent", keep_empty_features=True)
    return SimpleImputer(strategy="constant", fill_value=MISSING, keep_empty_features=True)


def _one_hot() -> OneHotEncoder:
    """One column per training category, `<column>_<category>`; unseen categories give zeros."""
    return OneHotEncoder(handle_unknown="ignore", sparse_output=False)


def _ordered(column: ClinicalColumn, numeric: bool) -> Pipeline:
    """Ordinal codes in sorted category order (-1 for unseen), then scaled to [0, 1]."""
    steps: list[object] = [_cast(float if numeric else str)]
    if column.missing_values in ("Mode", "Median", "Mean"):
        steps.append(SimpleImputer(strategy="most_frequent", keep_empty_features=True))
    steps.append(
        OrdinalEncoder(
            handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=np.nan
        )
    )
    if column.missing_values not in ("Mode", "Median", "Mean"):
        steps.append(
            SimpleImputer(
                strategy="constant", fill_value=-1, add_indicator=True, keep_empty_features=True
            )
        )
    steps.append(MinMaxScaler())
    return make_pipeline(*steps)


def radiomics_transformer(scaler: str) -> Pipeline:
    """Median imputation then the scaler under search."""
    return make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True), SCALERS[scaler]()
    )


def column_transformer(
    radiomics: Sequence[str], clinical: Sequence[ClinicalColumn], scaler: str
) -> ColumnTransformer:
    """Return the ColumnTransformer of a candidate; output names follow §6.6."""
    parts: list[tuple[str, object, list[str]]] = []
    if radiomics:
        parts.append(("radiomics", radiomics_transformer(scaler), list(radiomics)))
    for index, column in enumerate(clinical):
        parts.append((f"clinical{index}", clinical_transformer(column), [column.name]))
    return ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=False)
