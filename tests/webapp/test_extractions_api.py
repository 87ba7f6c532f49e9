"""Extraction endpoints (E1-E4, E6, E8, E9) and album ROIs (A1, A2) on the local-folder source.

No worker runs here: these tests check validation, ownership, rows and queueing. The work itself
is covered by the end-to-end tests with real Celery workers.
"""

from __future__ import annotations

import base64
import copy
import json

import pytest
import redis
import sqlalchemy as sa
import yaml

from devkit.synthetic import write_cohort
from shared.albums.models import AlbumRoiCache
from shared.extractions.models import ExtractionTask, FeatureExtraction
from shared.imaging.factory import local_albums_root
from shared.presets.service import DEFAULTS_DIR

ALBUM = "synthetic-api"
N_PATIENTS = 4


@pytest.fixture(scope="module")
def album(settings):
    """A local album of synthetic CT + RTSTRUCT studies (ROI "GTV")."""
    folder = local_albums_root(settings) / ALBUM
    if not folder.exists():
        write_cohort(folder, n_patients=N_PATIENTS, seed=7)
    return ALBUM


@pytest.fixture
def config():
    """The PET/CT default preset as parsed YAML."""
    return yaml.safe_load((DEFAULTS_DIR / "PETCT_all.yaml").read_text())


@pytest.fixture
def queue(settings):
    """The broker's `extraction` queue, emptied before and after the test."""
    client = redis.Redis.from_url(settings.celery_broker_url)
    client.delete("extraction")
    yield client
    client.delete("extraction")
    client.close()


def start(client, auth, album_id, config, rois=("GTV",), user="bob"):
    """POST /extract/album/<album>."""
    return client.post(
        f"/extract/album/{album_id}",
        json={"config": config, "rois": list(rois)},
        headers=auth.headers(user),
    )


def test_start_creates_rows_and_queues_one_task_per_study(client, auth, album, config, queue, db):
    response = start(client, auth, album, config)
    assert response.status_code == 200, response.json
    body = response.json
    assert list(body)[:5] == ["id", "created_at", "updated_at", "user_id", "album_id"]
    assert body["user_id"] == "user-bob" and body["album_id"] == album
    assert len(body["tasks"]) == N_PATIENTS
    assert set(body["tasks"][0]) == {
        "id",
        "created_at",
        "updated_at",
        "feature_extraction_id",
        "study_uid",
        "task_id",
    }
    assert body["status"] == {
        "ready": False,
        "successful": False,
        "failed": False,
        "total_tasks": N_PATIENTS,
        "pending_tasks": N_PATIENTS,
        "completed_tasks": 0,
        "failed_tasks": 0,
        "errors": {},
    }
    assert body["rois"] == ["GTV"]
    assert queue.llen("extraction") == N_PATIENTS
    # Tasks carry the task row id only: no token, credential or path reaches the broker.
    messages = [json.loads(raw) for raw in queue.lrange("extraction", 0, -1)]
    arguments = [json.loads(base64.b64decode(m["body"]))[0] for m in messages]
    assert sorted(arguments) == sorted([t["id"]] for t in body["tasks"])
    assert {m["headers"]["task"] for m in messages} == {"extraction.study"}
    tasks = db.scalars(
        sa.select(ExtractionTask).where(ExtractionTask.feature_extraction_id == body["id"])
    ).all()
    assert {t.task_id for t in tasks} == {t["task_id"] for t in body["tasks"]}
    assert all(t.patient_id for t in tasks)


def test_invalid_config_is_400_and_creates_nothing(client, auth, album, config, queue, db):
    bad = copy.deepcopy(config)
    bad["feature_extraction"]["CT"]["pyradiomics"]["original"]["setting"]["binWidht"] = 5
    before = db.scalar(sa.select(sa.func.count()).select_from(FeatureExtraction))
    response = start(client, auth, album, bad)
    assert response.status_code == 400
    assert "setting.binWidht" in response.json["error"]
    assert db.scalar(sa.select(sa.func.count()).select_from(FeatureExtraction)) == before
    assert queue.llen("extraction") == 0


@pytest.mark.parametrize(
    ("body", "fragment"),
    [({"rois": ["GTV"]}, "config"), ({"config": {}, "rois": []}, "rois"), ({}, "config")],
)
def test_malformed_bodies_are_400(client, auth, album, body, fragment):
    response = client.post(f"/extract/album/{album}", json=body, headers=auth.headers())
    assert response.status_code == 400
    assert fragment in response.json["error"]


def test_unknown_album_is_404(client, auth, config):
    response = start(client, auth, "no-such-album", config)
    assert response.status_code == 404
    assert "error" in response.json


def test_latest_extraction_per_album_and_null(client, auth, album, config, queue):
    assert client.get(f"/extractions/album/{album}", headers=auth.headers()).json is None
    first = start(client, auth, album, config).json
    second = start(client, auth, album, config).json
    latest = client.get(f"/extractions/album/{album}", headers=auth.headers()).json
    assert latest["id"] == second["id"] > first["id"]
    assert "task_id" in latest["tasks"][0]  # raw tasks
    other_user = client.get(f"/extractions/album/{album}", headers=auth.headers("alice"))
    assert other_user.json is None


def test_get_patch_status_are_owner_only(client, auth, album, config, queue):
    extraction = start(client, auth, album, config).json
    url = f"/extractions/{extraction['id']}"
    got = client.get(url, headers=auth.headers()).json
    assert got["tasks"][0]["status"] == "PENDING"
    assert got["tasks"][0]["status_message"] == "Waiting to start"
    assert len(got["tasks"][0]["updated_at"]) == len("26.11.2026 05:07")
    for method, path in [
        ("get", url),
        ("patch", url),
        ("get", f"{url}/status"),
        ("post", f"{url}/cancel"),
        ("get", f"{url}/download-configuration"),
    ]:
        response = client.open(path, method=method.upper(), json={}, headers=auth.headers("alice"))
        assert response.status_code == 404, (method, path)
        assert response.json == {"error": "Feature extraction not found"}
    missing = client.get("/extractions/99999999", headers=auth.headers())
    assert missing.json == {"error": "Feature extraction not found"}


def test_patch_updates_only_split_fields(client, auth, album, config, queue):
    extraction = start(client, auth, album, config).json
    url = f"/extractions/{extraction['id']}"
    response = client.patch(
        url,
        json={
            "data_splitting_type": "traintest",
            "train_test_split_type": "manual",
            "training_patients": ["P1", "P2"],
            "test_patients": ["P3"],
            "user_id": "attacker",
            "config_yaml": "/etc/passwd",
        },
        headers=auth.headers(),
    )
    assert response.status_code == 200
    body = response.json
    assert body["train_test_split_type"] == "manual"
    assert body["training_patients"] == ["P1", "P2"] and body["test_patients"] == ["P3"]
    assert body["user_id"] == "user-bob"
    cleared = client.patch(
        url, json={"training_patients": None, "test_patients": None}, headers=auth.headers()
    ).json
    assert cleared["training_patients"] is None and cleared["train_test_split_type"] == "manual"
    bad = client.patch(url, json={"data_splitting_type": "half"}, headers=auth.headers())
    assert bad.status_code == 400


def test_status_comes_from_the_rows(client, auth, album, config, queue, db):
    extraction = start(client, auth, album, config).json
    tasks = db.scalars(
        sa.select(ExtractionTask).where(ExtractionTask.feature_extraction_id == extraction["id"])
    ).all()
    tasks[0].status, tasks[1].status, tasks[1].error = "SUCCESS", "FAILURE", "No contours"
    db.commit()
    status = client.get(f"/extractions/{extraction['id']}/status", headers=auth.headers()).json
    assert status == {
        "ready": False,
        "successful": False,
        "failed": True,
        "total_tasks": N_PATIENTS,
        "pending_tasks": N_PATIENTS - 2,
        "completed_tasks": 1,
        "failed_tasks": 1,
        "errors": {tasks[1].study_uid: ["No contours"]},
    }


def test_cancel_deletes_rows_and_returns_previous(client, auth, album, config, queue, db):
    first = start(client, auth, album, config).json
    second = start(client, auth, album, config).json
    response = client.post(f"/extractions/{second['id']}/cancel", headers=auth.headers())
    assert response.status_code == 200
    body = response.json
    assert body["cancelled"] is True
    assert body["previous_extraction"]["id"] == first["id"]
    assert db.get(FeatureExtraction, second["id"]) is None
    count = db.scalar(
        sa.select(sa.func.count())
        .select_from(ExtractionTask)
        .where(ExtractionTask.feature_extraction_id == second["id"])
    )
    assert count == 0


def test_cancel_of_a_finished_extraction_is_409(client, auth, album, config, queue, db):
    extraction = start(client, auth, album, config).json
    for task in db.scalars(
        sa.select(ExtractionTask).where(ExtractionTask.feature_extraction_id == extraction["id"])
    ):
        task.status = "SUCCESS"
    db.commit()
    response = client.post(f"/extractions/{extraction['id']}/cancel", headers=auth.headers())
    assert response.status_code == 409
    assert db.get(FeatureExtraction, extraction["id"]) is not None


def test_download_configuration_is_the_posted_yaml(client, auth, album, config, queue):
    extraction = start(client, auth, album, config).json
    response = client.get(
        f"/extractions/{extraction['id']}/download-configuration", headers=auth.headers()
    )
    assert response.status_code == 200
    assert response.mimetype == "text/yaml"
    assert response.headers["Content-Disposition"] == (
        f"attachment; filename=extraction-{extraction['id']}-config.yaml"
    )
    assert yaml.safe_load(response.data) == config
    text = response.data.decode()
    assert text.index("feature_extraction:") < text.index("general:")  # keys sorted


def test_album_rois_are_counted_and_cached(client, auth, album, db):
    response = client.get(f"/albums/{album}", headers=auth.headers())
    assert response.status_code == 200
    assert response.json == {"GTV": N_PATIENTS}
    cache = db.scalar(sa.select(AlbumRoiCache).where(AlbumRoiCache.album_id == album))
    assert cache is not None and len(cache.study_uids) == N_PATIENTS
    cache.rois = {"GTV": 99}  # prove the next read is served from the cache
    db.commit()
    assert client.get(f"/albums/{album}", headers=auth.headers()).json == {"GTV": 99}
    forced = client.get(f"/albums/{album}/force", headers=auth.headers()).json
    assert forced == {"GTV": N_PATIENTS}


def test_album_rois_recomputed_when_studies_change(client, auth, album, db):
    client.get(f"/albums/{album}", headers=auth.headers())
    cache = db.scalar(sa.select(AlbumRoiCache).where(AlbumRoiCache.album_id == album))
    cache.study_uids, cache.rois = ["1.2.3"], {"stale": 1}
    db.commit()
    assert client.get(f"/albums/{album}", headers=auth.headers()).json == {"GTV": N_PATIENTS}


def test_status_works_with_redis_down(app, client, auth, album, config, queue):
    extraction = start(client, auth, album, config).json
    settings = app.config["SETTINGS"]
    saved = settings.celery_broker_url, settings.celery_result_backend
    # Nothing listens on port 1: any Redis access would fail.
    settings.celery_broker_url = settings.celery_result_backend = "redis://127.0.0.1:1/0"
    try:
        for url in (
            f"/extractions/{extraction['id']}/status",
            f"/extractions/{extraction['id']}",
            f"/extractions/album/{album}",
        ):
            response = client.get(url, headers=auth.headers())
            assert response.status_code == 200, url
        assert client.get("/health/ready").status_code == 503  # the probe does see it
    finally:
        settings.celery_broker_url, settings.celery_result_backend = saved
