"""The synthetic cohort: speed, determinism, geometry, contours, SEG, and the hidden signal."""

from __future__ import annotations

import time
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from devkit.synthetic import Geometry, PatientTruth, Tumour, tumour_mask, write_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[PatientTruth], float]:
    """100 patients (RTSTRUCT only), timed."""
    root = tmp_path_factory.mktemp("cohort100")
    started = time.perf_counter()
    truths = write_cohort(root, 100, seed=3)
    return root, truths, time.perf_counter() - started


def read_ct(folder: Path) -> tuple[np.ndarray, list[pydicom.Dataset]]:
    """Read a CT folder into a (slices, rows, columns) HU array, sorted by z."""
    slices = sorted(
        (pydicom.dcmread(p) for p in folder.glob("*.dcm")),
        key=lambda ds: float(ds.ImagePositionPatient[2]),
    )
    # Plain int16 frames (checked against pixel_array in the geometry test): faster to decode.
    volume = np.stack(
        [np.frombuffer(ds.PixelData, "<i2").reshape(ds.Rows, ds.Columns) for ds in slices]
    )
    return volume.astype(float), slices


def rasterise(rtstruct: pydicom.Dataset, slices: list[pydicom.Dataset]) -> np.ndarray:
    """Voxel centres inside each slice's contour (even-odd rule), matched by z position."""
    first = slices[0]
    rows, columns = first.Rows, first.Columns
    dy, dx = (float(v) for v in first.PixelSpacing)
    x0, y0 = float(first.ImagePositionPatient[0]), float(first.ImagePositionPatient[1])
    xs = x0 + np.arange(columns) * dx
    ys = y0 + np.arange(rows) * dy
    px, py = np.meshgrid(xs, ys)
    zs = np.array([float(s.ImagePositionPatient[2]) for s in slices])
    mask = np.zeros((len(slices), rows, columns), dtype=bool)
    for contour in rtstruct.ROIContourSequence[0].ContourSequence:
        assert contour.ContourGeometricType == "CLOSED_PLANAR"
        points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
        k = int(np.argmin(np.abs(zs - points[0, 2])))
        inside = np.zeros_like(px, dtype=bool)
        for (xa, ya, _), (xb, yb, _) in zip(points, np.roll(points, -1, axis=0), strict=True):
            crosses = (ya > py) != (yb > py)
            x_cut = (xb - xa) * (py - ya) / np.where(yb == ya, 1, yb - ya) + xa
            inside ^= crosses & (px < x_cut)
        mask[k] ^= inside
    return mask


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (rank formula, no ties expected)."""
    ranks = np.empty(len(scores))
    ranks[np.argsort(scores)] = np.arange(1, len(scores) + 1)
    positives = labels.astype(bool)
    n1, n0 = positives.sum(), (~positives).sum()
    return float((ranks[positives].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def c_index(risk: np.ndarray, time_: np.ndarray, event: np.ndarray) -> float:
    """Harrell's C: among comparable pairs, how often the higher risk fails first."""
    concordant = comparable = 0.0
    for i in np.flatnonzero(event):
        later = time_ > time_[i]
        comparable += later.sum()
        concordant += (risk[i] > risk[later]).sum() + 0.5 * (risk[i] == risk[later]).sum()
    return concordant / comparable


def test_one_hundred_patients_take_a_few_seconds(cohort):
    root, truths, seconds = cohort
    assert len(truths) == 100 and seconds < 8, f"took {seconds:.1f} s"
    assert len(list(root.glob("SYN_*/CT/*.dcm"))) == 100 * Geometry().slices
    assert len({t.study_uid for t in truths}) == 100


def test_same_seed_same_cohort(tmp_path):
    first = write_cohort(tmp_path / "a", 3, seed=11)
    again = write_cohort(tmp_path / "b", 3, seed=11)
    other = write_cohort(tmp_path / "c", 3, seed=12)
    assert first == again and first != other
    same = [(tmp_path / d / "SYN_001" / "RS.dcm").read_bytes() for d in ("a", "b")]
    assert same[0] == same[1]


def test_ct_geometry_is_non_square_and_anisotropic(cohort):
    root, truths, _ = cohort
    volume, slices = read_ct(root / truths[0].patient_id / "CT")
    geometry = Geometry()
    assert volume.shape == (geometry.slices, geometry.rows, geometry.columns) == (12, 40, 48)
    ds = slices[0]
    assert [float(v) for v in ds.PixelSpacing] == [0.9, 0.8]
    assert float(ds.SliceThickness) == 2.5
    assert [float(v) for v in ds.ImagePositionPatient] == list(geometry.origin)
    assert str(ds.StudyInstanceUID) == truths[0].study_uid
    assert ds.PatientID == truths[0].patient_id
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert (ds.RescaleSlope, ds.RescaleIntercept, ds.PixelRepresentation) == (1, 0, 1)
    assert np.array_equal(ds.pixel_array, volume[0])


def test_rtstruct_contours_match_the_textured_region(cohort):
    root, truths, _ = cohort
    for truth in truths[:5]:
        volume, slices = read_ct(root / truth.patient_id / "CT")
        rtstruct = pydicom.dcmread(root / truth.patient_id / "RS.dcm")
        assert rtstruct.StructureSetROISequence[0].ROIName == "GTV"
        assert str(rtstruct.StudyInstanceUID) == truth.study_uid
        referenced = {
            c.ContourImageSequence[0].ReferencedSOPInstanceUID
            for c in rtstruct.ROIContourSequence[0].ContourSequence
        }
        assert referenced <= {s.SOPInstanceUID for s in slices}
        mask = rasterise(rtstruct, slices)
        # The tumour (mean ~45 HU) stands out of the background (~-30 HU).
        assert volume[mask].mean() - volume[~mask].mean() > 40
        assert mask.sum() > 500


def test_texture_follows_risk_and_the_decoy_does_not_predict(cohort):
    root, truths, _ = cohort
    spread, mean = [], []
    for truth in truths:
        volume, slices = read_ct(root / truth.patient_id / "CT")
        mask = rasterise(pydicom.dcmread(root / truth.patient_id / "RS.dcm"), slices)
        spread.append(volume[mask].std())
        mean.append(volume[mask].mean())
    risk = np.array([t.risk for t in truths])
    decoy = np.array([t.decoy for t in truths])
    outcome = np.array([t.outcome for t in truths])
    assert np.corrcoef(np.log(spread), risk)[0, 1] > 0.8
    assert np.corrcoef(mean, decoy)[0, 1] > 0.8
    assert 0.7 < auc(risk, outcome) < 0.97
    assert 0.3 < auc(decoy, outcome) < 0.7
    assert auc(np.log(spread), outcome) > 0.68
    times = np.array([t.time for t in truths])
    events = np.array([t.event for t in truths])
    assert 0.3 < events.mean() < 0.9 and (times > 0).all()
    assert c_index(risk, times, events) > 0.62
    assert 0.35 < c_index(decoy, times, events) < 0.65


def test_seg_is_read_by_highdicom_and_matches_the_contours(tmp_path):
    (truth,) = write_cohort(tmp_path, 1, seed=5, with_seg=True, roi_name="Tumour")
    folder = tmp_path / truth.patient_id
    _, slices = read_ct(folder / "CT")
    seg = hd.seg.segread(folder / "SEG.dcm")
    assert seg.get_segment_description(1).segment_label == "Tumour"
    uids = [s.SOPInstanceUID for s in slices]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=[1], ignore_spatial_locations=True
    )[..., 0].astype(bool)
    contours = rasterise(pydicom.dcmread(folder / "RS.dcm"), slices)
    dice = 2 * (pixels & contours).sum() / (pixels.sum() + contours.sum())
    assert dice > 0.95


def test_tumour_mask_is_the_seg_truth():
    geometry = Geometry(rows=20, columns=30, slices=5)
    tumour = Tumour(centre=(-5.0, 21.0, -36.25), axes=(6.0, 5.0, 4.0))
    mask = tumour_mask(geometry, tumour)
    assert mask.shape == (5, 20, 30) and mask[2].sum() > mask[0].sum()
