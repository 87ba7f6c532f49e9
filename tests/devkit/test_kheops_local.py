"""The Kheops album API over a local folder of albums: what the browser asks `./qi2 run` for."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devkit.kheops_layer import KheopsLayer, LayerAlbum, LocalStore
from devkit.synthetic import write_cohort
from shared.imaging.source import (
    MODALITIES_IN_STUDY,
    MODALITY,
    NUMBER_OF_SERIES_INSTANCES,
    PATIENT_ID,
    PATIENT_NAME,
    SOP_INSTANCE_UID,
    STUDY_UID,
    dicom_value,
)
from tests.support.fixtures import ALICE, BOB, study_uids

APP = "http://127.0.0.1:3000"


@pytest.fixture(scope="module")
def albums_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three album folders: bob's (2 patients), alice's (1) and one nobody is listed on (1)."""
    root = tmp_path_factory.mktemp("local-albums")
    write_cohort(root / "mine", 2, seed=11)
    write_cohort(root / "theirs", 1, seed=12)
    write_cohort(root / "open", 1, seed=13)
    return root


@pytest.fixture(scope="module")
def layer(albums_root: Path, issuer) -> Iterator[KheopsLayer]:
    jwks = f"{issuer.issuer}/protocol/openid-connect/certs"
    configured = [
        LayerAlbum("mine", "Bob's album", users={BOB}),
        LayerAlbum("theirs", "Alice's album", users={ALICE}),
    ]
    served = KheopsLayer(
        None,
        jwks,
        configured,
        issuer=issuer.issuer,
        store=LocalStore(albums_root),
        cors_origins=[APP],
    )
    served.start()
    yield served
    served.stop()


def get(layer: KheopsLayer, path: str, token: str | None, **headers: str) -> httpx.Response:
    """GET a layer path as the frontend does (bearer token, Origin of the app)."""
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.get(f"{layer.base_url}/api{path}", headers=headers, timeout=30)


def test_a_user_lists_only_the_albums_they_may_see(layer, auth):
    bob = get(layer, "/albums", auth.token("bob"), Origin=APP)
    assert bob.status_code == 200
    assert bob.headers["access-control-allow-origin"] == APP
    by_id = {a["album_id"]: a for a in bob.json()}
    assert set(by_id) == {"mine", "open"}  # not alice's
    assert by_id["mine"]["name"] == "Bob's album" and by_id["mine"]["number_of_studies"] == 2
    assert by_id["mine"]["modalities"] == ["CT", "RTSTRUCT"]
    alice = {a["album_id"] for a in get(layer, "/albums", auth.token("alice")).json()}
    assert alice == {"theirs", "open"}
    assert get(layer, "/albums/theirs", auth.token("bob")).status_code == 403
    assert get(layer, "/albums/nothing", auth.token("bob")).status_code == 404
    assert get(layer, "/albums", None).status_code == 401


def test_studies_of_an_album_in_kheops_dicom_json(layer, auth, albums_root):
    token = auth.token("bob")
    response = get(layer, "/studies?album=mine", token)
    assert response.status_code == 200 and response.headers["X-Total-Count"] == "2"
    studies = response.json()
    expected = set(study_uids(albums_root / "mine").values())
    assert {dicom_value(s, STUDY_UID) for s in studies} == expected
    for study in studies:
        assert dicom_value(study, PATIENT_ID)
        assert "Alphabetic" in dicom_value(study, PATIENT_NAME)
        assert study[MODALITIES_IN_STUDY]["Value"] == ["CT", "RTSTRUCT"]
    assert get(layer, "/studies?album=theirs", token).status_code == 403


def test_one_study_by_uid_only_through_a_visible_album(layer, auth, albums_root):
    mine = sorted(study_uids(albums_root / "mine").values())[0]
    theirs = next(iter(study_uids(albums_root / "theirs").values()))
    found = get(layer, f"/studies/?StudyInstanceUID={mine}", auth.token("bob")).json()
    assert [dicom_value(s, STUDY_UID) for s in found] == [mine]
    assert get(layer, f"/studies/?StudyInstanceUID={theirs}", auth.token("bob")).json() == []
    assert get(layer, f"/studies/?StudyInstanceUID={theirs}", auth.token("alice")).json()


def test_series_and_metadata_of_a_study(layer, auth, albums_root):
    uid = sorted(study_uids(albums_root / "mine").values())[0]
    token = auth.token("bob")
    series = get(layer, f"/studies/{uid}/series", token).json()
    assert sorted(dicom_value(s, MODALITY) for s in series) == ["CT", "RTSTRUCT"]
    instances = sum(int(dicom_value(s, NUMBER_OF_SERIES_INSTANCES)) for s in series)
    metadata = get(layer, f"/studies/{uid}/metadata", token).json()
    assert len(metadata) == instances
    assert len({dicom_value(m, SOP_INSTANCE_UID) for m in metadata}) == instances
    assert all("7FE00010" not in m for m in metadata)  # no pixel data
    assert get(layer, f"/studies/{uid}/series", auth.token("alice")).status_code == 404


def test_no_retrieval_and_no_unknown_filter(layer, auth, albums_root):
    uid = sorted(study_uids(albums_root / "mine").values())[0]
    token = auth.token("bob")
    assert get(layer, f"/studies/{uid}", token).status_code == 501
    refused = get(layer, "/studies?album=mine&StudyDate=20200101", token)
    assert refused.status_code == 400 and "StudyDate" in refused.json()["error"]


def test_cors_preflight_for_the_frontend_only(layer):
    asked = {
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    ok = httpx.options(f"{layer.base_url}/api/albums", headers={**asked, "Origin": APP}, timeout=10)
    assert ok.headers["access-control-allow-origin"] == APP
    other = httpx.options(
        f"{layer.base_url}/api/albums",
        headers={**asked, "Origin": "http://evil.example"},
        timeout=10,
    )
    assert "access-control-allow-origin" not in other.headers
