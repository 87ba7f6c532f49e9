"""Dump the bytes of M1, E1, L1, F1 and C1 on the API benchmarks' seeded data, for comparison.

Seeds benchmarks/seeding.py's 300-patient album into a throwaway MariaDB database, adds a
classification and a survival model, saves two clinical columns, then calls the five routes
the frontend reads most as it does. Prints one JSON object {route: body}, with what changes from
run to run masked (row ids, timestamps, Celery ids), so two trees' outputs compare with `cmp`:

    .venv/bin/python benchmarks/frontend_shapes.py > after.json  # from the repository root
    .venv/bin/python benchmarks/frontend_shapes.py --root <older tree> > before.json
    cmp before.json after.json

tests/webapp/test_frontend_shapes.py keeps the same guard in the suite on a smaller album.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import uuid
from pathlib import Path
from typing import Any

TIMESTAMP = re.compile(rb'"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?"')
ROW_ID = re.compile(rb'("(?:[a-z_-]*[_-])?id"):\d+')
CELERY_ID = re.compile(rb'"(task_id|result_id)":"[^"]*"')
ARTIFACT = re.compile(rb'"db://model/\d+"')
CLINICAL = {
    "Age": {"feat_type": "Number", "encoding": "Normalization", "missing_values": "Median"},
    "Sex": {"feat_type": "Categorical", "encoding": "One-Hot Encoding", "missing_values": "Mode"},
}


def masked(body: bytes) -> str:
    """Mask what changes from run to run: timestamps, row ids, Celery ids, artifact paths."""
    body = CELERY_ID.sub(rb'"\1":"<celery id>"', TIMESTAMP.sub(b'"<time>"', body))
    return ROW_ID.sub(rb"\1:0", ARTIFACT.sub(b'"db://model/0"', body)).decode()


def add_models(engine: Any, extraction_id: int) -> list[str]:
    """Store a classification and a survival model; return 25 feature ids for F1."""
    import sqlalchemy as sa
    import sqlalchemy.orm as so

    from shared.extractions.models import FeatureExtraction
    from shared.features import storage
    from shared.labels.models import LabelCategory
    from tests.webapp.test_models_api import classification_model

    patients = [f"P{p:04d}" for p in range(10)]
    with so.Session(engine) as session:
        extraction = session.get(FeatureExtraction, extraction_id)
        category = session.scalars(sa.select(LabelCategory)).one()
        classification_model(session, extraction, category, test_patients=patients, seed=1)
        classification_model(
            session,
            extraction,
            category,
            test_patients=patients,
            kind="survival",
            name="Bench_model_Survival_1",
            best_algorithm="IPCRidge",
            test_outcomes={
                p: {"time": 10.0 + i, "event": bool(i % 2)} for i, p in enumerate(patients)
            },
            test_predictions={p: {"risk_score": float(-i)} for i, p in enumerate(patients)},
            test_predictions_probabilities=None,
        )
        return sorted(storage.feature_ids(session, extraction_id=extraction_id))[:25]


def answers(issuer: Any, extraction_id: int, features: list[str]) -> dict[str, str]:
    """Call the five routes as the frontend does; return each masked body."""
    from seeding import ALBUM, N_PATIENTS

    from webapp import create_app

    client = create_app().test_client()
    headers = {"Authorization": f"Bearer {issuer.mint('owner', ttl=3600)}"}
    query = f"?album_id={ALBUM}"
    body = {"clinical_feature_definitions": CLINICAL, "album_id": ALBUM}
    client.post(f"/clinical-features-definitions{query}", json=body, headers=headers)
    clinical = {
        f"P{p:04d}": {"PatientID": f"P{p:04d}", "Age": str(30 + p % 50), "Sex": "FM"[p % 2]}
        for p in range(N_PATIENTS)
    }
    collection = {
        "featureExtractionID": extraction_id,
        "name": "Bench",
        "featureIDs": features,
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
        assert response.status_code == 200, (name, response.status_code)
    return {name: masked(response.get_data()) for name, response in calls.items()}


def main() -> None:
    """Seed, call, print, clean up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--redis-db", type=int, default=15)
    args = parser.parse_args()
    root = args.root.resolve()
    sys.path[:0] = [str(root), str(root / "benchmarks")]
    database = f"qi2_bench_shapes_{uuid.uuid4().hex[:8]}"
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    os.environ.update(
        {
            "DATABASE_URL": f"mysql+pymysql://root@127.0.0.1:3306/{database}?charset=utf8mb4",
            "CELERY_BROKER_URL": redis_url,
            "CELERY_RESULT_BACKEND": redis_url,
            "SOCKET_MESSAGE_QUEUE": redis_url,
            "QI2_DATA_DIR": f"/tmp/{database}",
            "LOG_LEVEL": "WARNING",
        }
    )
    from seeding import seed

    from devkit.oidc_issuer import LocalIssuer, User
    from shared.config import get_settings
    from shared.db import migrate
    from shared.db import session as db_session
    from tests.support.mariadb import admin

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the issuer's access log
    issuer = LocalIssuer(users=[User("owner", "pw", sub="user-owner")])
    os.environ["KEYCLOAK_BASE_URL"] = issuer.start()
    get_settings.cache_clear()
    admin(f"CREATE DATABASE {database} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    try:
        migrate.upgrade(os.environ["DATABASE_URL"])
        engine = db_session.make_engine(os.environ["DATABASE_URL"])
        extraction_id = seed(engine, "user-owner")
        features = add_models(engine, extraction_id)
        engine.dispose()
        print(json.dumps(answers(issuer, extraction_id, features)))
    finally:
        issuer.stop()
        admin(f"DROP DATABASE IF EXISTS {database}")


if __name__ == "__main__":
    main()
