"""Preprocessing: crop with padding, resampling grid, standardisation, mask resampling."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from shared.presets.config_schema import (
    BinaryBsplineResampler,
    BsplineResampler,
    validate_config,
)
from workers.extraction.dicom import ExtractionError
from workers.extraction.preprocess import (
    crop_to_masks,
    mask_on_grid,
    mask_resampler,
    preprocess_image,
    resample_image,
    standardize,
    volume_processors,
)

SPACING = (0.8, 0.9, 2.5)
ORIGIN = (-31.7, 12.3, -50.0)


def _image(array: np.ndarray, spacing=SPACING, origin=ORIGIN) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def _cube_mask(shape=(20, 60, 72), box=((8, 12), (20, 30), (30, 40))) -> sitk.Image:
    array = np.zeros(shape, np.uint8)
    (z0, z1), (y0, y1), (x0, x1) = box
    array[z0:z1, y0:y1, x0:x1] = 1
    return _image(array)


def test_crop_adds_the_padding_in_millimetres():
    image = _image(np.zeros((20, 60, 72), np.float32))
    cropped = crop_to_masks(image, [_cube_mask()], 5.0)
    # x: 5 mm / 0.8 = 6.25 -> 7 voxels; y: 5 / 0.9 = 5.6 -> 6; z: 5 / 2.5 = 2 voxels.
    assert cropped.GetSize() == (10 + 2 * 7, 10 + 2 * 6, 4 + 2 * 2)
    assert cropped.GetOrigin() == pytest.approx(image.TransformIndexToPhysicalPoint((23, 14, 6)))
    assert crop_to_masks(image, [_cube_mask()], "whole_image") is image


def test_crop_is_clipped_to_the_image_and_refuses_disjoint_masks():
    image = _image(np.zeros((20, 60, 72), np.float32))
    edge = _cube_mask(box=((0, 3), (0, 4), (0, 5)))
    assert crop_to_masks(image, [edge], 10.0).GetOrigin() == pytest.approx(ORIGIN)
    elsewhere = _cube_mask()
    elsewhere.SetOrigin((500.0, 500.0, 500.0))
    with pytest.raises(ExtractionError, match="does not overlap"):
        crop_to_masks(image, [elsewhere], 10.0)


def test_crop_uses_masks_from_another_grid_by_physical_position():
    image = _image(np.zeros((20, 60, 72), np.float32))
    fine = np.zeros((40, 120, 144), np.uint8)
    fine[16:24, 40:60, 60:80] = 1
    other = _image(fine, spacing=(0.4, 0.45, 1.25), origin=(-31.9, 12.075, -50.625))
    same = crop_to_masks(image, [_cube_mask()], 0.0)
    assert crop_to_masks(image, [other], 0.0).GetSize() == same.GetSize()


def test_resampling_keeps_the_outer_edges_and_values():
    image = _image(np.full((20, 60, 72), 7.0, np.float32))
    resampled = resample_image(image, BsplineResampler(resampling_spacing=[1, 1, 0], order=3))
    assert resampled.GetSpacing() == pytest.approx((1.0, 1.0, 2.5))
    assert resampled.GetSize() == (58, 54, 20)  # ceil(72*0.8), ceil(60*0.9), unchanged z
    assert resampled.GetOrigin()[0] == pytest.approx(ORIGIN[0] - 0.4 + 0.5)
    assert sitk.GetArrayViewFromImage(resampled) == pytest.approx(7.0)  # no edge padding


def test_standardize_uses_the_selected_voxels():
    rng = np.random.default_rng(0)
    array = rng.normal(100, 15, (5, 6, 7)).astype(np.float32)
    image = _image(array)
    result = sitk.GetArrayFromImage(standardize(image, array > 0))
    assert result.mean() == pytest.approx(0, abs=1e-5)
    assert result.std() == pytest.approx(1, rel=1e-4)
    with pytest.raises(ExtractionError, match="Standardisation is impossible"):
        standardize(_image(np.ones((3, 3, 3), np.float32)), np.ones((3, 3, 3), bool))


def test_processor_selection_common_then_own_key_or_default():
    config = validate_config(
        {
            "volume_preprocessing": {
                "common": {"standardizer": {"threshold": 1}},
                "CT": {"bspline_resampler": {"resampling_spacing": [1, 1, 1]}},
                "default": {"identity_processor": {}},
            },
            "mask_preprocessing": {"MR_T1": {"binary_bspline_resampler": {"order": 3}}},
            "feature_extraction": {"CT": {"pyradiomics": {"a": {}}}},
        }
    )
    ct, pt = volume_processors(config, "CT"), volume_processors(config, "PT")
    assert [b.standardizer is not None for b in ct] == [True, False]
    assert ct[1].bspline_resampler is not None and pt[1].identity_processor == {}
    assert mask_resampler(config, "MR_T1").order == 3 and mask_resampler(config, "CT") is None


def test_masked_standardizer_uses_the_named_roi():
    array = np.zeros((20, 60, 72), np.float32)
    array[8:12, 20:30, 30:40] = np.linspace(10, 30, 10, dtype=np.float32)
    config = validate_config(
        {
            "volume_preprocessing": {"CT": {"masked_standardizer": {"mask_label": "cube"}}},
            "feature_extraction": {"CT": {"pyradiomics": {"a": {}}}},
        }
    )
    result = preprocess_image(_image(array), config, "CT", {"cube": _cube_mask()})
    inside = sitk.GetArrayFromImage(result)[8:12, 20:30, 30:40]
    assert inside.mean() == pytest.approx(0, abs=1e-5)
    assert inside.std() == pytest.approx(1, rel=1e-4)


def test_mask_resampling_onto_a_finer_grid():
    mask = _cube_mask()
    grid = resample_image(
        _image(np.zeros((20, 60, 72), np.float32)),
        BsplineResampler(resampling_spacing=[0.5, 0.5, 0.5]),
    )
    volume = 10 * 0.8 * 10 * 0.9 * 4 * 2.5
    for params in (None, BinaryBsplineResampler(order=3, threshold=0.5)):
        resampled = mask_on_grid(mask, grid, params)
        voxels = int(sitk.GetArrayViewFromImage(resampled).sum())
        assert voxels * 0.125 == pytest.approx(volume, rel=0.1)
    tiny = _cube_mask(box=((9, 10), (25, 26), (35, 36)))
    with pytest.raises(ExtractionError, match="no voxel on the processed image grid"):
        mask_on_grid(tiny, grid, BinaryBsplineResampler(order=1, threshold=0.99))
