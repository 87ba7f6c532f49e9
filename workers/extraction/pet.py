"""PET uptake measures reported beside PyRadiomics for PT images: MTV, TLG and SUVpeak.

The reference platform added these three to every PET vector under PyRadiomics-style names;
users' feature tables and models refer to them, so PT vectors keep carrying them.

Definitions (on the image and mask exactly as PyRadiomics receives them, SUV units):
- MTV: volume, in mL, of the ROI voxels with SUV >= the threshold (absolute, 0 by default, so
  only negative values left by B-spline ringing are left out).
- TLG: total lesion glycolysis, SUVmean of those voxels x MTV (SUV.mL).
- SUVpeak: the mean SUV of the image voxels whose centres lie within 6 mm (a 12 mm-diameter
  sphere) of the hottest ROI voxel's centre; with several equally hot voxels the highest mean
  wins (IBSI's local intensity peak rule). Voxels of the sphere outside the image are ignored.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy.signal import fftconvolve

from workers.extraction.dicom import ExtractionError

PEAK_DIAMETER_MM = 12.0
NAMES = ("original_firstorder_MTV", "original_firstorder_TLG", "original_firstorder_SUVpeak")


def pet_extras(image: sitk.Image, mask: sitk.Image, threshold: float = 0.0) -> dict[str, float]:
    """Return MTV (mL), TLG (SUV.mL) and SUVpeak of one ROI on an SUV image."""
    suv = sitk.GetArrayViewFromImage(image)  # (z, y, x); only the ROI and peak box are widened
    roi = sitk.GetArrayViewFromImage(mask) != 0
    if suv.shape != roi.shape:
        raise ExtractionError("PET measures: the mask is not on the image grid")
    if not roi.any():
        raise ExtractionError("PET measures: the ROI is empty")
    spacing = np.array(image.GetSpacing(), dtype=np.float64)[::-1]  # (z, y, x), mm
    voxel_ml = float(np.prod(spacing)) / 1000.0
    values = suv[roi].astype(np.float64)
    active = values[values >= threshold]
    return {
        NAMES[0]: active.size * voxel_ml,
        NAMES[1]: float(active.sum()) * voxel_ml,
        NAMES[2]: suv_peak(suv, roi, spacing, values.max()),
    }


def suv_peak(suv: np.ndarray, roi: np.ndarray, spacing: np.ndarray, top: float) -> float:
    """Return the highest sphere mean centred on a ROI voxel of value `top` (the module doc)."""
    hottest = np.argwhere(roi & (suv == top))
    kernel = sphere_kernel(spacing, PEAK_DIAMETER_MM / 2)
    radius = np.array(kernel.shape) // 2
    # Only the box around the hottest voxels matters: one voxel -> a 13^3 box, not the image.
    low = np.maximum(hottest.min(axis=0) - radius, 0)
    high = np.minimum(hottest.max(axis=0) + radius + 1, suv.shape)
    box = tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))
    region = suv[box].astype(np.float64)
    sums = fftconvolve(region, kernel, mode="same")
    counts = np.rint(fftconvolve(np.ones(region.shape), kernel, mode="same"))
    at = tuple((hottest - low).T)
    return float(np.max(sums[at] / counts[at]))


def sphere_kernel(spacing: np.ndarray, radius_mm: float) -> np.ndarray:
    """Return the 0/1 kernel of the voxel offsets within radius_mm of the centre (z, y, x)."""
    reach = np.floor(radius_mm / spacing + 1e-9).astype(int)
    axes = [np.arange(-r, r + 1) * s for r, s in zip(reach, spacing, strict=True)]
    dz, dy, dx = np.meshgrid(*axes, indexing="ij")
    return (dz**2 + dy**2 + dx**2 <= radius_mm**2 + 1e-9).astype(np.float64)
