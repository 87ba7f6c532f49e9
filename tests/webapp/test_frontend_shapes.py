"""The frontend's main reads (M1, E1, L1, F1, C1) answer byte-identical JSON to a recorded copy.

The copy (data/frontend_shapes.json) was recorded on the tree before issue #14's refactoring
(commit 72701b1). Only what changes from run to run (row ids, timestamps, Celery task ids) is
masked before the bytes are compared. QI2_RECORD_SHAPES=1 writes the copy again: on purpose
only, since a changed shape breaks the frontend.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from shared.collections.models import FeatureCollection
from tests.support.factories import make_extraction, make_outcome
from tests.webapp.test_models_api import FEATURE, PATIENTS, classification_model, survival_model

RECORDED = Path(__file__).parent / "data" / "frontend_shapes.json"
ALBUM = "album-x"
TIMESTAMP = re.compile(rb'"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?"')
ROW_ID = re.compile(rb'("(?:[a-z_-]*[_-])?id"):\d+')
CELERY_ID = re.compile(rb'"(task_id|result_id)":"[^"]*"')
ARTIFACT = re.compile(rb'"db://model/\d+"')


def _masked(body: bytes) -> str:
    """Mask what changes from run to run: timestamps, integer row ids and Celery task ids."""
    body = CELERY_ID.sub(rb'"\1":"<celery id>"', TIMESTAMP.sub(b'"<time>"', body))
    body = ARTIFACT.sub(b'"db://model/0"', body)
    return ROW_ID.sub(rb"\1:0", body).decode()


def _seed(db) -> dict[str, int]:
    """Bob's extraction, outcome, collection, a classification and a survival model."""
    extraction = make_extraction(db, "user-bob", ALBUM, PATIENTS)
    labels = {p: ("yes" if i % 2 else "no") for i, p in enumerate(PATIENTS)}
    category = make_outcome(db, "user-bob", ALBUM, labels)
    db.add(
        FeatureCollection(
            user_id="user-bob",
            feature_extraction_id=extraction.id,
            name="Mean only",
            feature_ids=[FEATURE],
        )
    )
    same = PATIENTS[:10]
    classification_model(db, extraction, category, test_patients=same, seed=1)
    survival_model(db, extraction, category, test_patients=same)
    db.commit()
    return {"extraction": extraction.id}


def _answers(client, auth, ids: dict[str, int]) -> dict[str, str]:
    """Call the five routes as the frontend does; return each masked body."""
    headers = auth.headers()
    definitions = {
        "Age": {"feat_type": "Number", "encoding": "Normalization", "missing_values": "Median"},
        "Sex": {
            "feat_type": "Categorical",
            "encoding": "One-Hot Encoding",
            "missing_values": "Mode",
        },
    }
    query = f"?album_id={ALBUM}"
    client.post(
        f"/clinical-features-definitions{query}",
        json={"clinical_feature_definitions": definitions, "album_id": ALBUM},
        headers=headers,
    )
    clinical = {p: {"PatientID": p, "Age": str(40 + i), "Sex": "FM"[i % 2]} for i, p in
                enumerate(PATIENTS)}  # fmt: skip
    collection = {
        "featureExtractionID": ids["extraction"],
        "name": "Shape check",
        "featureIDs": [FEATURE],
        "dataSplittingType": "traintest",
        "trainTestSplitType": "automatic",
    }
    calls = {
        "M1": client.get(f"/models/{ALBUM}", headers=headers),
        "E1": client.get(f"/extractions/album/{ALBUM}", headers=headers),
        "L1": client.get(f"/label-categories/{ALBUM}", headers=headers),
        "F1": client.post("/feature-collections/new", json=collection, headers=headers),
        "C1": client.post(
            f"/clinical-features{query}", json={"clinical_feature_map": clinical}, headers=headers
        ),
    }
    for name, response in calls.items():
        assert response.status_code == 200, (name, response.json)
    return {name: _masked(response.data) for name, response in calls.items()}


def test_frontend_shapes_are_the_recorded_bytes(client, auth, db):
    answers = _answers(client, auth, _seed(db))
    if os.environ.get("QI2_RECORD_SHAPES"):
        RECORDED.parent.mkdir(exist_ok=True)
        RECORDED.write_text(json.dumps(answers, indent=1) + "\n")
    recorded = json.loads(RECORDED.read_text())
    for name in ("M1", "E1", "L1", "F1", "C1"):
        assert answers[name] == recorded[name], name
