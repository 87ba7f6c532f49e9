"""What the result views read from a stored model: plots (M5/M6), ROC (M7/M8), CSVs (M9-M11),
importances and scores (M12/M13), and the model card of the export.

numpy only (no scikit-learn in the web process). Ground truth is the model's own stored test
outcomes (what its metrics were computed on), not the outcome's current labels.
"""

from __future__ import annotations

import csv
import io
import json
import math
import zipfile
from typing import Any

import numpy as np
import sqlalchemy.orm as so

from shared.collections.models import FeatureCollection
from shared.extractions.models import FeatureExtraction
from shared.features.table import attachment_filename
from shared.labels.models import LabelCategory
from shared.modeling import artifacts
from shared.modeling.models import TrainedModel
from shared.modeling.schemas import not_a_number_as_text

MAX_ROC_MODELS = 10
NO_IMPORTANCE = "Feature importance not saved for this model - please retrain."
NO_TRAIN_PREDICTIONS = "Train predictions are not stored for this model"


def is_survival(model: TrainedModel) -> bool:
    """Tell a survival model from a classification one (by its kind, never by its name)."""
    return model.kind == "survival"


def _number(value: Any) -> Any:
    """Return a JSON-safe number: NaN and infinities become "N/A"."""
    return not_a_number_as_text(float(value)) if isinstance(value, (int, float)) else value


def as_float(value: Any) -> float:
    """Return a stored number as float; "N/A", None and text are NaN."""
    return float(value) if isinstance(value, (int, float)) else math.nan


def _metric_mean(model: TrainedModel, metric: str) -> float:
    """Return a stored test metric's mean, 0 when absent or not a number."""
    value = ((model.test_metrics or {}).get(metric) or {}).get("mean")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0


def _positive_probability(model: TrainedModel, patient: str) -> float | None:
    """Return P(class 1) of a test patient, if stored."""
    item = (model.test_predictions_probabilities or {}).get(patient) or {}
    probabilities = item.get("probabilities") or []
    value = as_float(probabilities[-1]) if probabilities else math.nan
    return value if math.isfinite(value) else None


# --- M5 / M6 ------------------------------------------------------------------------------------


def prediction_plot(model: TrainedModel, data_type: str) -> dict[str, Any]:
    """Return one model's prediction-plot item (§6.8); train predictions are not stored."""
    base = {"model_id": model.id, "model_name": f"Model {model.id}"}
    truths = model.test_outcomes or {} if data_type == "test" else {}
    predictions = model.test_predictions or {} if data_type == "test" else {}
    metrics = not_a_number_as_text(model.test_metrics) if data_type == "test" else None
    patients: list[dict[str, Any]] = []
    if is_survival(model):
        for patient, truth in truths.items():
            risk = (predictions.get(patient) or {}).get("risk_score")
            if risk is None or not isinstance(truth, dict):
                continue
            patients.append(
                {
                    "patient_id": patient,
                    "risk_score": _number(risk),
                    "time": float(truth["time"]),
                    "event": int(bool(truth["event"])),
                }
            )
        item = {**base, "patients": patients, "c_index": _metric_mean(model, "c-index")}
        item.update(metrics=metrics, data_type=data_type, model_type="survival")
        return item
    for patient, truth in truths.items():
        probability = _positive_probability(model, patient)
        prediction = (predictions.get(patient) or {}).get("prediction")
        if probability is None or prediction is None:
            continue
        patients.append(
            {
                "patient_id": patient,
                "probability": probability,
                "prediction": int(prediction),
                "ground_truth": int(truth),
            }
        )
    item = {**base, "patients": patients, "auc": _metric_mean(model, "auc")}
    item.update(metrics=metrics, data_type=data_type)
    if data_type != "test":
        item["error"] = NO_TRAIN_PREDICTIONS
    return item


# --- M7 / M8 ------------------------------------------------------------------------------------


def roc_curve(
    truth: np.ndarray, scores: np.ndarray
) -> tuple[list[float], list[float], list[float]]:
    """Return (fpr, tpr, thresholds) at every distinct score, highest first, from (0, 0).

    The first threshold (above every score) is reported as 1.0, as the contract maps +inf.
    """
    order = np.argsort(-scores, kind="mergesort")
    scores, truth = scores[order], truth[order].astype(np.float64)
    last_of_value = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tps = np.cumsum(truth)[last_of_value]
    fps = (last_of_value + 1) - tps
    positives, negatives = truth.sum(), truth.size - truth.sum()
    tpr = np.r_[0.0, tps / positives] if positives else np.zeros(tps.size + 1)
    fpr = np.r_[0.0, fps / negatives] if negatives else np.zeros(fps.size + 1)
    thresholds = np.r_[1.0, scores[last_of_value]]
    thresholds = np.where(np.isfinite(thresholds), thresholds, np.where(thresholds > 0, 1.0, 0.0))
    return fpr.tolist(), tpr.tolist(), thresholds.tolist()


def roc_placeholder(model_id: int, name: str, error: str) -> dict[str, Any]:
    """Return the contract's placeholder of a model whose curve cannot be drawn."""
    return {
        "model_id": model_id,
        "model_name": name,
        "error": error,
        "fpr": [0.0, 1.0],
        "tpr": [0.0, 1.0],
        "thresholds": [1.0, 0.0],
        "auc": 0.0,
        "n_samples": 0,
    }


def roc_data(model: TrainedModel, data_type: str) -> dict[str, Any]:
    """Return a model's ROC item, or the placeholder with the reason."""
    name = f"Model {model.id}"
    if data_type != "test":
        return roc_placeholder(model.id, name, NO_TRAIN_PREDICTIONS)
    if is_survival(model):
        return roc_placeholder(model.id, name, "ROC curves apply to classification models only")
    pairs = [
        (int(truth), _positive_probability(model, patient))
        for patient, truth in (model.test_outcomes or {}).items()
    ]
    pairs = [(t, p) for t, p in pairs if p is not None]
    if not pairs:
        return roc_placeholder(model.id, name, "This model has no test predictions")
    truth = np.array([t for t, _ in pairs])
    scores = np.array([p for _, p in pairs], dtype=np.float64)
    n_positive = int(truth.sum())
    if n_positive in (0, truth.size):
        return roc_placeholder(model.id, name, "The test set has a single class")
    fpr, tpr, thresholds = roc_curve(truth, scores)
    stored = ((model.test_metrics or {}).get("auc") or {}).get("mean")
    auc = (
        float(stored)
        if isinstance(stored, (int, float)) and 0.0 <= stored <= 1.0
        else float(np.trapezoid(tpr, fpr))
    )
    return {
        "model_id": model.id,
        "model_name": name,
        "fpr": fpr,
        "tpr": tpr,
        "thresholds": thresholds,
        "auc": auc,
        "n_samples": int(truth.size),
        "n_positive": n_positive,
        "n_negative": int(truth.size - n_positive),
        "data_type": data_type,
    }


# --- M9-M11 -------------------------------------------------------------------------------------


def download_suffix(session: so.Session, model: TrainedModel) -> str:
    """Return `<album name>[_<collection name>]_<algorithm>_<normalization>_<model id>`.

    The album name is the one stored with the extraction (from the image source at extraction
    time), so no call to Kheops with the user's token is needed; the album id when unknown.
    """
    extraction = session.get(FeatureExtraction, model.feature_extraction_id)
    parts = [(extraction.album_name if extraction else None) or model.album_id]
    if model.feature_collection_id is not None:
        collection = session.get(FeatureCollection, model.feature_collection_id)
        if collection is not None:
            parts.append(collection.name)
    parts += [model.best_algorithm, model.best_data_normalization or "None", str(model.id)]
    return "_".join(parts).replace(" ", "_")


def csv_filename(prefix: str, suffix: str) -> str:
    """Return a safe attachment name `<prefix>_<suffix>.csv`."""
    return attachment_filename(f"{prefix}_{suffix}.csv")


def _cell(value: Any) -> str:
    """Format a CSV cell of a resample's metric; empty where it is undefined (NaN, "N/A").

    Column k is resample k in every row, so an undefined value keeps its place, empty (as
    pandas writes NaN).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ""
    return str(value) if math.isfinite(value) else ""


def bootstrap_values_csv(values: dict[str, list[float]]) -> str:
    """M9: `Metric,Repetition 1..N`, one row per metric (csv.writer, CRLF)."""
    n = len(next(iter(values.values()), []))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["Metric", *(f"Repetition {i}" for i in range(1, n + 1))])
    for metric, row in values.items():
        writer.writerow([metric, *(_cell(v) for v in row)])
    return out.getvalue()


def scores_values_csv(scores: list[dict[str, float]]) -> str:
    """M10: `Metric,Repetition 1..N`, one row per metric, one column per resample (LF)."""
    metrics = list(scores[0]) if scores else []
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["Metric", *(f"Repetition {i}" for i in range(1, len(scores) + 1))])
    for metric in metrics:
        writer.writerow([metric, *(_cell(score.get(metric, math.nan)) for score in scores)])
    return out.getvalue()


def importances_csv(importances: list[dict[str, Any]] | None) -> str:
    """M11: `feature_name,feature_importance_value`, or the reference's 'not saved' table."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if not importances:
        writer.writerow(["index", "0"])
        writer.writerow(["feature_importance_results", NO_IMPORTANCE])
        return out.getvalue()
    writer.writerow(["feature_name", "feature_importance_value"])
    for item in importances:
        # A stored "N/A" (undefined importance) stays "N/A"; float("N/A") would raise.
        writer.writerow([item["feature_name"], _cell(item["importance_value"]) or "N/A"])
    return out.getvalue()


# --- export -------------------------------------------------------------------------------------


def model_card(model: TrainedModel, *, label_category: str, label_type: str) -> dict[str, Any]:
    """Return the JSON model card of the export: everything needed to judge and reuse it."""
    clinical = [c for c in (model.input_columns or []) if "\u2011" not in c]
    return not_a_number_as_text(
        {
            "model_id": model.id,
            "name": model.name,
            "created_at": model.created_at.isoformat() if model.created_at else None,
            "outcome": {
                "name": label_category,
                "type": label_type,
                "positive_class": model.positive_class,
            },
            "algorithm": model.best_algorithm,
            "hyperparameters": model.hyperparameters or {},
            "preprocessing": {
                "scaler": model.best_data_normalization,
                "radiomics_imputation": "fitted inside the pipeline on training folds only",
                "clinical_columns": clinical,
            },
            "input_columns": model.input_columns or [],
            "features": model.feature_names,
            "validation": {
                "training": model.training_validation,
                "test": model.test_validation,
                "data_splitting_type": model.data_splitting_type,
                "train_test_split_type": model.train_test_split_type,
            },
            "metrics": {
                "training": model.training_metrics,
                "test": model.test_metrics,
                "selection_cv": model.selection_cv_metrics,
            },
            "metrics_meaning": {
                "training": "nested cross-validation estimate (the model's reported performance)",
                "test": "final model on the held-out test patients, bootstrap CIs",
                "selection_cv": "best candidate's mean over the final search's folds: "
                "optimistic (the best of the grid), for reference only",
            },
            "evaluation": model.evaluation or {},
            "feature_importance": (
                importance_basis(model) if model.test_feature_importance else None
            ),
            "patients": {
                "training_count": len(model.training_patient_ids or []),
                "test_count": len(model.test_patient_ids or []),
                "left_out_missing_label": len(model.left_out_patients or []),
                "dropped_by_clinical_policy": len(model.dropped_patients or []),
                "test_left_out_by_clinical_policy": _test_left_out(model),
            },
            "library_versions": model.library_versions or {},
            "artifact": {
                "file": "model.joblib",
                "sha256": model.artifact_sha256,
                "bytes": model.artifact_size,
                "format": "joblib (compressed) of a scikit-learn Pipeline; load with joblib.load",
            },
        }
    )


def importance_basis(model: TrainedModel) -> str:
    """Say what a model's permutation importances were computed on (M12, model card)."""
    about = (model.evaluation or {}).get("feature_importance") or {}
    patients = about.get("patients", len(model.test_patient_ids or []))
    text = f"Permutation importance on the test set ({patients} patients)"
    if about:
        text += (
            f", {about.get('repeats')} shuffles per input column; mean drop in "
            f"{about.get('metric')}"
        )
    return text


def _test_left_out(model: TrainedModel) -> int:
    """Return how many test patients a Drop policy left out of the test evaluation."""
    test = (model.evaluation or {}).get("test") or {}
    return int((test.get("left_out") or {}).get("count") or 0)


def card_json(card: dict[str, Any]) -> str:
    """Serialise a model card (indented, keys in order)."""
    return json.dumps(card, indent=2, allow_nan=False)


def export_archive(session: so.Session, model: TrainedModel) -> tuple[bytes, str]:
    """Return the export ZIP of a model (its pipeline and JSON model card) and its file name."""
    category = session.get(LabelCategory, model.label_category_id)
    card = model_card(
        model,
        label_category=category.name if category else "",
        label_type=category.label_type if category else "",
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model.joblib", artifacts.read(session, model))
        archive.writestr("model_card.json", card_json(card))
    return buffer.getvalue(), f"model_{download_suffix(session, model)}.zip"
