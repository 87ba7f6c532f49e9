"""IBSI 1 CT phantom, configuration A, from DICOM CT + RTSTRUCT through our converter."""

from __future__ import annotations

import SimpleITK as sitk

from shared.presets.config_schema import ExtractionConfig, validate_config
from tests.workers.extraction_support import IBSI, dice, ibsi_pairs, ibsi_passes, ibsi_reference
from workers.extraction.dicom import read_image, scan_folder
from workers.extraction.masks import build_masks, read_rois
from workers.extraction.pipeline import extract_study

PHANTOM = IBSI / "ct_phantom"
# Configuration A: no interpolation, 2D, re-segmentation [-500, 400] HU, bin width 25 HU.
CONFIG_A = {"force2D": True, "force2Ddimension": 0, "resegmentRange": [-500, 400], "binWidth": 25}
ALL_CLASSES = ["shape", "firstorder", "glcm", "glrlm", "glszm", "ngtdm", "gldm"]


def _config(setting: dict, classes: list[str]) -> ExtractionConfig:
    """A CT-only configuration with one PyRadiomics block and no preprocessing."""
    return validate_config(
        {
            "general": {"padding": 10, "submodalities": False, "combine_segmentation": False},
            "feature_extraction": {
                "CT": {
                    "pyradiomics": {
                        "ibsi_a": {
                            "imageType": {"Original": {}},
                            "featureClass": {name: None for name in classes},
                            "setting": {**CONFIG_A, **setting, "label": 1},
                        }
                    }
                }
            },
        }
    )


def _features(config: ExtractionConfig) -> dict[str, float]:
    """Extract the phantom's GTV with a configuration; return name -> value."""
    result = extract_study(PHANTOM / "dicom", config, ["GTV-1"])
    assert result.warnings == []
    [vector] = result.vectors
    assert (vector.modality, vector.roi) == ("CT", "GTV-1")
    return dict(zip(vector.names, vector.values.tolist(), strict=True))


def test_configuration_a_matches_ibsi_reference_values():
    averaged = _features(_config({}, ALL_CLASSES))
    merged = _features(_config({"weightingNorm": "no_weighting"}, ["glcm", "glrlm"]))
    reference = ibsi_reference("ibsi_1_chest_config_a.csv")

    pairs = ibsi_pairs(averaged, merged)
    failures = [
        (tag, value, reference[tag])
        for tag, value in pairs
        if not ibsi_passes(value, *reference[tag])
    ]
    print(f"IBSI CT phantom, config A: {len(pairs) - len(failures)}/{len(pairs)} within tolerance")
    assert len(pairs) == 139
    assert failures == []


def test_rtstruct_mask_matches_the_phantom_nifti_mask():
    series = scan_folder(PHANTOM / "dicom")
    [ct] = [s for s in series if s.modality == "CT"]
    [rtstruct] = [s for s in series if s.modality == "RTSTRUCT"]
    image, warnings = read_image(ct)
    [roi] = read_rois(rtstruct.paths[0])
    assert (roi.name, roi.referenced_series) == ("GTV-1", (ct.series_uid,))

    mask = build_masks(rtstruct.paths[0], image, ["GTV-1"])["GTV-1"]
    truth = sitk.ReadImage(str(PHANTOM / "nifti" / "mask" / "mask.nii.gz"))
    truth_on_ct = sitk.Resample(truth, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    value = dice(mask, truth_on_ct)
    print(f"IBSI phantom RTSTRUCT vs NIfTI mask: Dice {value:.5f}")
    assert warnings == []
    assert value >= 0.99
    # The NIfTI image and our DICOM reading agree voxel for voxel in physical space.
    nifti = sitk.ReadImage(str(PHANTOM / "nifti" / "image" / "phantom.nii.gz"))
    assert image.GetSize() == nifti.GetSize()
    difference = sitk.GetArrayFromImage(
        sitk.Resample(nifti, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    ) - sitk.GetArrayFromImage(image)
    assert abs(difference).max() == 0
