"""End to end on the local-folder source: real Celery workers, real Socket.IO clients.

An album of good synthetic studies plus four bad ones (corrupt file, no contours, ROI missing,
mask outside the image): the bad studies fail with readable messages, the good ones succeed,
the owner sees the progress events and another user sees none.
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import httpx
import pydicom
import pytest
import sqlalchemy as sa
import yaml

from devkit.synthetic import write_cohort
from shared import events
from shared.extractions.models import ExtractionTask, FeatureVector
from shared.imaging.factory import local_albums_root
from shared.presets.service import DEFAULTS_DIR
from tests.support.live import EventListener, wait_extraction_ready

pytestmark = pytest.mark.e2e
ALBUM = "e2e-local"
GOOD = 3


def set_patient(folder: Path, patient_id: str) -> None:
    """Give every file of a study folder another PatientID."""
    for path in folder.rglob("*.dcm"):
        dataset = pydicom.dcmread(path)
        dataset.PatientID = patient_id
        dataset.save_as(path)


def variant(root: Path, tmp: Path, name: str, seed: int, **kwargs) -> Path:
    """Write one synthetic study as patient `name` into the album."""
    write_cohort(tmp / name, n_patients=1, seed=seed, **kwargs)
    folder = root / name
    shutil.move(tmp / name / "SYN_001", folder)
    set_patient(folder, name)
    return folder


def shift_contours(rtstruct: Path, dx: float) -> None:
    """Move every contour point by dx mm (off the image)."""
    dataset = pydicom.dcmread(rtstruct)
    for roi in dataset.ROIContourSequence:
        for contour in roi.ContourSequence:
            points = [float(v) for v in contour.ContourData]
            contour.ContourData = [v + dx if i % 3 == 0 else v for i, v in enumerate(points)]
    dataset.save_as(rtstruct)


@pytest.fixture(scope="module")
def album(settings, tmp_path_factory) -> str:
    """3 good studies + corrupt / no-contour / missing-ROI / mask-outside studies."""
    root = local_albums_root(settings) / ALBUM
    shutil.rmtree(root, ignore_errors=True)
    tmp = tmp_path_factory.mktemp("variants")
    write_cohort(root, n_patients=GOOD, seed=11)
    corrupt = variant(root, tmp, "BAD_CORRUPT", 15)
    ct_file = sorted((corrupt / "CT").glob("*.dcm"))[5]
    ct_file.write_bytes(ct_file.read_bytes()[:-4000])  # header intact, pixel data cut short
    variant(root, tmp, "BAD_NOCONTOUR", 12, with_rtstruct=False)
    variant(root, tmp, "BAD_NOROI", 13, roi_name="OTHER")
    outside = variant(root, tmp, "BAD_OUTSIDE", 14)
    shift_contours(outside / "RS.dcm", 500.0)
    return ALBUM


def test_album_extraction_with_bad_studies(live_url, live_db, start_worker, album, auth):
    worker = start_worker("extraction", concurrency=2)
    owner = EventListener(live_url, auth.token("alice"))
    other = EventListener(live_url, auth.token("bob"))
    headers = auth.headers("alice")
    config = yaml.safe_load((DEFAULTS_DIR / "PETCT_all.yaml").read_text())
    started = time.monotonic()
    try:
        response = httpx.post(
            f"{live_url}/extract/album/{album}",
            json={"config": config, "rois": ["GTV"]},
            headers=headers,
            timeout=30,
        )
        assert response.status_code == 200, response.text
        extraction_id = response.json()["id"]
        status = wait_extraction_ready(live_url, headers, extraction_id, 180)
        elapsed = time.monotonic() - started
        time.sleep(0.5)  # let the last events arrive
    finally:
        owner.close()
        other.close()

    assert status["total_tasks"] == GOOD + 4
    assert status["completed_tasks"] == GOOD, status["errors"]
    assert status["failed_tasks"] == 4
    detail = httpx.get(f"{live_url}/extractions/{extraction_id}", headers=headers).json()
    by_patient = {}
    with live_db.connect() as connection:
        rows = connection.execute(
            sa.select(ExtractionTask).where(ExtractionTask.feature_extraction_id == extraction_id)
        ).all()
        by_patient = {row.patient_id: row for row in rows}
        vectors = connection.execute(
            sa.select(
                FeatureVector.feature_extraction_task_id, FeatureVector.modality, FeatureVector.roi
            ).where(FeatureVector.feature_extraction_id == extraction_id)
        ).all()
    messages = {pid: row.error for pid, row in by_patient.items() if row.status == "FAILURE"}
    print(f"\nextraction {extraction_id}: {status} in {elapsed:.1f} s")
    for pid, message in sorted(messages.items()):
        print(f"  {pid}: {message}")
    assert "RTSTRUCT or SEG" in messages["BAD_NOCONTOUR"]
    assert "GTV" in messages["BAD_NOROI"] and "OTHER" in messages["BAD_NOROI"]
    assert (
        "overlap" in messages["BAD_OUTSIDE"].lower() or "outside" in messages["BAD_OUTSIDE"].lower()
    )
    assert messages["BAD_CORRUPT"]
    assert "Traceback" not in "".join(messages.values())
    # Each row names the worker node (name@host) that ran it (issue #17: several hosts).
    node = worker.name.replace("%h", socket.gethostname())
    assert {row.worker for row in rows} == {node}
    good_tasks = {row.id for pid, row in by_patient.items() if pid.startswith("SYN_")}
    assert {v.feature_extraction_task_id for v in vectors} == good_tasks
    assert {(v.modality, v.roi) for v in vectors} == {("CT", "GTV")}
    assert {t["status"] for t in detail["tasks"]} == {"SUCCESS", "FAILURE"}
    assert detail["modalities"] == ["CT"] and detail["rois"] == ["GTV"]
    assert len(detail["feature_definitions"]) > 100

    details = httpx.get(f"{live_url}/extractions/{extraction_id}/feature-details", headers=headers)
    tabular = details.text.split('name="features_tabular"\r\n\r\n')[1].split("\r\n--")[0]
    table_rows = [line.split(",") for line in tabular.splitlines()[1:]]
    assert sorted(r[0] for r in table_rows) == sorted(by_patient)  # failed studies padded
    assert all(any(cell for cell in r[3:]) == r[0].startswith("SYN_") for r in table_rows)

    kinds = [name for name, _ in owner.received]
    feature_events = owner.of(events.FEATURE_STATUS)
    final = [p for p in owner.of(events.EXTRACTION_STATUS) if "id" in p]
    print(
        f"  owner received {len(owner.received)} events "
        f"({kinds.count(events.FEATURE_STATUS)} feature-status, "
        f"{kinds.count(events.EXTRACTION_STATUS)} extraction-status); "
        f"other user received {len(other.received)}"
    )
    assert {p["feature_extraction_task_id"] for p in feature_events} == {r.id for r in rows}
    assert sum(p["status"] == "SUCCESS" for p in feature_events) == GOOD
    failure_messages = [p["status_message"] for p in feature_events if p["status"] == "FAILURE"]
    assert len(failure_messages) == 4
    assert len(final) == 1 and final[0]["id"] == extraction_id and final[0]["status"]["ready"]
    assert other.received == []
