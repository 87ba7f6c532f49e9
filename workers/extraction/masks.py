"""Contours -> binary masks: RTSTRUCT by a geometric rasteriser, DICOM-SEG through highdicom.

Every mask is built on a reference image grid (uint8, 0/1). RTSTRUCT contours are placed on
slices by their physical position, not by the SOP Instance UIDs they reference: exported
structure sets often reference instances that are not in the series that was fetched.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from pydicom.config import disable_value_validation
from pydicom.dataset import Dataset

from workers.extraction.dicom import ExtractionError, read_dataset

log = logging.getLogger(__name__)

CLOSED_TYPES = {"CLOSED_PLANAR", "CLOSED_PLANAR_XOR"}
CONTOUR_DATA = 0x30060050
# A contour whose points spread over more than this many slices is not in a slice plane.
PLANARITY_TOLERANCE = 0.5


@dataclass(frozen=True)
class RoiRef:
    """One ROI of an RTSTRUCT or SEG file and the image series it was drawn on."""

    name: str
    number: int
    kind: str
    path: Path
    referenced_series: tuple[str, ...]
    frame_of_reference_uid: str | None


# --- listing ROIs ------------------------------------------------------------------------


@disable_value_validation()
def read_rois(path: Path) -> list[RoiRef]:
    """List the ROIs of an RTSTRUCT or SEG file with their referenced series."""
    ds = read_dataset(path, header_only=True)
    if ds is None:
        raise ExtractionError(f"{path.name} is not a DICOM file")
    modality = str(ds.get("Modality", "")).upper()
    if modality == "RTSTRUCT":
        return _rtstruct_rois(ds, path)
    if modality == "SEG":
        return _seg_rois(ds, path)
    raise ExtractionError(f"{path.name} is a {modality}, not an RTSTRUCT or SEG")


def _rtstruct_rois(ds: Dataset, path: Path) -> list[RoiRef]:
    """List StructureSetROISequence entries; references via the frame-of-reference tree."""
    series_by_frame: dict[str, list[str]] = {}
    for frame in ds.get("ReferencedFrameOfReferenceSequence") or []:
        uids = series_by_frame.setdefault(str(frame.get("FrameOfReferenceUID", "")), [])
        for study in frame.get("RTReferencedStudySequence") or []:
            for series in study.get("RTReferencedSeriesSequence") or []:
                uids.append(str(series.SeriesInstanceUID))
    every_series = tuple(uid for uids in series_by_frame.values() for uid in uids)
    rois = []
    for item in ds.get("StructureSetROISequence") or []:
        frame_uid = str(item.get("ReferencedFrameOfReferenceUID", "")) or None
        referenced = tuple(series_by_frame.get(frame_uid or "", ())) or every_series
        if frame_uid is None and len(series_by_frame) == 1:
            frame_uid = next(iter(series_by_frame)) or None
        rois.append(
            RoiRef(
                name=str(item.ROIName).strip(),
                number=int(item.ROINumber),
                kind="RTSTRUCT",
                path=path,
                referenced_series=referenced,
                frame_of_reference_uid=frame_uid,
            )
        )
    return rois


def _seg_rois(ds: Dataset, path: Path) -> list[RoiRef]:
    """List SegmentSequence entries (name from SegmentDescription, else SegmentLabel)."""
    referenced = tuple(
        str(item.SeriesInstanceUID) for item in ds.get("ReferencedSeriesSequence") or []
    )
    frame_uid = str(ds.get("FrameOfReferenceUID", "")) or None
    return [
        RoiRef(
            name=str(item.get("SegmentDescription") or item.get("SegmentLabel") or "").strip(),
            number=int(item.SegmentNumber),
            kind="SEG",
            path=path,
            referenced_series=referenced,
            frame_of_reference_uid=frame_uid,
        )
        for item in ds.get("SegmentSequence") or []
    ]


# --- building masks --------------------------------------------------------------------------


def build_masks(
    path: Path, reference: sitk.Image, names: Collection[str], kind: str | None = None
) -> dict[str, sitk.Image]:
    """Return the named ROIs of an RTSTRUCT or SEG file (`kind`) as masks on the reference grid."""
    if kind is None:
        kind = next((roi.kind for roi in read_rois(path)), "RTSTRUCT")
    if kind == "SEG":
        return seg_to_masks(path, reference, names)
    return rtstruct_to_masks(path, reference, names)


@disable_value_validation()
def rtstruct_to_masks(
    path: Path, reference: sitk.Image, names: Collection[str]
) -> dict[str, sitk.Image]:
    """Rasterise the named RTSTRUCT ROIs onto the reference grid (holes by XOR)."""
    ds = read_dataset(path, header_only=False)
    if ds is None:
        raise ExtractionError(f"{path.name} is not a DICOM file")
    numbers = {int(r.ROINumber): str(r.ROIName).strip() for r in ds.StructureSetROISequence}
    contours_by_name = {
        numbers.get(int(item.ReferencedROINumber), ""): item.get("ContourSequence") or []
        for item in ds.get("ROIContourSequence") or []
    }
    masks = {}
    for name in names:
        if name not in numbers.values():
            raise ExtractionError(f"ROI '{name}' is not in {path.name}")
        array = _rasterise(contours_by_name.get(name, []), reference, name)
        masks[name] = _check_mask(_as_image(array, reference), name)
    return masks


def _rasterise(contours: list[Dataset], reference: sitk.Image, name: str) -> np.ndarray:
    """Fill every closed planar contour on the slice its points lie on; return (z, y, x)."""
    nx, ny, nz = reference.GetSize()
    planes: dict[int, dict[float, np.ndarray]] = {}
    outside = 0
    closed = [c for c in contours if str(c.get("ContourGeometricType", "")).upper() in CLOSED_TYPES]
    if not closed:
        raise ExtractionError(f"ROI '{name}' has no closed planar contour")
    for contour in closed:
        points = contour_points(contour, name)
        if len(points) < 3:
            continue
        index = physical_to_index(reference, points)
        depth = float(index[:, 2].mean())
        if np.abs(index[:, 2] - depth).max() > PLANARITY_TOLERANCE:
            raise ExtractionError(
                f"A contour of ROI '{name}' is not parallel to the image slices it is drawn on"
            )
        k = round(depth)
        if not 0 <= k < nz:
            outside += 1
            continue
        # Contours of one plane combine by XOR (holes); distinct planes landing on the same
        # slice (a finer contour spacing than the image's) combine by union.
        plane = planes.setdefault(k, {}).setdefault(round(depth, 2), np.zeros((ny, nx), bool))
        plane ^= fill_polygon(index[:, 0], index[:, 1], (ny, nx))
    if outside:
        log.warning("ROI %s: %d contour(s) lie outside the reference volume", name, outside)
    array = np.zeros((nz, ny, nx), np.uint8)
    for k, by_depth in planes.items():
        array[k] = np.logical_or.reduce(list(by_depth.values()))
    return array


def contour_points(contour: Dataset, name: str) -> np.ndarray:
    """Return a contour's ContourData as (N, 3) patient coordinates in mm."""
    element = contour.get_item(CONTOUR_DATA)
    value = None if element is None else element.value
    if not isinstance(value, bytes | bytearray):  # absent, or already converted by pydicom
        return np.asarray(contour.get("ContourData") or [], dtype=float).reshape(-1, 3)
    # Still the raw DS text: one numpy parse instead of a DSfloat object per coordinate,
    # which made reading large structure sets cost more than rasterising them.
    text = bytes(value).rstrip(b"\x00 ")
    if not text:
        return np.empty((0, 3))
    try:
        return np.array(text.split(b"\\"), dtype=np.float64).reshape(-1, 3)
    except ValueError as exc:
        raise ExtractionError(f"ROI '{name}' has unreadable contour coordinates") from exc


def physical_to_index(image: sitk.Image, points: np.ndarray) -> np.ndarray:
    """Map (N, 3) patient coordinates (mm) to continuous (i, j, k) voxel indices."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    axes = direction * np.asarray(image.GetSpacing())  # columns: one voxel step per axis
    offsets = points - np.asarray(image.GetOrigin())
    return np.linalg.solve(axes, offsets.T).T


def fill_polygon(xs: np.ndarray, ys: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Return the pixels whose centres lie inside the polygon (even-odd rule, half-open)."""
    ny, nx = shape
    mask = np.zeros(shape, bool)
    first = max(0, int(np.ceil(ys.min())))
    last = min(ny - 1, int(np.floor(ys.max())))
    if last < first:
        return mask
    # Every (row, edge) pair at once: a per-row Python loop made rasterising cost more than
    # reading the structure set.
    rows = np.arange(first, last + 1)
    x1, y1 = np.roll(xs, -1), np.roll(ys, -1)
    hit_row, hit_edge = np.nonzero((ys[None, :] <= rows[:, None]) != (y1[None, :] <= rows[:, None]))
    xa, ya, xb, yb = xs[hit_edge], ys[hit_edge], x1[hit_edge], y1[hit_edge]
    xc = xa + (rows[hit_row] - ya) * (xb - xa) / (yb - ya)
    # A centre is inside when an odd number of edge crossings lie at or left of it; a crossing
    # at x counts for the columns c >= ceil(x).
    start = np.clip(np.ceil(xc), 0, nx).astype(np.int64)
    counts = np.bincount(hit_row * (nx + 1) + start, minlength=len(rows) * (nx + 1))
    crossings = np.cumsum(counts.reshape(len(rows), nx + 1)[:, :nx], axis=1)
    mask[first : last + 1] = crossings % 2 == 1
    return mask


@disable_value_validation()
def seg_to_masks(
    path: Path, reference: sitk.Image, names: Collection[str]
) -> dict[str, sitk.Image]:
    """Read the named segments of a DICOM-SEG and resample them onto the reference grid."""
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:
        raise ExtractionError(f"Cannot read DICOM-SEG {path.name}: {exc}") from exc
    fractional = seg.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL
    numbers = {roi.name: roi.number for roi in _seg_rois(seg, path)}
    masks = {}
    for name in names:
        if name not in numbers:
            raise ExtractionError(f"Segment '{name}' is not in {path.name}")
        native = _segment_image(seg, numbers[name], path, fractional)
        masks[name] = _check_mask(_onto_grid(native, reference, fractional), name)
    return masks


def _segment_image(
    seg: hd.seg.Segmentation, number: int, path: Path, fractional: bool
) -> sitk.Image:
    """Return one segment as an image on the SEG's own grid (0/1, or 0..1 when fractional)."""
    dtype = np.float32 if fractional else np.uint8
    try:
        volume = seg.get_volume(segment_numbers=[number], dtype=dtype)
    except Exception as exc:
        raise ExtractionError(
            f"DICOM-SEG {path.name}: segment {number} does not form a regular volume: {exc}"
        ) from exc
    if volume.number_of_channel_dimensions:
        volume = volume.squeeze_channel()
    # highdicom's array axes are (slice, row, column); SimpleITK indexes (x, y, z) = reversed.
    axes = np.asarray(volume.affine)[:3, :3][:, ::-1]
    spacing = np.linalg.norm(axes, axis=0)
    image = sitk.GetImageFromArray(volume.array)
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(np.asarray(volume.affine)[:3, 3].tolist())
    image.SetDirection((axes / spacing).ravel().tolist())
    return image


def _onto_grid(native: sitk.Image, reference: sitk.Image, fractional: bool) -> sitk.Image:
    """Resample a 0..1 mask onto the reference grid and binarise it at 0.5."""
    array = np.zeros(sitk.GetArrayViewFromImage(reference).shape, np.uint8)
    region = _overlap(native, reference)
    if region is not None:
        # Resample only the part of the reference grid the segment covers: SEGs are often
        # whole-scan volumes, and resampling cost follows the output size.
        start, size = region
        target = sitk.Image(size.tolist(), sitk.sitkFloat32)
        target.SetSpacing(reference.GetSpacing())
        target.SetDirection(reference.GetDirection())
        target.SetOrigin(reference.TransformIndexToPhysicalPoint(start.tolist()))
        interpolator = sitk.sitkLinear if fractional else sitk.sitkNearestNeighbor
        part = sitk.Resample(native, target, sitk.Transform(), interpolator, 0.0)
        box = tuple(slice(a, a + n) for a, n in zip(start[::-1], size[::-1], strict=True))
        array[box] = sitk.GetArrayViewFromImage(part) >= 0.5
    return _as_image(array, reference)


def nonzero_box(image: sitk.Image) -> tuple[np.ndarray, np.ndarray] | None:
    """Return the (i, j, k) index bounds of the non-zero voxels, or None when there are none."""
    values = sitk.GetArrayViewFromImage(image)
    present = [np.flatnonzero(values.any(axis=axes)) for axes in ((0, 1), (0, 2), (1, 2))]
    if any(p.size == 0 for p in present):
        return None
    return np.array([p[0] for p in present]), np.array([p[-1] for p in present])


def box_corners(image: sitk.Image, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Return the 8 physical corners of an index box of an image."""
    grid = np.array(np.meshgrid(*zip(low, high, strict=True), indexing="ij")).reshape(3, -1).T
    axes = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    return np.asarray(image.GetOrigin()) + grid @ axes.T


def _overlap(native: sitk.Image, reference: sitk.Image) -> tuple[np.ndarray, np.ndarray] | None:
    """Return (start, size) of the reference voxels near the segment's non-zero voxels."""
    box = nonzero_box(native)
    if box is None:
        return None
    points = box_corners(native, box[0] - 1.0, box[1] + 1.0)  # one voxel of margin
    index = physical_to_index(reference, points)
    start = np.maximum(np.floor(index.min(axis=0)), 0).astype(int)
    stop = np.minimum(np.ceil(index.max(axis=0)), np.asarray(reference.GetSize()) - 1).astype(int)
    if np.any(stop < start):
        return None
    return start, stop - start + 1


def _as_image(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """Wrap a (z, y, x) array as an image on the reference grid."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def _check_mask(mask: sitk.Image, name: str) -> sitk.Image:
    """Refuse an empty mask (the ROI has no voxel inside the reference image)."""
    if not sitk.GetArrayViewFromImage(mask).any():
        raise ExtractionError(
            f"ROI '{name}' is empty on its image: the contours do not overlap the image volume"
        )
    return mask
