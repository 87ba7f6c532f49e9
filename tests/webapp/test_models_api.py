"""Trained models through the API: list (M1), train requests (M2), delete (M3), comparison (M4),
result views (M5-M13), export and predict's checks; all owner-scoped.

Models are stored rows here (what the training worker writes); training itself runs in
tests/e2e/test_training.py.
"""

from __future__ import annotations

import io
import json
import math
import zipfile

import numpy as np
import pytest
import sqlalchemy as sa

from shared.collections.models import FeatureCollection
from shared.modeling import artifacts
from shared.modeling.models import ModelArtifactChunk, TrainedModel, TrainingRun
from shared.modeling.results import roc_curve
from shared.modeling.schemas import not_a_number_as_text
from tests.support.factories import make_extraction, make_outcome

SEP = "\u2011"
FEATURE = f"CT{SEP}GTV{SEP}original_firstorder_Mean"
PATIENTS = [f"P{i:02d}" for i in range(1, 13)]
PIPELINE = b"fitted pipeline bytes " * 100


@pytest.fixture
def cohort(db):
    """Bob's extraction of 12 patients, an outcome (yes/no, two Undefined) and a collection."""
    extraction = make_extraction(db, "user-bob", "album-x", PATIENTS)
    labels = {p: ("yes" if i % 2 else "no") for i, p in enumerate(PATIENTS)}
    labels["P11"] = labels["P12"] = "Undefined"
    category = make_outcome(db, "user-bob", "album-x", labels)
    collection = FeatureCollection(
        user_id="user-bob",
        feature_extraction_id=extraction.id,
        name="Mean only",
        feature_ids=[FEATURE],
    )
    db.add(collection)
    db.commit()
    return extraction, category, collection


def train_body(extraction, category, **changes):
    """An M2 body as the frontend sends it (labels and studies are ignored)."""
    body = {
        "extraction-id": extraction.id,
        "collection-id": None,
        "label-category-id": category.id,
        "studies": [{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}],
        "album": {"album_id": "album-x", "name": "My Album"},
        "labels": [["P01", "1"]],
        "data-splitting-type": "fulldataset",
        "train-test-split-type": "automatic",
        "training-patients": PATIENTS,
        "test-patients": None,
        "modalities": ["CT"],
        "rois": ["GTV"],
    }
    body.update(changes)
    return body


def test_train_request_uses_stored_labels_and_answers_at_once(client, auth, db, cohort):
    extraction, category, collection = cohort
    first = client.post(
        "/models/album-x", json=train_body(extraction, category), headers=auth.headers()
    )
    assert first.status_code == 200, first.json
    assert list(first.json) == ["training-id", "n-steps"] and first.json["n-steps"] > 0
    second = client.post(
        "/models/album-x",
        json=train_body(extraction, category, **{"collection-id": collection.id}),
        headers=auth.headers(),
    )
    assert second.status_code == 200, second.json
    assert first.json["training-id"] != second.json["training-id"]
    assert second.json["training-id"].startswith(f"train_{extraction.id}_{collection.id}_")
    run = db.scalar(
        sa.select(TrainingRun).where(TrainingRun.training_id == first.json["training-id"])
    )
    assert run.status == "PENDING" and run.total_steps == first.json["n-steps"]
    # The two Undefined patients are left out; the request's `labels` played no part.
    assert run.parameters["left_out_patients"] == ["P11", "P12"]
    assert run.parameters["training_patients"] == PATIENTS[:10]
    assert sorted(set(run.parameters["training_patients"])) == run.parameters["training_patients"]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({p: str(i % 3) for i, p in enumerate(PATIENTS)}, "two classes"),
        ({p: ("1" if p == "P01" else "0") for p in PATIENTS}, "at least 3 for nested"),
    ],
)
def test_train_request_with_bad_labels_is_a_400(client, auth, db, labels, message):
    extraction = make_extraction(db, "user-bob", "album-y", PATIENTS)
    category = make_outcome(db, "user-bob", "album-y", labels)
    db.commit()
    body = train_body(extraction, category)
    response = client.post("/models/album-y", json=body, headers=auth.headers())
    assert response.status_code == 400
    assert message in response.json["error"]
    assert db.scalar(sa.select(sa.func.count()).select_from(TrainingRun)) == 0


def test_train_request_on_foreign_or_mismatched_rows(client, auth, db, cohort):
    extraction, category, _ = cohort
    foreign = make_extraction(db, "user-carol", "album-x", PATIENTS)
    later = make_extraction(db, "user-bob", "album-x", PATIENTS)
    elsewhere = FeatureCollection(
        user_id="user-bob", feature_extraction_id=later.id, name="Other", feature_ids=[FEATURE]
    )
    db.add(elsewhere)
    db.commit()
    cases = [
        (train_body(foreign, category), 404),  # carol's extraction
        (train_body(extraction, category), 400, "album-z"),  # not this album
        (train_body(extraction, category, **{"label-category-id": 10**6}), 404),
        (train_body(extraction, category, **{"collection-id": 10**6}), 404),
        (train_body(extraction, category, **{"collection-id": elsewhere.id}), 400),
        (train_body(extraction, category, **{"data-splitting-type": "traintest"}), 400),
        (train_body(extraction, category, **{"extraction-id": "x"}), 400),
    ]
    for body, status, *album in cases:
        path = f"/models/{album[0] if album else 'album-x'}"
        response = client.post(path, json=body, headers=auth.headers())
        assert response.status_code == status, (body, response.json)
        assert response.json["error"]
    other = client.post(
        "/models/album-x", json=train_body(extraction, category), headers=auth.headers("carol")
    )
    assert other.status_code == 404


# --- stored models -------------------------------------------------------------------------------


def classification_model(db, extraction, category, *, test_patients, seed=0, **fields):
    """A stored train/test classification model with predictions and its pipeline."""
    rng = np.random.default_rng(seed)
    truth = {p: i % 2 for i, p in enumerate(test_patients)}
    probability = {
        p: float(np.clip(0.3 + 0.4 * t + rng.normal(0, 0.2), 0, 1)) for p, t in truth.items()
    }
    metrics = {
        "auc": {"mean": 0.8, "inf_value": 0.6, "sup_value": 0.95, "order": 0},
        "precision": {
            "mean": float("nan"),
            "inf_value": float("nan"),
            "sup_value": 1.0,
            "order": 2,
        },
    }
    values = dict(
        user_id=extraction.user_id,
        album_id=extraction.album_id,
        name="My-Album_model_Classification_1764150000",
        kind="classification",
        best_algorithm="LogisticRegression",
        data_splitting_type="traintest",
        train_test_split_type="automatic",
        training_validation="Repeated Stratified K-Fold Cross-Validation (5 folds, 2 repetitions)",
        test_validation="Stratified percentile bootstrap (1000 repetitions)",
        best_data_normalization="StandardScaler",
        feature_names=[FEATURE],
        input_columns=[FEATURE, "Age"],
        training_patient_ids=["P01", "P02"],
        test_patient_ids=list(test_patients),
        training_metrics=metrics,
        test_metrics=metrics,
        test_predictions={p: {"prediction": int(probability[p] > 0.5)} for p in truth},
        test_predictions_probabilities={
            p: {"probabilities": [1 - probability[p], probability[p]]} for p in truth
        },
        test_outcomes=truth,
        test_bootstrap_values={"auc": [0.7, float("nan"), 0.9], "accuracy": [0.6, 0.7, 0.8]},
        test_scores_values=[{"auc": 0.7, "accuracy": 0.6}, {"auc": 0.8, "accuracy": float("nan")}],
        test_feature_importance=[
            {"feature_name": "Age", "importance_value": 0.01},
            {"feature_name": FEATURE, "importance_value": 0.2},
        ],
        hyperparameters={"C": 0.1, "penalty": "l2"},
        cv_scores={"auc": [0.7, 0.8, 0.75, 0.9]},
        cv_signature={
            "scheme": "nested",
            "n_splits": 2,
            "n_repeats": 2,
            "seed": 42,
            "patients": ["P01", "P02", "P03", "P04"],
            "folds": "f" * 64,
            "labels": "l" * 64,
        },
        library_versions={"scikit-learn": "1.9.1"},
        left_out_patients=["P11", "P12"],
        dropped_patients=[],
        feature_extraction_id=extraction.id,
        label_category_id=category.id,
    )
    values.update(fields)
    for key in ("training_metrics", "test_metrics", "test_bootstrap_values", "test_scores_values"):
        values[key] = not_a_number_as_text(values[key])  # as the worker stores them
    model = TrainedModel(**values)
    db.add(model)
    db.flush()
    artifacts.attach(db, model, PIPELINE)
    db.commit()
    return model


def survival_model(db, extraction, category, *, test_patients):
    """A stored IPCRidge survival model with risk scores of some test patients."""
    return classification_model(
        db,
        extraction,
        category,
        test_patients=test_patients,
        kind="survival",
        name="My-Album_model_Survival_1",
        best_algorithm="IPCRidge",
        test_outcomes={
            p: {"time": 10.0 + i, "event": bool(i % 2)} for i, p in enumerate(test_patients)
        },
        test_predictions={p: {"risk_score": float(-i)} for i, p in enumerate(test_patients)},
        test_predictions_probabilities=None,
    )


@pytest.fixture
def models(db, cohort):
    """Two models on the same test patients, one on others, one survival model."""
    extraction, category, _ = cohort
    same = PATIENTS[:10]
    first = classification_model(db, extraction, category, test_patients=same, seed=1)
    second = classification_model(db, extraction, category, test_patients=same, seed=2)
    other = classification_model(
        db, extraction, category, test_patients=PATIENTS[2:8], seed=3, cv_signature=None
    )
    survival = survival_model(db, extraction, category, test_patients=same)
    return first, second, other, survival


def test_models_of_an_album_are_formatted_for_the_frontend(client, auth, models):
    first, *_ = models
    response = client.get("/models/album-x", headers=auth.headers())
    assert response.status_code == 200
    body = response.json[0]
    assert list(body)[:4] == ["id", "created_at", "updated_at", "name"]
    assert list(body)[-4:] == ["type", "label_category", "training-metrics", "test-metrics"]
    assert (body["id"], body["type"], body["label_category"]) == (
        first.id,
        "Classification",
        "Response",
    )
    assert body["test-metrics"] == body["test_metrics"]
    assert body["test_metrics"]["precision"]["mean"] == "N/A"
    assert body["model_path"] == f"db://model/{first.id}"
    assert body["patients_left_out"] == 2
    assert body["train_predictions"] is None and body["feature_collection_id"] is None
    assert client.get("/models/album-x", headers=auth.headers("carol")).json == []


def test_delete_removes_the_row_and_its_pipeline_owner_only(client, auth, db, models):
    first, *_ = models

    def chunks() -> int:
        query = sa.select(sa.func.count()).where(ModelArtifactChunk.model_id == first.id)
        return db.scalar(query)

    assert chunks() == 1
    foreign = client.delete(f"/models/{first.id}", headers=auth.headers("carol"))
    assert (foreign.status_code, foreign.json) == (404, {"error": "Model not found"})
    assert chunks() == 1
    deleted = client.delete(f"/models/{first.id}", headers=auth.headers())
    assert deleted.status_code == 200 and deleted.json["id"] == first.id
    assert chunks() == 0
    assert client.delete(f"/models/{first.id}", headers=auth.headers()).status_code == 404


def test_every_model_route_is_owner_scoped(client, auth, models):
    first, *_ = models
    ids = {"model_ids": [first.id]}
    calls = [
        ("post", "/models/compare-data", ids),
        ("post", f"/models/{first.id}/plot-test-predictions", ids),
        ("post", f"/models/{first.id}/plot-train-predictions", ids),
        ("get", f"/models/{first.id}/roc-curve-test-data", None),
        ("post", f"/models/{first.id}/roc-curve-test-data", ids),
        ("get", f"/models/{first.id}/roc-curve-train-data", None),
        ("get", f"/models/{first.id}/download-test-bootstrap-values", None),
        ("get", f"/models/{first.id}/download-test-scores-values", None),
        ("get", f"/models/{first.id}/download-feature-importances", None),
        ("get", f"/models/{first.id}/feature-importances", None),
        ("get", f"/models/{first.id}/test-scores-values", None),
        ("get", f"/models/{first.id}/export", None),
        ("post", f"/models/{first.id}/predict", {"extraction-id": first.feature_extraction_id}),
        ("delete", f"/models/{first.id}", None),
    ]
    for method, path, body in calls:
        foreign = getattr(client, method)(path, json=body, headers=auth.headers("carol"))
        assert foreign.status_code == 404, (path, foreign.json)
        assert foreign.json == {"error": "Model not found"}
        if method != "delete" and not path.endswith("/predict"):
            own = getattr(client, method)(path, json=body, headers=auth.headers())
            assert own.status_code == 200, (path, own.json)


def test_comparison_uses_valid_paired_tests_or_says_why(client, auth, models):
    first, second, other, survival = models
    ids = [first.id, second.id, other.id, survival.id]
    response = client.post("/models/compare-data", json={"model_ids": ids}, headers=auth.headers())
    assert response.status_code == 200, response.json
    body = response.json
    assert body["model_ids"] == ids and body["p_values"] == body["comparison_matrix"]
    matrix = body["p_values"]
    assert all(matrix[f"model_{i}"][f"model_{i}"] == 1.0 for i in ids)
    paired = matrix[f"model_{first.id}"][f"model_{second.id}"]
    assert isinstance(paired, float) and 0.0 < paired <= 1.0  # same test patients: bootstrap
    assert paired == matrix[f"model_{second.id}"][f"model_{first.id}"]
    assert "not comparable" in matrix[f"model_{first.id}"][f"model_{other.id}"]
    assert "survival" in matrix[f"model_{first.id}"][f"model_{survival.id}"]
    # Same training patients and folds, no shared test set: the corrected t-test.
    cv_only = client.post(
        "/models/compare-data", json={"model_ids": f"{first.id},{first.id}"}, headers=auth.headers()
    )
    assert cv_only.status_code == 200
    bad = client.post("/models/compare-data", json={"model_ids": ["x"]}, headers=auth.headers())
    assert bad.status_code == 400


def _holm_by_hand(raw: dict[tuple[int, int], float]) -> dict[tuple[int, int], float]:
    """Holm's step-down adjustment, written out for the test."""
    ordered = sorted(raw, key=raw.get)
    out, running = {}, 0.0
    for rank, pair in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - rank) * raw[pair]))
        out[pair] = running
    return out


def test_comparison_adds_holm_adjusted_p_values(client, auth, db, cohort, models):
    """Issue 15 §7: every pair is a test; beside the raw p-values, Holm's adjustment."""
    extraction, category, _ = cohort
    first, second, _, _ = models
    third = classification_model(db, extraction, category, test_patients=PATIENTS[:10], seed=4)
    ids = [first.id, second.id, third.id]
    body = client.post("/models/compare-data", json={"model_ids": ids}, headers=auth.headers()).json
    raw = {
        (a, b): body["p_values"][f"model_{a}"][f"model_{b}"]
        for i, a in enumerate(ids)
        for b in ids[i + 1 :]
    }
    assert all(isinstance(v, float) for v in raw.values())
    expected = _holm_by_hand(raw)
    for (a, b), value in expected.items():
        assert body["p_values_holm"][f"model_{a}"][f"model_{b}"] == pytest.approx(value)
        assert body["p_values_holm"][f"model_{b}"][f"model_{a}"] == pytest.approx(value)
    assert body["p_values_holm"][f"model_{first.id}"][f"model_{first.id}"] == 1.0
    assert body["comparison_matrix"] == body["p_values"]  # the frontend's fields are raw


def test_cv_only_comparison_needs_the_same_folds_and_labels(client, auth, db, cohort):
    """No shared test set: the corrected t-test only when the fold and label hashes agree."""
    extraction, category, _ = cohort
    full = {"data_splitting_type": "fulldataset", "test_outcomes": None, "test_predictions": None}

    def cv_model(seed: int, **signature: str) -> TrainedModel:
        base = {
            "scheme": "nested",
            "n_splits": 2,
            "n_repeats": 2,
            "seed": 42,
            "patients": ["P01", "P02", "P03", "P04"],
        }
        scores = list(np.random.default_rng(seed).uniform(0.6, 0.9, 4))
        return classification_model(
            db,
            extraction,
            category,
            test_patients=[],
            seed=seed,
            cv_scores={"auc": scores},
            cv_signature={**base, **signature},
            **full,
        )

    same = {"folds": "a" * 64, "labels": "b" * 64}
    a, b = cv_model(1, **same), cv_model(2, **same)
    other_folds = cv_model(3, folds="c" * 64, labels="b" * 64)
    old_style = cv_model(4)  # stored before the signature held the folds themselves
    ids = [a.id, b.id, other_folds.id, old_style.id]
    matrix = client.post(
        "/models/compare-data", json={"model_ids": ids}, headers=auth.headers()
    ).json["p_values"]
    assert isinstance(matrix[f"model_{a.id}"][f"model_{b.id}"], float)
    assert "not comparable" in matrix[f"model_{a.id}"][f"model_{other_folds.id}"]
    assert "not comparable" in matrix[f"model_{a.id}"][f"model_{old_style.id}"]


def test_prediction_plots_and_roc(client, auth, models):
    first, _, _, survival = models
    ids = {"model_ids": [first.id, survival.id]}
    plots = client.post(
        f"/models/{first.id}/plot-test-predictions", json=ids, headers=auth.headers()
    )
    assert plots.status_code == 200
    classification, surv = plots.json
    assert "model_type" not in classification and surv["model_type"] == "survival"
    assert classification["auc"] == 0.8 and classification["data_type"] == "test"
    patient = classification["patients"][0]
    assert set(patient) == {"patient_id", "probability", "prediction", "ground_truth"}
    assert patient["ground_truth"] == first.test_outcomes[patient["patient_id"]]
    assert set(surv["patients"][0]) == {"patient_id", "risk_score", "time", "event"}

    roc = client.post(f"/models/{first.id}/roc-curve-test-data", json=ids, headers=auth.headers())
    curve, placeholder = roc.json
    assert curve["n_samples"] == 10 and curve["n_positive"] == 5 and curve["n_negative"] == 5
    assert curve["fpr"][0] == 0.0 and curve["fpr"][-1] == 1.0 and curve["tpr"][-1] == 1.0
    assert curve["thresholds"][0] == 1.0 and curve["auc"] == 0.8
    assert placeholder["error"] and placeholder["fpr"] == [0.0, 1.0] and placeholder["auc"] == 0.0
    train = client.get(f"/models/{first.id}/roc-curve-train-data", headers=auth.headers())
    assert train.json[0]["error"]
    many = {"model_ids": [first.id] * 11}
    too_many = client.post(
        f"/models/{first.id}/roc-curve-test-data", json=many, headers=auth.headers()
    )
    assert too_many.status_code == 400


def test_roc_curve_matches_a_hand_computed_one():
    truth = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.9])
    fpr, tpr, thresholds = roc_curve(truth, scores)
    assert thresholds == [1.0, 0.9, 0.8, 0.4, 0.35, 0.1]
    assert tpr == [0.0, 1 / 3, 2 / 3, 2 / 3, 1.0, 1.0]
    assert fpr == [0.0, 0.0, 0.0, 2 / 3, 2 / 3, 1.0]
    assert math.isclose(float(np.trapezoid(tpr, fpr)), 7 / 9)


def test_csv_downloads_have_the_contract_layout(client, auth, models):
    first, *_ = models
    headers = auth.headers()
    suffix = f"My_Album_LogisticRegression_StandardScaler_{first.id}"

    boot = client.get(f"/models/{first.id}/download-test-bootstrap-values", headers=headers)
    assert (
        boot.headers["Content-Disposition"] == f"attachment; filename=test_bootstrap_{suffix}.csv"
    )
    assert boot.mimetype == "text/csv"
    # Column k is resample k in every row: an undefined value is an empty cell in its place.
    assert boot.data.decode() == (
        "Metric,Repetition 1,Repetition 2,Repetition 3\r\nauc,0.7,,0.9\r\naccuracy,0.6,0.7,0.8\r\n"
    )
    scores = client.get(f"/models/{first.id}/download-test-scores-values", headers=headers)
    assert scores.headers["Content-Disposition"] == f"attachment; filename=test_scores_{suffix}.csv"
    assert scores.data.decode() == "Metric,Repetition 1,Repetition 2\nauc,0.7,0.8\naccuracy,0.6,\n"
    importances = client.get(f"/models/{first.id}/download-feature-importances", headers=headers)
    assert importances.headers["Content-Disposition"] == (
        f"attachment; filename=test_feature_importances_{suffix}.csv"
    )
    assert importances.data.decode() == (
        f"feature_name,feature_importance_value\nAge,0.01\n{FEATURE},0.2\n"
    )


def test_csv_download_without_importances_and_missing_scores(client, auth, db, cohort):
    extraction, category, _ = cohort
    model = classification_model(
        db,
        extraction,
        category,
        test_patients=PATIENTS[:4],
        test_feature_importance=None,
        test_scores_values=None,
        test_bootstrap_values=None,
    )
    headers = auth.headers()
    importances = client.get(f"/models/{model.id}/download-feature-importances", headers=headers)
    assert importances.data.decode() == (
        "index,0\nfeature_importance_results,"
        "Feature importance not saved for this model - please retrain.\n"
    )
    m12 = client.get(f"/models/{model.id}/feature-importances", headers=headers)
    assert m12.status_code == 404 and "please retrain" in m12.json["error"]
    for path in (
        "download-test-scores-values",
        "download-test-bootstrap-values",
        "test-scores-values",
    ):
        assert client.get(f"/models/{model.id}/{path}", headers=headers).status_code == 404


def test_importances_and_scores_views(client, auth, models):
    first, *_ = models
    m12 = client.get(f"/models/{first.id}/feature-importances", headers=auth.headers()).json
    assert m12["model_id"] == str(first.id) and m12["algorithm"] == "LogisticRegression"
    assert [f["feature_name"] for f in m12["feature_importances"]] == [FEATURE, "Age"]
    assert m12["computed_on"].startswith("Permutation importance on the test set (10 patients)")
    m13 = client.get(f"/models/{first.id}/test-scores-values", headers=auth.headers()).json
    assert m13["normalization"] == "StandardScaler"
    assert m13["test_scores"] == [{"auc": 0.7, "accuracy": 0.6}, {"auc": 0.8, "accuracy": "N/A"}]


def test_export_is_the_pipeline_and_a_model_card(client, auth, models):
    first, *_ = models
    response = client.get(f"/models/{first.id}/export", headers=auth.headers())
    assert response.status_code == 200 and response.mimetype == "application/zip"
    assert response.headers["Content-Disposition"].startswith("attachment; filename=model_")
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    assert sorted(archive.namelist()) == ["model.joblib", "model_card.json"]
    assert archive.read("model.joblib") == PIPELINE
    card = json.loads(archive.read("model_card.json"))
    assert card["algorithm"] == "LogisticRegression" and card["hyperparameters"]["C"] == 0.1
    assert card["patients"] == {
        "training_count": 2,
        "test_count": 10,
        "left_out_missing_label": 2,
        "dropped_by_clinical_policy": 0,
        "test_left_out_by_clinical_policy": 0,
    }
    assert card["metrics"]["test"]["auc"]["inf_value"] == 0.6
    assert card["metrics_meaning"]["training"].startswith("nested cross-validation")
    assert card["feature_importance"].startswith("Permutation importance on the test set")
    assert card["library_versions"] == {"scikit-learn": "1.9.1"}
    assert card["preprocessing"]["clinical_columns"] == ["Age"]


def test_predict_names_the_missing_features(client, auth, db, models):
    first, *_ = models
    target = make_extraction(db, "user-bob", "album-new", ["Q1", "Q2"])
    db.commit()
    response = client.post(
        f"/models/{first.id}/predict", json={"extraction-id": target.id}, headers=auth.headers()
    )
    assert response.status_code == 400
    assert "Age" in response.json["error"] and response.json["details"] == ["Age"]
    foreign = make_extraction(db, "user-carol", "album-new", ["Q1"])
    db.commit()
    response = client.post(
        f"/models/{first.id}/predict", json={"extraction-id": foreign.id}, headers=auth.headers()
    )
    assert response.status_code == 404


def test_metrics_without_a_value_read_as_text_not_bare_nan():
    metrics = {"auc": {"mean": float("nan"), "inf_value": float("-inf"), "order": 0}, "x": [1.5]}
    assert not_a_number_as_text(metrics) == {
        "auc": {"mean": "N/A", "inf_value": "N/A", "order": 0},
        "x": [1.5],
    }


def test_a_classification_model_of_a_survival_named_album_is_scored_as_classification(
    client, auth, db, cohort
):
    """The kind decides, not the name (which embeds the album's name)."""
    extraction, category, _ = cohort
    model = classification_model(
        db,
        extraction,
        category,
        test_patients=PATIENTS[:10],
        name="Survival study_model_Classification_1764150000",
    )
    roc = client.get(f"/models/{model.id}/roc-curve-test-data", headers=auth.headers()).json
    assert "error" not in roc[0] and len(roc[0]["fpr"]) > 2
    plot = client.post(f"/models/{model.id}/plot-test-predictions", headers=auth.headers()).json
    assert "auc" in plot[0] and "model_type" not in plot[0]
    assert len(plot[0]["patients"]) == 10 and "probability" in plot[0]["patients"][0]


def test_unknown_algorithms_are_a_400_naming_them_before_anything_is_queued(
    client, auth, db, cohort
):
    extraction, category, _ = cohort
    body = train_body(extraction, category, algorithms=["SVC", "XGBoost", "CoxPHSurvivalAnalysis"])
    response = client.post("/models/album-x", json=body, headers=auth.headers())
    assert response.status_code == 400 and response.is_json
    assert response.json["error"] == (
        "Unknown classification algorithm(s): CoxPHSurvivalAnalysis, XGBoost"
    )
    assert db.scalar(sa.select(sa.func.count()).select_from(TrainingRun)) == 0
    known = train_body(extraction, category, algorithms=["SVC"])
    assert client.post("/models/album-x", json=known, headers=auth.headers()).status_code == 200
