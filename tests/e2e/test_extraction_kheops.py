"""End to end through Kheops: the ten STS patients in Orthanc behind the Kheops album layer.

Real Celery workers fetch each study over DICOMweb with a server-side capability token, convert
CT (HU), PET (SUV) and MR with their RTSTRUCTs, run PyRadiomics and store the vectors; the
owner's Socket.IO client sees the progress and another user's client sees none of it.
"""

from __future__ import annotations

import csv
import io
import time
import zipfile

import httpx
import pytest
import sqlalchemy as sa
import yaml

from shared import events
from shared.extractions.models import ExtractionTask, FeatureVector, WorkerCredential
from shared.presets.service import DEFAULTS_DIR
from tests.support.live import EventListener, wait_extraction_ready

pytestmark = pytest.mark.e2e
ROIS = ["GTV_Mass_CT", "GTV_Mass_PET", "GTV_Mass_MR_T1"]
EXPECTED = {("CT", "GTV_Mass_CT"), ("PT", "GTV_Mass_PET"), ("MR", "GTV_Mass_MR_T1")}


@pytest.fixture(scope="module")
def kheops_app(app, kheops_layer):
    """Point the app at the Kheops layer for this module."""
    settings = app.config["SETTINGS"]
    saved = settings.image_source, settings.kheops_base_url
    settings.image_source, settings.kheops_base_url = "kheops", kheops_layer.base_url
    yield kheops_layer.base_url
    settings.image_source, settings.kheops_base_url = saved


def petct_with_mr() -> dict:
    """The PET/CT preset extended with an MR block; each contour applies to its own series."""
    config = yaml.safe_load((DEFAULTS_DIR / "PETCT_all.yaml").read_text())
    config["general"]["combine_segmentation"] = False
    mr = yaml.safe_load(yaml.safe_dump(config["feature_extraction"]["CT"]))
    mr["pyradiomics"]["original"]["setting"] = {"binWidth": 25, "label": 1}
    config["feature_extraction"]["MR"] = mr
    return config


def test_sts_album_through_kheops(kheops_app, live_url, live_db, start_worker, auth, sts_studies):
    start_worker("extraction", concurrency=2, IMAGE_SOURCE="kheops", KHEOPS_BASE_URL=kheops_app)
    owner = EventListener(live_url, auth.token("alice"))
    other = EventListener(live_url, auth.token("bob"))  # may see the album, does not own the work
    headers = auth.headers("alice")
    started = time.monotonic()
    try:
        rois = httpx.get(f"{live_url}/albums/sts", headers=headers, timeout=120).json()
        assert {name: rois[name] for name in ROIS} == {name: 10 for name in ROIS}
        response = httpx.post(
            f"{live_url}/extract/album/sts",
            json={"config": petct_with_mr(), "rois": ROIS},
            headers=headers,
            timeout=60,
        )
        assert response.status_code == 200, response.text
        extraction_id = response.json()["id"]
        with live_db.connect() as connection:
            credential_rows = connection.execute(sa.select(WorkerCredential)).all()
        assert len(credential_rows) == 1  # the capability secret stays server-side
        status = wait_extraction_ready(live_url, headers, extraction_id, 900)
        elapsed = time.monotonic() - started
        time.sleep(0.5)
    finally:
        owner.close()
        other.close()

    with live_db.connect() as connection:
        tasks = connection.execute(
            sa.select(ExtractionTask).where(ExtractionTask.feature_extraction_id == extraction_id)
        ).all()
        vectors = connection.execute(
            sa.select(ExtractionTask.patient_id, FeatureVector.modality, FeatureVector.roi)
            .join(ExtractionTask, ExtractionTask.id == FeatureVector.feature_extraction_task_id)
            .where(FeatureVector.feature_extraction_id == extraction_id)
        ).all()
        leftover = connection.execute(sa.select(WorkerCredential)).all()
    per_patient: dict[str, set] = {}
    for patient, modality, roi in vectors:
        per_patient.setdefault(patient, set()).add((modality, roi))
    print(
        f"\nSTS through Kheops: {status['completed_tasks']}/{status['total_tasks']} studies "
        f"in {elapsed:.1f} s; {len(vectors)} vectors over {len(per_patient)} patients"
    )
    assert status["successful"], {t.patient_id: t.error for t in tasks if t.error}
    assert set(per_patient) == set(sts_studies)
    assert all(pairs == EXPECTED for pairs in per_patient.values()), per_patient
    assert leftover == []  # the credential is dropped once the extraction finished

    feature_events = owner.of(events.FEATURE_STATUS)
    final = [p for p in owner.of(events.EXTRACTION_STATUS) if "id" in p]
    print(
        f"events: owner received {len(owner.received)} "
        f"({len(feature_events)} feature-status), other user received {len(other.received)}"
    )
    assert {p["feature_extraction_task_id"] for p in feature_events} == {t.id for t in tasks}
    assert sum(p["status"] == "SUCCESS" for p in feature_events) == len(tasks)
    assert len(final) == 1 and final[0]["status"]["successful"]
    assert other.received == []

    # The ZIP download: one CSV per modality-ROI; PET vectors carry MTV, TLG and SUVpeak
    # (firstorder renamed to SUV for PT, as the frontend expects).
    download = httpx.get(
        f"{live_url}/extractions/{extraction_id}/download", headers=headers, timeout=60
    )
    assert download.status_code == 200, download.text
    by_modality = {}
    with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
        names = archive.namelist()
        for modality, roi in EXPECTED:
            (name,) = [n for n in names if n.endswith(f"_{modality}-{roi}.csv")]
            with archive.open(name) as handle:
                text = io.TextIOWrapper(handle, encoding="utf-8")
                by_modality[modality] = list(csv.DictReader(text))
    assert len(names) == len(EXPECTED), names
    pet_rows = by_modality["PT"]
    assert len(pet_rows) == len(sts_studies)
    for row in pet_rows:
        mtv, tlg, peak = (float(row[f"original_SUV_{n}"]) for n in ("MTV", "TLG", "SUVpeak"))
        mean, top = float(row["original_SUV_Mean"]), float(row["original_SUV_Maximum"])
        assert mtv > 0 and tlg == pytest.approx(mean * mtv, rel=1e-2, abs=1e-2)
        assert 0 < peak <= top
    # Every CSV has the extraction's sorted union of columns (contract §3.2): empty for CT.
    assert {row["original_intensity_MTV"] for row in by_modality["CT"]} == {""}
