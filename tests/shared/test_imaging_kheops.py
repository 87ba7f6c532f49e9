"""The Kheops client over real HTTP: the dev Kheops layer before Orthanc with ten STS patients."""

from __future__ import annotations

import datetime as dt
import logging
import zipfile

import pydicom
import pytest

from devkit.kheops_layer import utcnow
from devkit.oidc_issuer import new_rsa_key
from shared.errors import Forbidden, NotFound
from shared.imaging.kheops import KheopsSource, extract_series, kheops_time
from shared.imaging.source import (
    MODALITIES_IN_STUDY,
    PATIENT_NAME,
    ROI_NAME,
    STRUCTURE_SET_ROI_SEQUENCE,
)
from tests.support.fixtures import PRIVATE_PATIENTS, SMALL_PATIENTS

ROI_NAMES = {"GTV_Mass_CT", "GTV_Mass_PET", "GTV_Mass_MR_T1"}


@pytest.fixture
def bob(kheops_layer, auth) -> KheopsSource:
    """Bob's client (member of sts, sts-small, sts-query)."""
    return KheopsSource(kheops_layer.base_url, auth.token("bob"), timeout=10, retries=1)


def in_an_hour() -> dt.datetime:
    return utcnow() + dt.timedelta(hours=1)


def roi_names(metadata: list[dict]) -> set[str]:
    """Collect RTSTRUCT ROI names from series metadata."""
    return {
        item[ROI_NAME]["Value"][0]
        for instance in metadata
        for item in instance.get(STRUCTURE_SET_ROI_SEQUENCE, {}).get("Value", [])
    }


def test_album_listing_shows_only_the_users_albums(bob):
    albums = {a.album_id: a for a in bob.list_albums()}
    assert set(albums) == {"sts", "sts-small", "sts-query"}
    assert albums["sts"].number_of_studies == 10
    assert albums["sts-query"].number_of_studies == 4  # PatientID STS_01*


def test_album_details_and_studies(bob, sts_studies):
    album = bob.album("sts")
    assert (album.name, album.number_of_studies) == ("STS sarcoma", 10)
    studies = bob.list_studies("sts")
    assert {s.patient_id for s in studies} == set(sts_studies)
    assert {s.study_uid for s in studies} == set(sts_studies.values())
    first = studies[0].dicom_json
    assert first[PATIENT_NAME]["Value"][0]["Alphabetic"] == studies[0].patient_id
    assert {"CT", "PT", "MR", "RTSTRUCT"} <= set(first[MODALITIES_IN_STUDY]["Value"])


def test_studies_follow_server_paging(bob, kheops_layer):
    kheops_layer.page_size = 3
    try:
        assert len(bob.list_studies("sts")) == 10
        assert len(bob.list_albums()) == 3
    finally:
        kheops_layer.page_size = None


def test_rtstruct_series_and_roi_names_from_metadata(bob, sts_studies):
    study = sts_studies["STS_002"]
    contours = bob.list_series("sts", study, ("RTSTRUCT", "SEG"))
    assert len(contours) == 3 and {s.modality for s in contours} == {"RTSTRUCT"}
    names = set()
    for series in contours:
        metadata = bob.series_metadata("sts", study, series.series_uid)
        assert len(metadata) == 1 and "7FE00010" not in metadata[0]
        names |= roi_names(metadata)
    assert names == ROI_NAMES


def test_wado_rs_download_gives_files_pydicom_reads(bob, sts_studies, tmp_path):
    study = sts_studies["STS_003"]
    ct = next(s for s in bob.list_series("sts", study) if s.modality == "CT")
    files = bob.download_series("sts", study, ct.series_uid, tmp_path / "ct")
    assert len(files) == ct.number_of_instances
    assert all(f.parent == tmp_path / "ct" for f in files)
    for path in files[:3]:
        ds = pydicom.dcmread(path)
        assert str(ds.SeriesInstanceUID) == ct.series_uid
        assert ds.pixel_array.shape == (ds.Rows, ds.Columns)


def test_zip_fallback_when_wado_rs_fails(bob, kheops_layer, sts_studies, tmp_path, caplog):
    study = sts_studies["STS_008"]
    rtstruct = bob.list_series("sts", study, ("RTSTRUCT",))[0]
    kheops_layer.wado_rs_enabled = False
    caplog.set_level(logging.WARNING)
    try:
        files = bob.download_series("sts", study, rtstruct.series_uid, tmp_path / "rs")
    finally:
        kheops_layer.wado_rs_enabled = True
    assert "using the study ZIP" in caplog.text
    assert len(files) == 1
    assert str(pydicom.dcmread(files[0]).SeriesInstanceUID) == rtstruct.series_uid


def test_zip_route_keeps_only_the_series(bob, sts_studies, tmp_path):
    study = sts_studies["STS_012"]
    pet = next(s for s in bob.list_series("sts", study) if s.modality == "PT")
    files = bob.download_series_from_zip("sts", study, pet.series_uid, tmp_path / "pet")
    assert len(files) == pet.number_of_instances
    assert sorted(p.name for p in (tmp_path / "pet").iterdir()) == sorted(p.name for p in files)


def test_zip_entries_never_become_paths(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("DICOM/../../escape.dcm", b"not dicom")
        zf.writestr("README.txt", b"hello")
    dest = tmp_path / "out"
    dest.mkdir()
    assert extract_series(archive, "1.2.3", dest) == []
    assert not (tmp_path / "escape.dcm").exists() and list(dest.iterdir()) == []


def test_album_capability_works_only_for_its_album(bob, kheops_layer, sts_studies, tmp_path):
    capability_id, secret = bob.create_capability("sts", "quantimage-extraction-sts", in_an_hour())
    stored = kheops_layer.capabilities[capability_id]
    assert (stored.scope_type, stored.album_id) == ("album", "sts")
    assert (stored.read, stored.download, stored.write) == (True, True, False)

    worker = KheopsSource(kheops_layer.base_url, secret, timeout=10, retries=0)
    assert [a.album_id for a in worker.list_albums()] == ["sts"]
    study = sts_studies["STS_002"]
    assert len(worker.list_studies("sts")) == 10
    rtstruct = worker.list_series("sts", study, ("RTSTRUCT",))[0]
    assert worker.download_series("sts", study, rtstruct.series_uid, tmp_path / "rs")
    with pytest.raises(Forbidden, match="access denied"):
        worker.list_studies("sts-small")
    with pytest.raises(Forbidden):
        worker.series_metadata("sts-small", study, rtstruct.series_uid)
    with pytest.raises(Forbidden):  # a capability cannot mint capabilities
        worker.create_capability("sts", "again", in_an_hour())

    bob.revoke_capability(capability_id)
    with pytest.raises(Forbidden):
        worker.list_studies("sts")


def test_non_admin_gets_a_read_only_user_capability(bob, kheops_layer):
    capability_id, secret = bob.create_capability("sts-small", "extraction", in_an_hour())
    stored = kheops_layer.capabilities[capability_id]
    assert (stored.scope_type, stored.album_id) == ("user", None)
    assert (stored.read, stored.write) == (True, False)
    worker = KheopsSource(kheops_layer.base_url, secret, timeout=10, retries=0)
    assert len(worker.list_studies("sts-small")) == len(SMALL_PATIENTS)
    with pytest.raises(Forbidden):  # still limited to what Bob may see
        worker.list_studies("private")


def test_expired_capability_is_refused(bob, kheops_layer):
    capability_id, secret = bob.create_capability("sts", "short", in_an_hour())
    kheops_layer.capabilities[capability_id].expires_at = utcnow() - dt.timedelta(seconds=1)
    with pytest.raises(Forbidden, match="access denied"):
        KheopsSource(kheops_layer.base_url, secret, retries=0).list_studies("sts")


@pytest.mark.parametrize("kind", ["garbage", "expired", "foreign-key", "none"])
def test_wrong_or_expired_tokens_are_refused(kheops_layer, issuer, kind):
    token = {
        "garbage": "not-a-capability",
        "expired": issuer.mint("bob", ttl=-120),
        "foreign-key": issuer.sign(issuer.claims_for(issuer.users["bob"]), key=new_rsa_key()),
        "none": None,
    }[kind]
    source = KheopsSource(kheops_layer.base_url, token, retries=0)
    with pytest.raises(Forbidden) as caught:
        source.list_studies("sts")
    if token:
        assert token not in caught.value.message


def test_other_users_albums_and_studies_stay_closed(bob, sts_studies):
    with pytest.raises(Forbidden):
        bob.album("private")
    with pytest.raises(NotFound):
        bob.album("no-such-album")
    private_study = sts_studies[PRIVATE_PATIENTS[0]]
    with pytest.raises(NotFound):  # not in sts-small, even though Bob sees it through sts
        bob.list_series("sts-small", private_study)


def test_kheops_time_format():
    moment = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert kheops_time(moment) == "2026-01-02T01:04:05Z"
    assert kheops_time(dt.datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z"


def test_source_repr_hides_the_token(kheops_layer):
    assert "secret-token" not in repr(KheopsSource(kheops_layer.base_url, "secret-token"))
