"""Trained models: the list (M1) and delete (M3) as the frontend reads them."""

from __future__ import annotations

import pytest

from shared.labels.models import LabelCategory
from shared.modeling.models import TrainedModel
from shared.modeling.schemas import not_a_number_as_text
from tests.webapp.test_feature_downloads import extraction  # noqa: F401 (fixture)


@pytest.fixture
def model(db, settings, extraction):  # noqa: F811
    """A classification model of bob's, its pipeline saved under the data folder."""
    category = LabelCategory(
        user_id="user-bob", album_id="album-x", label_type="Classification", name="Response"
    )
    db.add(category)
    db.flush()
    artifact = settings.data_dir / "models" / f"model-{category.id}.joblib"
    artifact.parent.mkdir(parents=True, exist_ok=True)
    artifact.write_bytes(b"pipeline")
    row = TrainedModel(
        user_id="user-bob",
        album_id="album-x",
        name="My-Album_model_Classification_1764150000",
        best_algorithm="LogisticRegression",
        data_splitting_type="traintest",
        train_test_split_type="automatic",
        training_validation="Repeated Stratified K-Fold Cross-Validation (5 folds, 10 repetitions)",
        test_validation="Bootstrap (100 repetitions)",
        best_data_normalization="StandardScaler",
        feature_names=["CT\u2011GTV\u2011original_firstorder_Mean"],
        training_patient_ids=["P1", "P2"],
        test_patient_ids=["P3"],
        artifact_path=str(artifact.relative_to(settings.data_dir)),
        training_metrics={"auc": {"mean": 0.81, "inf_value": 0.7, "sup_value": 0.9, "order": 0}},
        test_metrics={"auc": {"mean": 0.75, "inf_value": 0.6, "sup_value": 0.88, "order": 0}},
        test_predictions={"P3": {"prediction": 1}},
        test_predictions_probabilities={"P3": {"probabilities": [0.2, 0.8]}},
        test_bootstrap_values={"auc": [0.7, 0.8]},
        test_scores_values=[{"auc": 0.7}],
        feature_extraction_id=extraction.id,
        label_category_id=category.id,
    )
    db.add(row)
    db.commit()
    return row, artifact


def test_models_of_an_album_are_formatted_for_the_frontend(client, auth, model):
    row, _ = model
    response = client.get("/models/album-x", headers=auth.headers())
    assert response.status_code == 200
    (body,) = response.json
    assert list(body)[:4] == ["id", "created_at", "updated_at", "name"]
    assert list(body)[-4:] == ["type", "label_category", "training-metrics", "test-metrics"]
    assert (body["id"], body["type"], body["label_category"]) == (
        row.id,
        "Classification",
        "Response",
    )
    assert (
        body["test-metrics"] == body["test_metrics"] and body["test_metrics"]["auc"]["mean"] == 0.75
    )
    assert body["train_predictions"] is None and body["feature_collection_id"] is None
    assert client.get("/models/album-x", headers=auth.headers("carol")).json == []
    assert client.get("/models/other-album", headers=auth.headers()).json == []


def test_delete_removes_the_row_and_its_pipeline_owner_only(client, auth, model):
    row, artifact = model
    foreign = client.delete(f"/models/{row.id}", headers=auth.headers("carol"))
    assert (foreign.status_code, foreign.json) == (404, {"error": "Model not found"})
    assert artifact.exists()
    deleted = client.delete(f"/models/{row.id}", headers=auth.headers())
    assert deleted.status_code == 200 and deleted.json["id"] == row.id
    assert not artifact.exists()
    assert client.get("/models/album-x", headers=auth.headers()).json == []
    assert client.delete(f"/models/{row.id}", headers=auth.headers()).status_code == 404


def test_metrics_without_a_value_read_as_text_not_bare_nan():
    metrics = {"auc": {"mean": float("nan"), "inf_value": float("-inf"), "order": 0}, "x": [1.5]}
    assert not_a_number_as_text(metrics) == {
        "auc": {"mean": "N/A", "inf_value": "N/A", "order": 0},
        "x": [1.5],
    }
