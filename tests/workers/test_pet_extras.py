"""MTV, TLG and SUVpeak against hand-computed values and a brute-force reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK as sitk

from workers.extraction.dicom import ExtractionError
from workers.extraction.pet import pet_extras


def images(suv: np.ndarray, roi: np.ndarray, spacing=(1.0, 1.0, 1.0)):
    """SimpleITK image and mask from (z, y, x) arrays; spacing in SimpleITK's (x, y, z)."""
    image = sitk.GetImageFromArray(suv.astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin((-40.0, 12.5, 300.0))
    mask = sitk.GetImageFromArray(roi.astype(np.uint8))
    mask.CopyInformation(image)
    return image, mask


def brute_peak(suv: np.ndarray, roi: np.ndarray, spacing_zyx) -> float:
    """The definition, voxel by voxel: best 6 mm sphere mean over the hottest ROI voxels."""
    hottest = suv[roi].max()
    grid = np.stack(np.meshgrid(*map(np.arange, suv.shape), indexing="ij"), axis=-1)
    best = -np.inf
    for centre in zip(*np.nonzero(roi & (suv == hottest)), strict=True):
        distance = np.sqrt((((grid - centre) * spacing_zyx) ** 2).sum(axis=-1))
        best = max(best, suv[distance <= 6.0].mean())
    return float(best)


def test_hot_voxel_in_a_uniform_background():
    suv = np.ones((30, 30, 30))
    suv[15, 15, 15] = 10.0
    roi = np.zeros(suv.shape, bool)
    roi[13:18, 13:18, 13:18] = True  # 125 voxels of 1 mm3
    extras = pet_extras(*images(suv, roi))
    inside = sum(
        1 for d in itertools.product(range(-6, 7), repeat=3) if sum(v * v for v in d) <= 36
    )
    assert extras["original_firstorder_MTV"] == pytest.approx(0.125)
    assert extras["original_firstorder_TLG"] == pytest.approx((124 * 1.0 + 10.0) / 1000)
    assert extras["original_firstorder_SUVpeak"] == pytest.approx((10.0 + inside - 1) / inside)


def test_anisotropic_spacing_and_noise_match_the_brute_force_definition():
    rng = np.random.default_rng(7)
    suv = rng.gamma(2.0, 1.5, size=(14, 20, 22))
    roi = np.zeros(suv.shape, bool)
    roi[4:10, 5:15, 6:16] = True
    spacing = (0.8, 1.2, 2.5)  # x, y, z
    extras = pet_extras(*images(suv, roi, spacing))
    suv32 = suv.astype(np.float32).astype(np.float64)  # what the image holds
    assert extras["original_firstorder_SUVpeak"] == pytest.approx(
        brute_peak(suv32, roi, np.array(spacing[::-1])), rel=1e-9
    )
    voxel_ml = 0.8 * 1.2 * 2.5 / 1000
    assert extras["original_firstorder_MTV"] == pytest.approx(roi.sum() * voxel_ml)
    assert extras["original_firstorder_TLG"] == pytest.approx(suv32[roi].sum() * voxel_ml)


def test_equally_hot_voxels_take_the_best_sphere_even_at_the_image_edge():
    suv = np.full((16, 16, 16), 2.0)
    suv[6:11, 6:11, 6:11] = 8.0  # a warm neighbourhood makes the inner sphere the better one
    suv[0, 0, 0] = suv[8, 8, 8] = 9.0  # one at a corner (sphere clipped), one inside
    roi = np.zeros(suv.shape, bool)
    roi[0:2, 0:2, 0:2] = roi[7:10, 7:10, 7:10] = True
    extras = pet_extras(*images(suv, roi))
    expected = brute_peak(suv, roi, np.ones(3))
    assert extras["original_firstorder_SUVpeak"] == pytest.approx(expected, rel=1e-9)
    corner_only = roi.copy()
    corner_only[7:10, 7:10, 7:10] = False
    clipped = pet_extras(*images(suv, corner_only))["original_firstorder_SUVpeak"]
    assert clipped == pytest.approx(brute_peak(suv, corner_only, np.ones(3)), rel=1e-9)
    assert clipped < extras["original_firstorder_SUVpeak"]


def test_negative_ringing_voxels_are_not_metabolic_volume():
    suv = np.full((10, 10, 10), 3.0)
    roi = np.zeros(suv.shape, bool)
    roi[2:8, 2:8, 2:8] = True  # 216 voxels
    suv[2, 2, 2:8] = -0.25  # 6 voxels below the absolute threshold 0
    extras = pet_extras(*images(suv, roi, (2.0, 2.0, 2.0)))
    assert extras["original_firstorder_MTV"] == pytest.approx(210 * 8 / 1000)
    assert extras["original_firstorder_TLG"] == pytest.approx(210 * 3.0 * 8 / 1000)


def test_empty_roi_is_an_error():
    suv = np.ones((5, 5, 5))
    with pytest.raises(ExtractionError, match="ROI is empty"):
        pet_extras(*images(suv, np.zeros(suv.shape, bool)))
