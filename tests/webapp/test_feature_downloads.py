"""Feature details (E5, multipart) and the ZIP download (E7) through the API."""

from __future__ import annotations

import email
import io
import zipfile

import numpy as np
import pytest

from shared.albums.models import AlbumOutcome
from shared.extractions import service as extraction_service
from shared.features import storage
from shared.imaging.source import StudyInfo
from tests.support.factories import make_outcome

NAMES = ["original_firstorder_Mean", "original_shape_VoxelVolume", "original_glcm_Contrast"]
SEP = "\u2011"


@pytest.fixture
def extraction(db):
    """An extraction of bob's with values for P1, P2, P3 and a failed study for P4."""
    extraction = extraction_service.create(
        db,
        user_id="user-bob",
        album_id="album-x",
        album_name="My Album",
        config_yaml="{}\n",
        rois=["GTV"],
        studies=[StudyInfo(f"1.2.{i}", f"P{i}") for i in range(1, 5)],
    )
    rng = np.random.default_rng(0)
    for task in extraction.tasks[:3]:
        values = np.array([rng.normal(40, 5), rng.normal(1000, 100), 2.0])
        storage.store_study_vectors(
            db,
            extraction_id=extraction.id,
            task_id=task.id,
            vectors=[
                storage.VectorIn("CT", "GTV", NAMES, values),
                storage.VectorIn("PT", "GTV", NAMES, values / 10),
            ],
        )
        task.status = "SUCCESS"
    extraction.tasks[3].status = "FAILURE"
    db.commit()
    return extraction


def parts(response) -> dict[str, str]:
    """Parse the multipart/form-data body like a browser's FormData would."""
    raw = b"Content-Type: " + response.headers["Content-Type"].encode() + b"\r\n\r\n"
    message = email.message_from_bytes(raw + response.data)
    return {
        part.get_param("name", header="content-disposition"): part.get_payload(decode=True).decode()
        for part in message.get_payload()
    }


def test_feature_details_parts(client, auth, extraction):
    response = client.get(
        f"/extractions/{extraction.id}/feature-details",
        headers={**auth.headers(), "Accept": "multipart/form-data"},
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    body = parts(response)
    assert list(body) == ["features_tabular", "features_chart"]
    tabular = body["features_tabular"].splitlines()
    assert tabular[0] == "PatientID,Modality,ROI," + ",".join(sorted(NAMES))
    assert [line.split(",")[:3] for line in tabular[1:]] == [
        ["P1", "CT", "GTV"],
        ["P1", "PT", "GTV"],
        ["P2", "CT", "GTV"],
        ["P2", "PT", "GTV"],
        ["P3", "CT", "GTV"],
        ["P3", "PT", "GTV"],
        ["P4", "CT", "GTV"],
        ["P4", "PT", "GTV"],
    ]
    assert tabular[-1] == "P4,PT,GTV,,,"  # the failed study is padded with empty cells
    chart = body["features_chart"].splitlines()
    assert chart[0] == "FeatureID,P1,P2,P3,P4"  # no Ranking without a current outcome
    ids = [line.split(",")[0] for line in chart[1:]]
    assert f"CT{SEP}GTV{SEP}original_firstorder_Mean" in ids
    contrast = next(line for line in chart if line.startswith(f"CT{SEP}GTV{SEP}original_glcm"))
    assert contrast.split(",")[1:] == ["0.0", "0.0", "0.0", ""]  # constant feature: z = 0


def test_ranking_appears_with_a_current_outcome(client, auth, db, extraction):
    labels = {"P1": "0", "P2": "1", "P3": "1", "P4": "Undefined"}
    category = make_outcome(db, "user-bob", "album-x", labels)
    db.add(AlbumOutcome(user_id="user-bob", album_id="album-x", outcome_id=category.id))
    db.commit()
    response = client.get(f"/extractions/{extraction.id}/feature-details", headers=auth.headers())
    chart = parts(response)["features_chart"].splitlines()
    assert chart[0] == "FeatureID,P1,P2,P3,P4,Ranking"
    ranks = sorted(int(line.rsplit(",", 1)[1]) for line in chart[1:])
    assert ranks == list(range(len(chart) - 1))


def test_zip_download(client, auth, extraction):
    response = client.get(f"/extractions/{extraction.id}/download", headers=auth.headers())
    assert response.status_code == 200
    assert response.mimetype == "application/zip"
    assert response.headers["Content-Disposition"] == (
        "attachment; filename=features_album_My-Album.zip"
    )
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    assert sorted(archive.namelist()) == [
        "features_album_My-Album_CT-GTV.csv",
        "features_album_My-Album_PT-GTV.csv",
    ]
    ct = archive.read("features_album_My-Album_CT-GTV.csv").decode().splitlines()
    pt = archive.read("features_album_My-Album_PT-GTV.csv").decode().splitlines()
    assert "original_intensity_Mean" in ct[0] and "firstorder" not in ct[0]
    assert "original_SUV_Mean" in pt[0]
    assert len(ct) == 5  # header + 4 patients (P4 padded)


def test_downloads_are_owner_only(client, auth, extraction):
    for url in (
        f"/extractions/{extraction.id}/feature-details",
        f"/extractions/{extraction.id}/download",
    ):
        response = client.get(url, headers=auth.headers("alice"))
        assert response.status_code == 404
        assert response.json == {"error": "Feature extraction not found"}


def test_downloads_are_not_cached_nor_sniffed(client, auth, extraction):
    for url in (
        f"/extractions/{extraction.id}/download",
        f"/extractions/{extraction.id}/download-configuration",
        f"/extractions/{extraction.id}/feature-details",
    ):
        response = client.get(url, headers=auth.headers())
        assert response.status_code == 200, url
        assert response.headers["X-Content-Type-Options"] == "nosniff", url
        assert response.headers["Cache-Control"] == "no-store", url
