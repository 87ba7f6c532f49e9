"""The local-folder source on copies of STS patients and on a synthetic cohort."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pydicom
import pytest

from shared.config import Settings
from shared.errors import NotFound
from shared.imaging.factory import image_source, local_albums_root
from shared.imaging.local import LocalFolderSource
from shared.imaging.source import (
    MODALITIES_IN_STUDY,
    PATIENT_ID,
    PATIENT_NAME,
    ROI_NAME,
    SEGMENT_DESCRIPTION,
    SEGMENT_SEQUENCE,
    STRUCTURE_SET_ROI_SEQUENCE,
    STUDY_DATE,
    STUDY_UID,
)

PATIENTS = ("STS_002", "STS_003", "STS_008")


@pytest.fixture(scope="module")
def root(sts_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """albums/sts (three STS patients, plus a non-DICOM file) and albums/synthetic."""
    base = tmp_path_factory.mktemp("albums")
    for patient in PATIENTS:
        shutil.copytree(sts_dir / patient, base / "sts" / patient)
    (base / "sts" / "README.txt").write_text("not DICOM")
    return base


@pytest.fixture
def source(root: Path) -> LocalFolderSource:
    return LocalFolderSource(root, rescan_seconds=0)


def test_albums_are_sub_folders(source, root, synthetic_cohort):
    os.symlink(synthetic_cohort.root, root / "linked")  # symlinked albums are not listed
    try:
        assert [a.album_id for a in source.list_albums()] == ["sts"]
    finally:
        (root / "linked").unlink()
    album = source.album("sts")
    assert (album.name, album.number_of_studies) == ("sts", 3)


def test_studies_have_the_kheops_qido_shape(source, sts_studies):
    studies = source.list_studies("sts")
    assert sorted(s.patient_id for s in studies) == list(PATIENTS)
    study = next(s for s in studies if s.patient_id == "STS_002")
    obj = study.dicom_json
    assert obj[STUDY_UID] == {"vr": "UI", "Value": [sts_studies["STS_002"]]}
    assert obj[PATIENT_ID]["Value"] == ["STS_002"]
    assert obj[PATIENT_NAME]["Value"] == [{"Alphabetic": "STS_002"}]
    assert obj[STUDY_DATE]["Value"] == ["20060128"]
    assert obj[MODALITIES_IN_STUDY]["Value"] == ["CT", "MR", "PT", "RTSTRUCT"]


def test_series_metadata_and_download(source, sts_studies, tmp_path):
    study = sts_studies["STS_003"]
    contours = source.list_series("sts", study, ("RTSTRUCT", "SEG"))
    assert len(contours) == 3
    names = set()
    for series in contours:
        (metadata,) = source.series_metadata("sts", study, series.series_uid)
        assert "7FE00010" not in metadata
        names |= {i[ROI_NAME]["Value"][0] for i in metadata[STRUCTURE_SET_ROI_SEQUENCE]["Value"]}
    assert names == {"GTV_Mass_CT", "GTV_Mass_PET", "GTV_Mass_MR_T1"}

    ct = next(s for s in source.list_series("sts", study) if s.modality == "CT")
    files = source.download_series("sts", study, ct.series_uid, tmp_path / "ct")
    assert len(files) == ct.number_of_instances
    numbers = [int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber) for f in files]
    assert numbers == sorted(numbers)
    shutil.rmtree(tmp_path / "ct")  # the album's own files are untouched
    assert len(source.list_series("sts", study, ("CT",))) == 1


def test_unknown_and_escaping_album_ids(source, root):
    outside = root.parent / "outside"
    outside.mkdir(exist_ok=True)
    for album_id in ("..", "../outside", "sts/STS_002", "/etc", ".hidden", "", " ", "nope"):
        with pytest.raises(NotFound):
            source.list_studies(album_id)
    os.symlink(outside, root / "escape")
    try:
        with pytest.raises(NotFound):
            source.list_studies("escape")
    finally:
        (root / "escape").unlink()


def test_study_of_another_album_is_not_found(source, root, synthetic_cohort, sts_studies):
    shutil.copytree(synthetic_cohort.root, root / "synthetic")
    try:
        with pytest.raises(NotFound):
            source.list_series("synthetic", sts_studies["STS_002"])
        with pytest.raises(NotFound):
            source.series_metadata("sts", sts_studies["STS_002"], "1.2.3")
    finally:
        shutil.rmtree(root / "synthetic")


def test_symlinked_files_are_not_served(source, root, sts_dir):
    album = root / "links"
    album.mkdir()
    os.symlink(sts_dir / "STS_012" / "CT" / "mask" / "RS.dcm", album / "RS.dcm")
    try:
        assert source.list_studies("links") == []
    finally:
        shutil.rmtree(album)


def test_index_follows_the_folder(source, root, sts_dir):
    assert source.album("sts").number_of_studies == 3
    shutil.copytree(sts_dir / "STS_012", root / "sts" / "STS_012")
    assert source.album("sts").number_of_studies == 4
    rs = root / "sts" / "STS_012" / "PET" / "mask" / "RS.dcm"
    ds = pydicom.dcmread(rs)
    ds.StructureSetROISequence[0].ROIName = "Renamed"
    time.sleep(0.01)  # a new mtime even on coarse clocks
    ds.save_as(rs)
    study = str(ds.StudyInstanceUID)
    names = {
        item[ROI_NAME]["Value"][0]
        for series in source.list_series("sts", study, ("RTSTRUCT",))
        for item in source.series_metadata("sts", study, series.series_uid)[0][
            STRUCTURE_SET_ROI_SEQUENCE
        ]["Value"]
    }
    assert "Renamed" in names
    shutil.rmtree(root / "sts" / "STS_012")
    assert source.album("sts").number_of_studies == 3


def test_synthetic_cohort_through_the_local_source(synthetic_cohort, tmp_path):
    shutil.copytree(synthetic_cohort.root, tmp_path / "demo")
    source = LocalFolderSource(tmp_path, rescan_seconds=0)
    studies = source.list_studies("demo")
    truths = {t.study_uid: t for t in synthetic_cohort.truths}
    assert {s.study_uid for s in studies} == set(truths)
    assert all(s.patient_id == truths[s.study_uid].patient_id for s in studies)
    study = studies[0].study_uid
    seg = source.list_series("demo", study, ("SEG",))
    assert len(seg) == 1
    (metadata,) = source.series_metadata("demo", study, seg[0].series_uid)
    segment = metadata[SEGMENT_SEQUENCE]["Value"][0]
    assert segment[SEGMENT_DESCRIPTION]["Value"] == ["GTV"]
    assert {s.modality for s in source.list_series("demo", study)} == {"CT", "RTSTRUCT", "SEG"}


def test_factory_picks_the_local_folder(tmp_path):
    source = image_source(Settings(image_source="local", local_albums_dir=tmp_path))
    assert isinstance(source, LocalFolderSource) and source.root == tmp_path
    default = Settings(image_source="local", data_dir=tmp_path, local_albums_dir=None)
    assert local_albums_root(default) == tmp_path / "albums"


def test_index_is_rechecked_after_the_rescan_interval(root, sts_dir):
    staged = root.parent / "staged-STS_015"
    shutil.copytree(sts_dir / "STS_015", staged)
    source = LocalFolderSource(root, rescan_seconds=0.3)
    assert source.album("sts").number_of_studies == 3
    staged.rename(root / "sts" / "STS_015")  # appears at once, however slow copying is
    try:
        assert source.album("sts").number_of_studies == 3  # within the interval: cached
        time.sleep(0.35)
        assert source.album("sts").number_of_studies == 4
    finally:
        shutil.rmtree(root / "sts" / "STS_015")
