"""Interrupted studies: a worker process killed with SIGKILL mid-study (redone, never stuck) and an
extraction cancelled while it runs (stopped, rows and values gone, the worker keeps serving)."""

from __future__ import annotations

import os
import shutil
import signal
import time

import httpx
import pytest
import sqlalchemy as sa
import yaml

from shared.extractions.models import ExtractionTask, FeatureVector
from shared.imaging.factory import local_albums_root
from shared.presets.service import DEFAULTS_DIR
from tests.conftest import SHARED_DATA
from tests.support.live import wait_extraction_ready, wait_until

pytestmark = pytest.mark.e2e
ALBUM = "e2e-killed"


@pytest.fixture(scope="module")
def album(settings) -> str:
    """One STS patient (CT + PET + MR with their RTSTRUCTs) as a local album."""
    root = local_albums_root(settings) / ALBUM
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(SHARED_DATA / "sts" / "STS_002", root / "STS_002")
    return ALBUM


def slow_config() -> dict:
    """The PET/CT preset with wavelet filters on CT, so a study runs for several seconds."""
    config = yaml.safe_load((DEFAULTS_DIR / "PETCT_all.yaml").read_text())
    block = config["feature_extraction"]["CT"]["pyradiomics"]["original"]
    block["imageType"] = {"Original": {}, "Wavelet": {}}
    return config


def task_row(engine, extraction_id: int) -> ExtractionTask:
    """Read the single task row of the extraction."""
    with engine.connect() as connection:
        return connection.execute(
            sa.select(ExtractionTask).where(ExtractionTask.feature_extraction_id == extraction_id)
        ).one()


@pytest.fixture(scope="module")
def worker(start_worker):
    """One real extraction worker with a single pool process."""
    return start_worker("extraction", concurrency=1)


def start_slow(live_url: str, headers: dict, album: str) -> int:
    """Start the slow extraction; return its id."""
    response = httpx.post(
        f"{live_url}/extract/album/{album}",
        json={"config": slow_config(), "rois": ["GTV_Mass_CT"]},
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()["id"]


def test_killed_worker_process_leads_to_the_study_being_redone(
    live_url, live_db, worker, album, auth
):
    headers = auth.headers("alice")
    extraction_id = start_slow(live_url, headers, album)

    # Wait until the study is being computed, then kill the pool process doing it.
    wait_until(
        lambda: task_row(live_db, extraction_id).status_message == "Processing data",
        120,
        interval=0.05,
    )
    victims = worker.child_pids()
    assert victims
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    killed_during = task_row(live_db, extraction_id)
    print(
        f"\nkilled pool process(es) {victims} while the task was "
        f"{killed_during.status} '{killed_during.status_message}' (attempt "
        f"{killed_during.attempts})"
    )

    status = wait_extraction_ready(live_url, headers, extraction_id, 300)
    final = task_row(live_db, extraction_id)
    with live_db.connect() as connection:
        vectors = connection.execute(
            sa.select(FeatureVector.modality, FeatureVector.roi).where(
                FeatureVector.feature_extraction_id == extraction_id
            )
        ).all()
    print(
        f"after the kill: status={final.status} attempts={final.attempts} vectors={vectors} "
        f"-> {status}"
    )
    assert killed_during.status == "PROGRESS" and killed_during.attempts == 1
    assert final.status == "SUCCESS", final.error
    assert final.attempts == 2
    # combine_segmentation: the CT contour also applies to the PET; each stored exactly once.
    assert sorted(vectors) == [("CT", "GTV_Mass_CT"), ("PT", "GTV_Mass_CT")]


def test_cancel_stops_a_running_extraction(live_url, live_db, worker, album, auth):
    headers = auth.headers("alice")
    extraction_id = start_slow(live_url, headers, album)
    wait_until(
        lambda: task_row(live_db, extraction_id).status_message == "Processing data",
        120,
        interval=0.05,
    )
    response = httpx.post(f"{live_url}/extractions/{extraction_id}/cancel", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["cancelled"] is True
    time.sleep(3)  # give a surviving task every chance to write values
    with live_db.connect() as connection:
        leftovers = [
            connection.execute(
                sa.select(sa.func.count()).select_from(model).where(column == extraction_id)
            ).scalar_one()
            for model, column in (
                (ExtractionTask, ExtractionTask.feature_extraction_id),
                (FeatureVector, FeatureVector.feature_extraction_id),
            )
        ]
    assert leftovers == [0, 0]
    gone = httpx.get(f"{live_url}/extractions/{extraction_id}/status", headers=headers)
    assert gone.status_code == 404
    # The worker recovered from the termination and serves the next extraction.
    next_id = start_slow(live_url, headers, album)
    status = wait_extraction_ready(live_url, headers, next_id, 300)
    print(
        f"\ncancelled extraction {extraction_id} mid-study: rows and values gone; "
        f"next extraction {next_id}: {status}"
    )
    assert status["successful"]
