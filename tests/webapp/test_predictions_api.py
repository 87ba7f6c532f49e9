"""Predictions through the API (issue #15 §8): POST predict answers 202 at once with the
prediction's id and where to read it, queues one message carrying the row id only, and never
waits on a worker; GET and the model's list are owner-only; deleting the model or the
extraction deletes its predictions.

No worker runs here: the job itself runs in tests/e2e/test_training.py.
"""

from __future__ import annotations

import json
import time

import pytest
import redis
import sqlalchemy as sa

from shared import jobs
from shared.db.base import utcnow
from shared.extractions.models import FeatureExtraction
from shared.labels.models import LabelCategory
from tests.support.factories import NAMES, make_extraction, make_outcome
from tests.webapp.test_models_api import PATIENTS, SEP, classification_model

QUEUE = "prediction"


@pytest.fixture
def broker(settings):
    """The broker's prediction queue, emptied before and after the test."""
    client = redis.Redis.from_url(settings.celery_broker_url)
    client.delete(QUEUE)
    yield client
    client.delete(QUEUE)
    client.close()


def queued(broker) -> list[dict]:
    """Return the headers and arguments of the messages waiting in the prediction queue."""
    messages = [json.loads(raw) for raw in broker.lrange(QUEUE, 0, -1)]
    return [{"id": m["headers"]["id"], "argsrepr": m["headers"]["argsrepr"]} for m in messages]


@pytest.fixture
def model(db):
    """Bob's model and a second extraction of his, in another album, to predict on."""
    extraction = make_extraction(db, "user-bob", "album-x", PATIENTS)
    category = make_outcome(db, "user-bob", "album-x", {p: "yes" for p in PATIENTS})
    stored = classification_model(
        db, extraction, category, test_patients=PATIENTS[:6], input_columns=None
    )
    target = make_extraction(db, "user-bob", "album-y", ["Q1", "Q2", "Q3"])
    db.commit()
    return stored, target


def predict(client, auth, model_id: int, extraction_id: int, user: str = "bob"):
    """POST /models/<id>/predict."""
    return client.post(
        f"/models/{model_id}/predict",
        json={"extraction-id": extraction_id},
        headers=auth.headers(user),
    )


def test_predict_answers_202_at_once_with_where_to_read_it(client, auth, db, model, broker):
    stored, target = model
    started = time.monotonic()
    response = predict(client, auth, stored.id, target.id)
    elapsed = time.monotonic() - started
    assert response.status_code == 202, response.json
    body = response.json
    print(f"\nPOST predict -> {response.status_code} in {elapsed * 1000:.0f} ms: {body}")
    assert elapsed < 2
    assert body["status"] == "PENDING" and body["phase"] == "pending"
    assert body["url"] == f"/predictions/{body['id']}"
    assert response.headers["Location"].endswith(body["url"])
    assert (body["model_id"], body["extraction_id"]) == (stored.id, target.id)
    assert body["predictions"] == [] and body["metrics"] is None
    # One message with the row id only (Flower shows arguments), under the row's task id.
    assert queued(broker) == [{"id": f"prediction-{body['id']}", "argsrepr": f"[{body['id']}]"}]

    read = client.get(body["url"], headers=auth.headers())
    assert read.status_code == 200 and read.json == body
    listed = client.get(f"/models/{stored.id}/predictions", headers=auth.headers())
    assert listed.status_code == 200 and [p["id"] for p in listed.json] == [body["id"]]


def test_predictions_are_owner_only(client, auth, db, model, broker):
    stored, target = model
    body = predict(client, auth, stored.id, target.id).json
    foreign = client.get(body["url"], headers=auth.headers("carol"))
    assert (foreign.status_code, foreign.json) == (404, {"error": "Prediction not found"})
    listed = client.get(f"/models/{stored.id}/predictions", headers=auth.headers("carol"))
    assert (listed.status_code, listed.json) == (404, {"error": "Model not found"})
    assert predict(client, auth, stored.id, target.id, user="carol").status_code == 404
    carols = make_extraction(db, "user-carol", "album-c", ["C1"])
    db.commit()
    response = predict(client, auth, stored.id, carols.id)  # bob's model, carol's extraction
    assert response.status_code == 404 and "xtraction" in response.json["error"]
    assert len(queued(broker)) == 1  # the refused requests queued nothing


def test_missing_features_are_a_400_naming_them_and_queue_nothing(client, auth, db, model, broker):
    stored, target = model
    stored.input_columns = ["CT\u2011GTV\u2011original_firstorder_Mean", "Age"]
    db.commit()
    response = predict(client, auth, stored.id, target.id)
    assert response.status_code == 400
    assert "Age" in response.json["error"] and response.json["details"] == ["Age"]
    assert queued(broker) == []


def test_deleting_the_model_or_the_extraction_deletes_its_predictions(
    client, auth, db, model, broker
):
    stored, target = model
    first = predict(client, auth, stored.id, target.id).json
    second = predict(client, auth, stored.id, stored.feature_extraction_id).json
    assert client.delete(f"/models/{stored.id}", headers=auth.headers()).status_code == 200
    assert client.get(first["url"], headers=auth.headers()).status_code == 404
    assert client.get(second["url"], headers=auth.headers()).status_code == 404
    other = classification_model(
        db, db.get(FeatureExtraction, stored.feature_extraction_id), stored_category(db, stored),
        test_patients=PATIENTS[:6], input_columns=None,
    )  # fmt: skip
    third = predict(client, auth, other.id, target.id).json
    db.execute(sa.delete(FeatureExtraction).where(FeatureExtraction.id == target.id))
    db.commit()
    assert client.get(third["url"], headers=auth.headers()).status_code == 404
    left = db.execute(sa.text("SELECT COUNT(*) FROM prediction")).scalar_one()
    assert left == 0


def stored_category(db, model):
    """The outcome row a model was trained on."""
    return db.get(LabelCategory, model.label_category_id)


def test_a_broker_outage_fails_the_prediction_and_answers_503(
    app, client, auth, db, model, settings, monkeypatch
):
    stored, target = model
    down = settings.model_copy(update={"celery_broker_url": "redis://127.0.0.1:1/0"})  # no one
    monkeypatch.setattr(app.extensions["qi2_runtime"], "celery", jobs.make_client(down))
    try:
        response = predict(client, auth, stored.id, target.id)
    finally:
        monkeypatch.undo()
    assert response.status_code == 503 and response.json["error"]
    status = db.execute(sa.text("SELECT status, error FROM prediction")).one()
    assert status.status == "FAILURE" and "queue" in status.error


def test_the_prediction_routes_are_documented_with_their_schemas(client):
    document = client.get("/openapi.json").json
    paths = document["paths"]
    started = paths["/models/{model_id}/predict"]["post"]["responses"]
    assert "202" in started and "200" not in started
    read = paths["/predictions/{prediction_id}"]["get"]["responses"]["200"]
    listed = paths["/models/{model_id}/predictions"]["get"]["responses"]["200"]
    for response in (started["202"], read, listed):
        assert response["content"]["application/json"]["schema"]["$ref"]
    schemas = document["components"]["schemas"]
    read_schema = next(v for k, v in schemas.items() if k.startswith("PredictionRead"))
    assert {"url", "status", "predictions", "metrics", "n_labelled"} <= set(
        read_schema["properties"]
    )


def test_the_request_reads_little_and_a_finished_extractions_features_once(
    client, auth, db, model, broker
):
    stored, target = model
    stored.input_columns = [f"CT{SEP}GTV{SEP}{name}" for name in NAMES]  # checked one by one
    db.commit()
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    def reads() -> tuple[int, int, int]:
        """POST predict; count its SELECTs: all, of the vectors, of the clinical definitions."""
        statements.clear()
        assert predict(client, auth, stored.id, target.id).status_code == 202
        selects = [s for s in statements if s.lstrip().startswith("SELECT")]
        vectors = sum("FROM feature_vector" in s for s in selects)
        clinical = sum("FROM clinical_feature_definition" in s for s in selects)
        return len(selects), vectors, clinical

    connection = db.connection()  # the test's connection, which the app's sessions share
    sa.event.listen(connection, "before_cursor_execute", record)
    try:
        running = [reads(), reads()]  # not finished: vectors may still come
        target.finished_at = utcnow()
        db.commit()
        finished = [reads(), reads()]
    finally:
        sa.event.remove(connection, "before_cursor_execute", record)
    print(f"\nSELECTs per POST (all, vectors, clinical): {running} then finished {finished}")
    assert [v for _, v, _ in running] == [1, 1] and [v for _, v, _ in finished] == [1, 0]
    assert all(c == 1 for _, _, c in running + finished)  # once, not once per column
    assert max(n for n, _, _ in running) <= 5 and finished[1][0] <= 3
