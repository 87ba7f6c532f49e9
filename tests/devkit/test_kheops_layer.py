"""The dev Kheops layer's own HTTP behaviour: Kheops' routes, paging, tokens and capabilities."""

from __future__ import annotations

import datetime as dt
import io
import zipfile

import httpx
import pydicom
import pytest

from devkit.kheops_layer import utcnow
from shared.imaging.dicomweb import MULTIPART_DICOM, MultipartReader, multipart_boundary
from shared.imaging.source import MODALITY, PATIENT_ID, PATIENT_NAME, SERIES_UID, STUDY_UID
from tests.support.fixtures import PRIVATE_PATIENTS, SMALL_PATIENTS


class Api:
    """httpx calls to the layer as one user (or with a raw token)."""

    def __init__(self, base_url: str, token: str | None) -> None:
        self.base = f"{base_url}/api"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        return httpx.get(f"{self.base}{path}", headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]

    def post(self, path: str, data: dict[str, str]) -> httpx.Response:
        return httpx.post(f"{self.base}{path}", headers=self.headers, data=data, timeout=30)

    def delete(self, path: str) -> httpx.Response:
        return httpx.delete(f"{self.base}{path}", headers=self.headers, timeout=30)


@pytest.fixture
def as_user(kheops_layer, auth):
    return lambda name: Api(kheops_layer.base_url, auth.token(name))


def capability_form(album: str, **fields: str) -> dict[str, str]:
    expires = (utcnow() + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    form = {
        "title": "test",
        "scope_type": "album",
        "album": album,
        "read_permission": "true",
        "download_permission": "true",
        "expiration_time": expires,
    }
    return {**form, **fields}


def test_no_or_bad_token_is_401_with_json(kheops_layer, issuer):
    for token in (None, "x.y.z", issuer.mint("bob", ttl=-120)):
        response = Api(kheops_layer.base_url, token).get("/albums")
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "error" in response.json()


def test_albums_per_user(as_user):
    alice = as_user("alice").get("/albums")
    assert alice.status_code == 200
    assert [a["album_id"] for a in alice.json()] == ["private", "sts"]
    assert alice.headers["X-Total-Count"] == "2"
    album = next(a for a in alice.json() if a["album_id"] == "private")
    assert album["number_of_studies"] == len(PRIVATE_PATIENTS)
    assert {"CT", "MR", "PT", "RTSTRUCT"} <= set(album["modalities"])
    assert as_user("bob").get("/albums/private").status_code == 403
    assert as_user("bob").get("/albums/unknown").status_code == 404


def test_studies_paging_and_the_frontends_study_lookup(as_user, sts_studies):
    bob = as_user("bob")
    page = bob.get("/studies", params={"album": "sts", "limit": 4, "offset": 8})
    assert page.status_code == 200 and page.headers["X-Total-Count"] == "10"
    assert len(page.json()) == 2
    uid = sts_studies["STS_002"]
    found = bob.get("/studies/", params={"StudyInstanceUID": uid}).json()
    assert [s[STUDY_UID]["Value"][0] for s in found] == [uid]
    assert found[0][PATIENT_NAME]["Value"][0]["Alphabetic"] == "STS_002"
    outsider = {"album": "sts-small", "StudyInstanceUID": sts_studies[PRIVATE_PATIENTS[0]]}
    assert bob.get("/studies", params=outsider).json() == []
    by_patient = bob.get("/studies", params={"album": "sts", "PatientID": "STS_01*"}).json()
    assert sorted(s[PATIENT_ID]["Value"][0] for s in by_patient) == [
        "STS_012",
        "STS_015",
        "STS_018",
        "STS_019",
    ]


@pytest.mark.parametrize(
    "params",
    [
        [("album", "sts"), (MODALITY, "RTSTRUCT"), (MODALITY, "SEG")],
        [("album", "sts"), ("Modality", "RTSTRUCT,SEG")],
    ],
)
def test_series_modality_filters(as_user, sts_studies, params):
    response = as_user("bob").get(f"/studies/{sts_studies['STS_015']}/series", params=params)
    assert response.status_code == 200
    assert [s[MODALITY]["Value"][0] for s in response.json()] == ["RTSTRUCT"] * 3


def test_study_outside_the_album_is_404(as_user, sts_studies):
    uid = sts_studies[PRIVATE_PATIENTS[0]]
    response = as_user("bob").get(f"/studies/{uid}/series", params={"album": "sts-small"})
    assert response.status_code == 404
    # Without an album, any album of the user that holds the study will do.
    assert as_user("bob").get(f"/studies/{uid}/series").status_code == 200
    assert as_user("carol").get(f"/studies/{uid}/series").status_code == 404


def test_study_zip_has_dicom_entries(as_user, sts_studies):
    uid = sts_studies[SMALL_PATIENTS[0]]
    response = as_user("bob").get(
        f"/studies/{uid}", params={"accept": "application/zip", "album": "sts-small"}
    )
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == f"attachment; filename={uid}.zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = archive.namelist()
        dicom = [n for n in names if n.startswith("DICOM/")]
        assert "README.txt" in names and len(dicom) == len(names) - 1
        first = pydicom.dcmread(io.BytesIO(archive.read(dicom[0])), stop_before_pixels=True)
    assert str(first.StudyInstanceUID) == uid
    series = as_user("bob").get(f"/studies/{uid}/series").json()
    assert len(dicom) == sum(int(s["00201209"]["Value"][0]) for s in series)


def test_wado_rs_instance_is_streamed_multipart(as_user, sts_studies):
    bob = as_user("bob")
    uid = sts_studies["STS_018"]
    series = bob.get(f"/studies/{uid}/series", params={"Modality": "RTSTRUCT"}).json()[0]
    series_uid = series[SERIES_UID]["Value"][0]
    metadata = bob.get(f"/studies/{uid}/series/{series_uid}/metadata").json()
    sop = metadata[0]["00080018"]["Value"][0]
    response = bob.get(
        f"/studies/{uid}/series/{series_uid}/instances/{sop}", headers={"Accept": MULTIPART_DICOM}
    )
    assert response.status_code == 200
    parts: list[io.BytesIO] = []

    def sink(headers: dict[str, str]) -> io.BytesIO:
        assert headers["content-type"] == "application/dicom"
        parts.append(KeepOpen())
        return parts[-1]

    reader = MultipartReader(multipart_boundary(response.headers["content-type"]), sink)
    reader.feed(response.content)
    assert reader.finish() == 1
    assert str(pydicom.dcmread(io.BytesIO(parts[0].getvalue())).SOPInstanceUID) == sop


class KeepOpen(io.BytesIO):
    """A BytesIO whose content survives close()."""

    def close(self) -> None:
        pass


def test_capability_lifecycle(as_user, kheops_layer):
    bob = as_user("bob")
    created = bob.post("/capabilities", capability_form("sts"))
    assert created.status_code == 201
    body = created.json()
    assert body["scope_type"] == "album" and body["album"]["id"] == "sts"
    assert body["write_permission"] is False and body["secret"]
    capability = Api(kheops_layer.base_url, body["secret"])
    assert [a["album_id"] for a in capability.get("/albums").json()] == ["sts"]
    assert capability.get("/albums/sts-small").status_code == 403
    assert capability.post("/capabilities", capability_form("sts")).status_code == 403
    assert capability.delete(f"/capabilities/{body['id']}").status_code == 403
    assert as_user("alice").delete(f"/capabilities/{body['id']}").status_code == 404
    assert bob.get(f"/capabilities/{body['id']}").json()["revoked"] is False
    revoked = bob.delete(f"/capabilities/{body['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    assert capability.get("/albums").status_code == 401
    assert "secret" not in revoked.json()


def test_capability_permissions(as_user, kheops_layer, sts_studies):
    bob = as_user("bob")
    no_download = bob.post("/capabilities", capability_form("sts", download_permission="false"))
    token = Api(kheops_layer.base_url, no_download.json()["secret"])
    uid = sts_studies["STS_019"]
    zip_params = {"accept": "application/zip", "album": "sts"}
    assert token.get(f"/studies/{uid}", params=zip_params).status_code == 403
    assert token.get(f"/studies/{uid}/series").status_code == 200
    no_read = bob.post("/capabilities", capability_form("sts", read_permission="false"))
    blind = Api(kheops_layer.base_url, no_read.json()["secret"])
    assert blind.get("/albums").json() == []
    assert blind.get("/studies", params={"album": "sts"}).status_code == 403


def test_capability_form_is_validated(as_user):
    bob = as_user("bob")
    assert bob.post("/capabilities", {"title": "x"}).status_code == 400
    past = capability_form("sts", expiration_time="2000-01-01T00:00:00Z")
    assert bob.post("/capabilities", past).status_code == 400
    assert bob.post("/capabilities", capability_form("private")).status_code == 403
    # Kheops answers 401 when a non-admin asks for an album-scoped token.
    assert bob.post("/capabilities", capability_form("sts-small")).status_code == 401
    legacy = {"title": "t", "scope_type": "user", "read_permission": "true"}
    assert bob.post("/capabilities", legacy).status_code == 201


def test_kheops_revoke_route(as_user):
    bob = as_user("bob")
    capability_id = bob.post("/capabilities", capability_form("sts")).json()["id"]
    response = httpx.post(
        f"{bob.base}/capabilities/{capability_id}/revoke", headers=bob.headers, timeout=10
    )
    assert response.status_code == 200 and response.json()["revoked"] is True


def test_unknown_route_is_json_404(as_user):
    response = as_user("bob").get("/nothing-here")
    assert response.status_code == 404 and response.json() == {"error": "Not found"}
