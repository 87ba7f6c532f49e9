"""DICOM folder reading: grouping, slice order, units (HU, SUV), and readable failures."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from tests.workers.extraction_support import STS, Geometry, write_series
from workers.extraction.dicom import ExtractionError, modality_label, read_image, scan_folder

SMALL = Geometry(
    rows=8,
    columns=10,
    slices=6,
    row_spacing=4.0,
    column_spacing=4.0,
    slice_spacing=3.0,
    origin=(10.0, -20.0, 100.0),
)
HALF_LIFE = 6586.2
DOSE = 370e6
WEIGHT = 70.0
ACTIVITY = 5000.0  # Bq/ml


def _pet_tags(
    units: str = "BQML",
    *,
    weight: float | None = WEIGHT,
    dose: float | None = DOSE,
    decay: str = "START",
):
    """Return an `extra` callback that makes a slice a PET slice with these tags."""

    def extra(ds: Dataset, k: int) -> None:
        ds.Units = units
        ds.DecayCorrection = decay
        ds.CorrectedImage = ["DECY", "ATTN"]
        ds.SeriesDate, ds.SeriesTime = "20240102", "110000"
        ds.AcquisitionDate, ds.AcquisitionTime = "20240102", f"1100{k:02d}"
        if weight is not None:
            ds.PatientWeight = weight
        info = Dataset()
        info.RadiopharmaceuticalStartTime = "100000.00"
        info.RadionuclideHalfLife = HALF_LIFE
        if dose is not None:
            info.RadionuclideTotalDose = dose
        ds.RadiopharmaceuticalInformationSequence = DicomSequence([info])
        if units == "CNTS":
            block = ds.private_block(0x7053, "Philips PET Private Group", create=True)
            block.add_new(0x00, "DS", "0.0025")

    return extra


def _pet(folder, **tags) -> tuple[sitk.Image, list[str]]:
    write_series(
        folder,
        SMALL,
        lambda k: np.full((8, 10), ACTIVITY),
        modality="PT",
        slope=0.5,
        extra=_pet_tags(**tags),
    )
    [series] = scan_folder(folder)
    return read_image(series, fallback_weight=80.0 if tags.get("weight", 1) is None else None)


def test_suv_from_bqml_uses_weight_dose_and_decay(tmp_path):
    image, warnings = _pet(tmp_path)
    decay = 2 ** (-3600.0 / HALF_LIFE)  # injection 10:00, series 11:00
    expected = ACTIVITY * WEIGHT * 1000 / (DOSE * decay)
    assert warnings == []
    assert sitk.GetArrayFromImage(image) == pytest.approx(expected, rel=1e-5)


def test_suv_with_admin_decay_correction_has_no_decay_factor(tmp_path):
    image, _ = _pet(tmp_path, decay="ADMIN")
    expected = ACTIVITY * WEIGHT * 1000 / DOSE
    assert sitk.GetArrayFromImage(image) == pytest.approx(expected, rel=1e-5)


def test_missing_weight_falls_back_to_the_study_with_a_warning(tmp_path):
    image, warnings = _pet(tmp_path, weight=None)
    decay = 2 ** (-3600.0 / HALF_LIFE)
    assert sitk.GetArrayFromImage(image) == pytest.approx(
        ACTIVITY * 80.0 * 1000 / (DOSE * decay), rel=1e-5
    )
    assert len(warnings) == 1 and "PatientWeight" in warnings[0] and "80 kg" in warnings[0]


def test_missing_weight_without_fallback_is_an_error(tmp_path):
    write_series(
        tmp_path,
        SMALL,
        lambda k: np.full((8, 10), ACTIVITY),
        modality="PT",
        extra=_pet_tags(weight=None),
    )
    [series] = scan_folder(tmp_path)
    with pytest.raises(ExtractionError, match="no PatientWeight"):
        read_image(series)


def test_missing_dose_is_an_error_naming_the_tag(tmp_path):
    with pytest.raises(ExtractionError, match="lacks RadionuclideTotalDose"):
        _pet(tmp_path, dose=None)


def test_gml_is_already_suv(tmp_path):
    image, _ = _pet(tmp_path, units="GML")
    assert sitk.GetArrayFromImage(image) == pytest.approx(ACTIVITY)  # slope applied only


def test_philips_cnts_uses_the_private_suv_factor(tmp_path):
    image, _ = _pet(tmp_path, units="CNTS")
    assert sitk.GetArrayFromImage(image) == pytest.approx(ACTIVITY * 0.0025)


@pytest.mark.parametrize("units", ["PROPCNTS", ""])
def test_other_pet_units_are_refused(tmp_path, units):
    with pytest.raises(ExtractionError, match="SUV conversion supports BQML, GML and Philips"):
        _pet(tmp_path, units=units)


def test_sts_pet_is_gml_and_read_in_suv():
    [pet] = [s for s in scan_folder(STS / "STS_002" / "PET" / "image")]
    image, warnings = read_image(pet)
    values = sitk.GetArrayFromImage(image)
    assert pet.modality == "PT" and warnings == []
    assert values.min() >= 0 and 5 < values.max() < 50  # body-weight SUV of an FDG sarcoma


def test_slices_are_sorted_by_position_and_a_gap_is_filled(tmp_path):
    rng = np.random.default_rng(3)
    geometry = Geometry(**{**SMALL.__dict__, "slices": 7})
    write_series(tmp_path, geometry, lambda k: np.full((8, 10), 10.0 * k), order=rng.permutation(7))
    (tmp_path / "img_003.dcm").unlink()  # lose one slice in the middle
    [series] = scan_folder(tmp_path)
    image, warnings = read_image(series)
    assert image.GetSize() == (10, 8, 7)
    assert image.GetSpacing()[2] == pytest.approx(3.0)
    column = sitk.GetArrayFromImage(image)[:, 0, 0]
    assert column == pytest.approx(10.0 * np.arange(7))  # the gap is interpolated
    assert len(warnings) == 1 and "filled 1 missing slice" in warnings[0]


def test_irregular_spacing_is_refused(tmp_path):
    def shift(ds: Dataset, k: int) -> None:
        if k == 3:
            ds.ImagePositionPatient = [10.0, -20.0, 100.0 + 3 * 3.0 + 1.2]

    write_series(tmp_path, SMALL, lambda k: np.zeros((8, 10)), extra=shift)
    [series] = scan_folder(tmp_path)
    with pytest.raises(ExtractionError, match="irregular slice spacing"):
        read_image(series)


def test_non_dicom_files_and_dicomdir_are_skipped(tmp_path):
    write_series(tmp_path / "ct", SMALL, lambda k: np.zeros((8, 10)))
    (tmp_path / "README.txt").write_text("not a DICOM file")
    (tmp_path / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    [series] = scan_folder(tmp_path)
    assert series.modality == "CT" and len(series.paths) == SMALL.slices
    assert series.patient_id == "SYN-001"


def test_corrupt_pixel_data_names_the_file(tmp_path):
    write_series(tmp_path, SMALL, lambda k: np.zeros((8, 10)))
    broken = tmp_path / "img_002.dcm"
    broken.write_bytes(broken.read_bytes()[:-60])  # truncated inside the pixel data
    [series] = scan_folder(tmp_path)
    with pytest.raises(ExtractionError, match=r"img_002\.dcm"):
        read_image(series)


@pytest.mark.parametrize("keep", [300, 520])
def test_truncated_header_names_the_file(tmp_path, keep):
    write_series(tmp_path, SMALL, lambda k: np.zeros((8, 10)))
    broken = tmp_path / "img_004.dcm"
    broken.write_bytes(broken.read_bytes()[:keep])  # cut inside the meta header / dataset
    with pytest.raises(ExtractionError, match=r"img_004\.dcm is corrupt"):
        scan_folder(tmp_path)


def test_single_slice_series_is_refused(tmp_path):
    write_series(tmp_path, Geometry(**{**SMALL.__dict__, "slices": 1}), lambda k: np.zeros((8, 10)))
    [series] = scan_folder(tmp_path)
    with pytest.raises(ExtractionError, match="at least two"):
        read_image(series)


def test_mr_keeps_its_stored_values(tmp_path):
    src = STS / "STS_002" / "MR_T1" / "image"
    shutil.copytree(src, tmp_path / "mr")
    [mr] = scan_folder(tmp_path)
    image, _ = read_image(mr)
    stored = max(int(pydicom.dcmread(path).pixel_array.max()) for path in mr.paths)
    assert sitk.GetArrayFromImage(image).max() == stored
    assert mr.label(submodalities=True) == "MR"  # no ' --- ' in its description


@pytest.mark.parametrize(
    ("description", "submodalities", "label"),
    [
        ("Abdomen --- T1", True, "MR_T1"),
        ("Abdomen --- T1", False, "MR"),
        ("Abdomen - T1", True, "MR"),
        ("x --- ", True, "MR"),
        (None, True, "MR"),
    ],
)
def test_modality_label(description, submodalities, label):
    assert modality_label("MR", description, submodalities) == label
