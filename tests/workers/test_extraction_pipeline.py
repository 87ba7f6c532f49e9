"""extract_study / plan_series end to end: STS CT+PET+MR, ROI routing, and readable failures."""

from __future__ import annotations

import copy
import shutil
import time

import numpy as np
import pytest
import yaml

from shared.imaging.source import SeriesInfo
from shared.presets.config_schema import ExtractionConfig, validate_config
from tests.workers.extraction_support import (
    STS,
    Geometry,
    ellipse,
    rectangle,
    write_rtstruct,
    write_series,
)
from workers.extraction.dicom import scan_folder
from workers.extraction.pipeline import ExtractionError, extract_study, plan_series

STS_ROIS = ["GTV_Mass_CT", "GTV_Mass_PET", "GTV_Mass_MR_T1"]
GRID = Geometry(
    rows=40,
    columns=48,
    slices=16,
    row_spacing=0.9,
    column_spacing=0.8,
    slice_spacing=2.0,
    origin=(-20.0, -15.0, 30.0),
)
FAST = {"featureClass": {"firstorder": None}, "setting": {"binWidth": 25, "label": 1}}


def _preset(name: str) -> dict:
    from tests.conftest import ROOT

    return yaml.safe_load((ROOT / "shared" / "presets" / "defaults" / name).read_text())


def _petct_with_mr() -> dict:
    """The PET/CT preset plus an MR block (bin width 25 on the MR's own scale)."""
    config = _preset("PETCT_all.yaml")
    mr = copy.deepcopy(config["feature_extraction"]["CT"])
    mr["pyradiomics"]["original"]["setting"] = {"binWidth": 25, "label": 1}
    config["feature_extraction"]["MR"] = mr
    return config


def _simple(**general) -> ExtractionConfig:
    """A CT-only, firstorder-only configuration."""
    return validate_config(
        {"general": general, "feature_extraction": {"CT": {"pyradiomics": {"fast": FAST}}}}
    )


@pytest.fixture(scope="module")
def sts_series():
    return scan_folder(STS / "STS_025")


def _info(series) -> list[SeriesInfo]:
    return [SeriesInfo(s.series_uid, s.modality, s.description, len(s.paths)) for s in series]


def test_sts_patient_ct_pet_mr_with_combined_contours():
    config = validate_config(_petct_with_mr())
    steps: list[str] = []
    started = time.perf_counter()
    result = extract_study(STS / "STS_025", config, STS_ROIS, progress=steps.append)
    elapsed = time.perf_counter() - started

    counts = {(v.modality, v.roi): len(v.names) for v in result.vectors}
    print(f"STS_025: {len(result.vectors)} vectors in {elapsed:.1f} s: {counts}")
    assert result.patient_id == "STS_025" and result.warnings == []
    assert result.study_uid == scan_folder(STS / "STS_025" / "CT")[0].study_uid
    assert set(counts) == {(m, r) for m in ("CT", "PT", "MR") for r in STS_ROIS}
    # 107 PyRadiomics features; PET vectors add MTV, TLG and SUVpeak.
    assert {n for (m, _), n in counts.items() if m != "PT"} == {107}
    assert {n for (m, _), n in counts.items() if m == "PT"} == {110}
    assert steps[:2] == ["Reading DICOM", "Converting"]
    assert sorted(steps[2:]) == sorted(
        f"Extracting {m}/{r}" for m in ("CT", "PT", "MR") for r in STS_ROIS
    )
    for vector in result.vectors:
        assert vector.values.dtype == np.float64 and len(vector.values) == len(vector.names)
        assert not any(name.startswith("diagnostics_") for name in vector.names)
    pet = {
        name: value
        for v in result.vectors
        if (v.modality, v.roi) == ("PT", "GTV_Mass_PET")
        for name, value in zip(v.names, v.values, strict=True)
    }
    assert 1 < pet["original_firstorder_Mean"] < 20  # SUV, not Bq/ml or raw counts
    assert 3 < pet["original_firstorder_Maximum"] < 50
    # MTV counts the same voxels as PyRadiomics' VoxelVolume (mm3 -> mL) when no ROI voxel is
    # negative; TLG is then SUVmean x MTV; the 12 mm peak lies between the mean and the max.
    assert pet["original_firstorder_Minimum"] >= 0
    assert pet["original_firstorder_MTV"] == pytest.approx(pet["original_shape_VoxelVolume"] / 1e3)
    tlg = pet["original_firstorder_Mean"] * pet["original_firstorder_MTV"]
    assert pet["original_firstorder_TLG"] == pytest.approx(tlg, rel=1e-9)
    peak = pet["original_firstorder_SUVpeak"]
    assert pet["original_firstorder_Mean"] < peak < pet["original_firstorder_Maximum"]


def test_plan_fetches_only_what_the_rois_need(sts_series):
    contours = [p for s in sts_series if s.modality == "RTSTRUCT" for p in s.paths]
    uid = {s.modality: s.series_uid for s in sts_series if s.modality != "RTSTRUCT"}
    combined = validate_config(_petct_with_mr())
    assert plan_series(contours, _info(sts_series), combined, ["GTV_Mass_CT"]) == set(uid.values())

    separate = _preset("PETCT_all.yaml")
    separate["general"]["combine_segmentation"] = False
    config = validate_config(separate)
    assert plan_series(contours, _info(sts_series), config, ["GTV_Mass_PET"]) == {uid["PT"]}
    both = plan_series(contours, _info(sts_series), config, ["GTV_Mass_PET", "GTV_Mass_CT", "x"])
    assert both == {uid["PT"], uid["CT"]}
    with pytest.raises(ExtractionError, match=r"Modality MR .* no feature_extraction entry"):
        plan_series(contours, _info(sts_series), config, ["GTV_Mass_MR_T1"])


def test_image_whose_modality_is_not_configured_is_an_error():
    separate = _preset("PETCT_all.yaml")
    separate["general"]["combine_segmentation"] = False
    with pytest.raises(ExtractionError, match=r"Modality MR \(series .*configured: CT, PT\)"):
        extract_study(STS / "STS_025", validate_config(separate), ["GTV_Mass_MR_T1"])


def test_missing_rois_are_listed():
    with pytest.raises(ExtractionError) as caught:
        extract_study(STS / "STS_025", validate_config(_petct_with_mr()), ["Liver", "GTV"])
    message = str(caught.value)
    assert "Liver, GTV" in message and "GTV_Mass_CT, GTV_Mass_MR_T1, GTV_Mass_PET" in message


# --- a small synthetic study -----------------------------------------------------------------


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A 40x48x16 CT with a bright ellipsoid and an RTSTRUCT ('lesion', 'edge')."""
    folder = tmp_path_factory.mktemp("study")
    rng = np.random.default_rng(11)

    def values(k: int) -> np.ndarray:
        x, y, _ = GRID.centres(k)
        inside = ((x / 8) ** 2 + (y / 6) ** 2 < 1) & (3 <= k <= 12)
        return np.where(inside, 60.0, -20.0) + rng.normal(0, 10, (GRID.rows, GRID.columns))

    ct = write_series(folder / "ct", GRID, values, intercept=-1024.0)
    z = [GRID.origin[2] + k * GRID.slice_spacing for k in range(GRID.slices)]
    rois = {
        "lesion": [ellipse(0, 0, 8, 6, z[k], n=90) for k in range(3, 13)],
        "edge": [rectangle(-19.5, -14.5, -10, -5, z[k]) for k in range(0, 4)],
    }
    write_rtstruct(folder / "rs.dcm", ct, rois)
    return folder, ct


def _copy(study, tmp_path):
    folder, _ = study
    shutil.copytree(folder, tmp_path / "study")
    return tmp_path / "study"


def test_partial_rois_are_extracted_with_a_warning(study):
    folder, _ = study
    result = extract_study(folder, _simple(padding=5), ["lesion", "Heart"])
    [vector] = result.vectors
    assert (vector.modality, vector.roi) == ("CT", "lesion")
    assert result.warnings == ["ROI(s) not in this study, skipped: Heart"]
    features = dict(zip(vector.names, vector.values, strict=True))
    assert features["original_firstorder_Mean"] == pytest.approx(60, abs=5)


def test_preprocessing_runs_before_extraction(study):
    folder, _ = study
    config = validate_config(
        {
            "general": {"padding": 10},
            "volume_preprocessing": {
                "common": {"bspline_resampler": {"resampling_spacing": [1, 1, 1], "order": 3}},
                "CT": {"standardizer": {"threshold": -1000}},
            },
            "mask_preprocessing": {"default": {"binary_bspline_resampler": {"order": 1}}},
            "feature_extraction": {
                "CT": {
                    "pyradiomics": {
                        "stats": {
                            "featureClass": {"firstorder": ["Mean"]},
                            "setting": {"binWidth": 0.1},
                        },
                        "shape": {"featureClass": {"shape": ["VoxelVolume"]}},
                    }
                }
            },
        }
    )
    [vector] = extract_study(folder, config, ["lesion"]).vectors
    features = dict(zip(vector.names, vector.values, strict=True))
    assert vector.names == ["original_firstorder_Mean", "original_shape_VoxelVolume"]
    assert features["original_firstorder_Mean"] > 1  # z-scored: the lesion is bright
    # 1 mm voxels: the volume is in mm³ and close to the ellipse prism (pi*8*6 * 20 mm).
    assert features["original_shape_VoxelVolume"] == pytest.approx(np.pi * 8 * 6 * 20, rel=0.1)


def test_two_blocks_with_the_same_features_are_an_error(study):
    folder, _ = study
    config = validate_config(
        {"feature_extraction": {"CT": {"pyradiomics": {"a": FAST, "b": FAST}}}}
    )
    with pytest.raises(ExtractionError, match="block 'b' produces feature names"):
        extract_study(folder, config, ["lesion"])


def test_pyradiomics_errors_are_not_swallowed(study):
    folder, _ = study
    block = {**FAST, "setting": {"binWidth": 25, "minimumROISize": 10**7}}
    config = validate_config({"feature_extraction": {"CT": {"pyradiomics": {"big": block}}}})
    with pytest.raises(ExtractionError, match="CT/lesion: PyRadiomics failed:"):
        extract_study(folder, config, ["lesion"])


def test_corrupt_file_in_the_study_is_named(study, tmp_path):
    folder = _copy(study, tmp_path)
    broken = folder / "ct" / "img_005.dcm"
    broken.write_bytes(broken.read_bytes()[:-100])
    with pytest.raises(ExtractionError, match=r"img_005\.dcm"):
        extract_study(folder, _simple(), ["lesion"])


def test_study_without_contours_is_an_error(study, tmp_path):
    folder = _copy(study, tmp_path)
    (folder / "rs.dcm").unlink()
    with pytest.raises(ExtractionError, match="no RTSTRUCT or SEG"):
        extract_study(folder, _simple(), ["lesion"])


def test_mask_outside_the_image_is_an_error(study, tmp_path):
    folder = _copy(study, tmp_path)
    _, ct = study
    far = [rectangle(-10, -10, 10, 10, GRID.origin[2] - 200.0)]
    write_rtstruct(folder / "far.dcm", ct, {"far": far})
    with pytest.raises(ExtractionError, match=r"'far' is empty.*do not overlap"):
        extract_study(folder, _simple(), ["far"])


def test_masked_standardizer_needs_an_applied_roi(study):
    folder, _ = study
    config = validate_config(
        {
            "volume_preprocessing": {"CT": {"masked_standardizer": {"mask_label": "liver"}}},
            "feature_extraction": {"CT": {"pyradiomics": {"fast": FAST}}},
        }
    )
    with pytest.raises(ExtractionError, match="masked_standardizer of CT needs ROI 'liver'"):
        extract_study(folder, config, ["lesion"])


def test_rtstruct_without_a_known_series_falls_back_to_the_frame_of_reference(study, tmp_path):
    folder = _copy(study, tmp_path)
    _, ct = study
    (folder / "rs.dcm").unlink()
    z = [GRID.origin[2] + k * GRID.slice_spacing for k in range(4, 10)]
    contours = {"lesion": [ellipse(0, 0, 8, 6, height, n=90) for height in z]}
    write_rtstruct(folder / "rs2.dcm", ct, contours, referenced_series_uid="1.2.3.4")
    result = extract_study(folder, _simple(), ["lesion"])
    assert [v.roi for v in result.vectors] == ["lesion"]
    assert "shares its frame of reference" in result.warnings[0]
