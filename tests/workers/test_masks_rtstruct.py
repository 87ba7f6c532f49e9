"""RTSTRUCT rasteriser on a synthetic non-square, anisotropic CT against the analytic truth."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from tests.workers.extraction_support import (
    Geometry,
    dice,
    ellipse,
    rectangle,
    write_rtstruct,
    write_series,
)
from workers.extraction.dicom import ExtractionError, read_image, scan_folder
from workers.extraction.masks import fill_polygon, read_rois, rtstruct_to_masks

# The case where rt-utils goes wrong: rows != columns and PixelSpacing (row) != (column).
HARD = Geometry(
    rows=60,
    columns=72,
    slices=24,
    row_spacing=0.9,
    column_spacing=0.8,
    slice_spacing=2.5,
    origin=(-31.7, 12.3, -50.0),
)
TUMOUR = {"cx": -5.0, "cy": 40.0, "a": 18.0, "b": 11.0, "slices": range(4, 18)}
# Rectangle edges half-way between voxel centres, so the truth has no boundary ties.
BOX = {"x0": -29.7, "x1": -19.3, "y0": 14.55, "y1": 23.55, "slices": range(10, 21)}
RING = {"cx": 15.0, "cy": 55.0, "outer": 8.0, "inner": 4.0, "slices": range(2, 8)}


def _truth(shape: str) -> np.ndarray:
    """Voxel centres inside the analytic shape, as a (z, y, x) array."""
    truth = np.zeros((HARD.slices, HARD.rows, HARD.columns), bool)
    for k in range(HARD.slices):
        x, y, _ = HARD.centres(k)
        if shape == "tumour" and k in TUMOUR["slices"]:
            t = TUMOUR
            truth[k] = ((x - t["cx"]) / t["a"]) ** 2 + ((y - t["cy"]) / t["b"]) ** 2 < 1
        if shape == "box" and k in BOX["slices"]:
            b = BOX
            truth[k] = (x > b["x0"]) & (x < b["x1"]) & (y > b["y0"]) & (y < b["y1"])
        if shape == "ring" and k in RING["slices"]:
            r2 = (x - RING["cx"]) ** 2 + (y - RING["cy"]) ** 2
            truth[k] = (r2 < RING["outer"] ** 2) & (r2 >= RING["inner"] ** 2)
    return truth


def _contours() -> dict[str, list[np.ndarray]]:
    """The three ROIs as RTSTRUCT contours; z is off the slice centres by a few hundredths."""
    z = [HARD.origin[2] + k * HARD.slice_spacing + 0.03 for k in range(HARD.slices)]
    t, b, r = TUMOUR, BOX, RING
    return {
        "tumour": [ellipse(t["cx"], t["cy"], t["a"], t["b"], z[k]) for k in t["slices"]],
        "box": [rectangle(b["x0"], b["y0"], b["x1"], b["y1"], z[k]) for k in b["slices"]],
        "ring": [
            polygon
            for k in r["slices"]
            for polygon in (
                ellipse(r["cx"], r["cy"], r["outer"], r["outer"], z[k]),
                ellipse(r["cx"], r["cy"], r["inner"], r["inner"], z[k]),  # the hole (XOR)
            )
        ],
    }


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A shuffled 60x72 CT series with anisotropic pixels and its RTSTRUCT."""
    folder = tmp_path_factory.mktemp("hard")
    rng = np.random.default_rng(7)
    order = rng.permutation(HARD.slices)  # file order must not matter
    ct = write_series(
        folder / "ct",
        HARD,
        lambda k: np.full((HARD.rows, HARD.columns), 40.0 + k),
        slope=1.0,
        intercept=-1024.0,
        order=order,
    )
    write_rtstruct(folder / "rs.dcm", ct, _contours())
    [series] = [s for s in scan_folder(folder) if s.modality == "CT"]
    image, warnings = read_image(series)
    assert warnings == []
    return folder, ct, image


def test_image_geometry_follows_the_dicom_tags(synthetic):
    _, _, image = synthetic
    assert image.GetSize() == (72, 60, 24)
    assert image.GetSpacing() == pytest.approx((0.8, 0.9, 2.5))
    assert image.GetOrigin() == pytest.approx(HARD.origin)
    values = sitk.GetArrayFromImage(image)
    assert values[:, 0, 0] == pytest.approx(40.0 + np.arange(24))  # sorted by position, in HU


@pytest.mark.parametrize("name", ["tumour", "box", "ring"])
def test_rasteriser_matches_the_analytic_truth(synthetic, name):
    folder, _, image = synthetic
    mask = rtstruct_to_masks(folder / "rs.dcm", image, [name])[name]
    array = sitk.GetArrayFromImage(mask).astype(bool)
    truth = _truth(name)
    value = dice(array, truth)
    print(f"synthetic 60x72 CT, {name}: Dice {value:.5f}, {int(array.sum())} voxels")
    assert value >= 0.99
    if name == "box":
        assert np.array_equal(array, truth)  # no boundary ties: must be exact
    # Same centre of mass, i.e. no shift or axis swap.
    assert np.argwhere(array).mean(axis=0) == pytest.approx(
        np.argwhere(truth).mean(axis=0), abs=0.05
    )


def test_roi_references_come_from_the_frame_of_reference_tree(synthetic):
    folder, ct, _ = synthetic
    rois = read_rois(folder / "rs.dcm")
    assert [r.name for r in rois] == ["tumour", "box", "ring"]
    assert {r.referenced_series for r in rois} == {(ct.series_uid,)}
    assert {r.frame_of_reference_uid for r in rois} == {str(ct.datasets[0].FrameOfReferenceUID)}


def test_contours_outside_the_image_give_a_readable_error(synthetic, tmp_path):
    _, ct, image = synthetic
    far = [rectangle(-10, 20, 0, 30, HARD.origin[2] + 500.0)]
    write_rtstruct(tmp_path / "far.dcm", ct, {"far": far})
    with pytest.raises(ExtractionError, match=r"'far' is empty.*do not overlap"):
        rtstruct_to_masks(tmp_path / "far.dcm", image, ["far"])


def test_contour_not_parallel_to_the_slices_is_refused(synthetic, tmp_path):
    _, ct, image = synthetic
    tilted = np.array([[-10.0, 20, -45], [0, 20, -45], [0, 30, -30], [-10, 30, -30]])
    write_rtstruct(tmp_path / "tilted.dcm", ct, {"tilted": [tilted]})
    with pytest.raises(ExtractionError, match="not parallel"):
        rtstruct_to_masks(tmp_path / "tilted.dcm", image, ["tilted"])


def test_fill_polygon_uses_pixel_centres_half_open():
    # A square from 0.5 to 3.5 covers centres 1, 2, 3; one from 1 to 3 covers 1 and 2 only.
    square = fill_polygon(np.array([0.5, 3.5, 3.5, 0.5]), np.array([0.5, 0.5, 3.5, 3.5]), (5, 5))
    assert np.argwhere(square).min(axis=0).tolist() == [1, 1]
    assert int(square.sum()) == 9
    edge = fill_polygon(np.array([1.0, 3.0, 3.0, 1.0]), np.array([1.0, 1.0, 3.0, 3.0]), (5, 5))
    assert int(edge.sum()) == 4
