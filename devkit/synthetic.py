"""Synthetic cohorts: small CT-like studies with a contoured tumour and known ground truth.

Each patient has a hidden risk that sets the tumour's texture (heterogeneity and grain) and
drives a binary outcome and a survival time; a decoy variable sets the tumour's mean intensity
and has no link to either. The CT grid is non-square and anisotropic, with an off-centre
origin, which is where mask converters usually go wrong. pydicom + numpy only.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import logging
import math
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.pixels import pack_bits
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    PYDICOM_ROOT_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    RTStructureSetStorage,
    SegmentationStorage,
)

log = logging.getLogger(__name__)

STUDY_COMPONENT_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"
UID_ROOT = PYDICOM_ROOT_UID  # UIDs are derived from the seed, so cohorts are reproducible
CONTOUR_POINTS = 48
OUTCOME_NOISE = 0.9  # latent outcome = risk + N(0, OUTCOME_NOISE); oracle AUC ≈ 0.85
HAZARD_PER_RISK = 0.9  # log hazard ratio per unit of risk
BASE_HAZARD = 1 / 36.0  # per month
CENSOR_RANGE = (12.0, 72.0)  # administrative censoring, months


@dataclass(frozen=True)
class Geometry:
    """The CT grid: PixelSpacing is (row spacing = y, column spacing = x), as in DICOM."""

    rows: int = 40
    columns: int = 48
    slices: int = 12
    pixel_spacing: tuple[float, float] = (0.9, 0.8)
    slice_thickness: float = 2.5
    origin: tuple[float, float, float] = (-17.3, 12.9, -41.25)


@dataclass(frozen=True)
class PatientTruth:
    """The hidden variables and outcomes of one synthetic patient."""

    patient_id: str
    study_uid: str
    risk: float
    outcome: int
    time: float
    event: int
    decoy: float


@dataclass(frozen=True)
class Tumour:
    """An ellipsoid in patient mm: centre and semi-axes."""

    centre: tuple[float, float, float]
    axes: tuple[float, float, float]

    def section(self, z: float) -> float:
        """Return the scale of the ellipse cut at height z (0 when the plane misses it)."""
        t = (z - self.centre[2]) / self.axes[2]
        return math.sqrt(1 - t * t) if abs(t) < 1 else 0.0


def write_cohort(
    dest: Path,
    n_patients: int,
    seed: int = 0,
    *,
    with_rtstruct: bool = True,
    with_seg: bool = False,
    roi_name: str = "GTV",
    geometry: Geometry | None = None,
    truth_csv: bool = False,
) -> list[PatientTruth]:
    """Write one study folder per patient under `dest`; return the ground truth."""
    geometry = geometry or Geometry()
    rng = np.random.default_rng(seed)
    dest.mkdir(parents=True, exist_ok=True)
    truths = [
        _write_patient(dest, index, seed, rng, geometry, roi_name, with_rtstruct, with_seg)
        for index in range(n_patients)
    ]
    if truth_csv:
        write_truth_csv(dest / "truth.csv", truths)
    log.info("wrote a synthetic cohort of %d patients (seed %d)", n_patients, seed)
    return truths


def write_truth_csv(path: Path, truths: list[PatientTruth]) -> None:
    """Write the ground truth as CSV (one row per patient)."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(PatientTruth.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(asdict(t) for t in truths)


# One patient -----------------------------------------------------------------------------------
def _write_patient(
    dest: Path,
    index: int,
    seed: int,
    rng: np.random.Generator,
    geometry: Geometry,
    roi_name: str,
    with_rtstruct: bool,
    with_seg: bool,
) -> PatientTruth:
    """Draw one patient's variables, write its files, return its truth."""
    patient_id = f"SYN_{index + 1:03d}"
    risk, decoy = float(rng.normal()), float(rng.normal())
    outcome = int(risk + rng.normal(scale=OUTCOME_NOISE) > 0)
    time, event = _survival(rng, risk)
    tumour = _draw_tumour(rng, geometry)
    hu = _ct_volume(rng, geometry, tumour, risk, decoy)

    uids = _Uids(seed, patient_id)
    header = _patient_header(patient_id, index, uids)
    folder = dest / patient_id
    sop_uids = _write_ct(folder / "CT", header, uids, geometry, hu)
    if with_rtstruct:
        _write_rtstruct(folder / "RS.dcm", header, uids, geometry, tumour, sop_uids, roi_name)
    if with_seg:
        mask = tumour_mask(geometry, tumour)
        _write_seg(folder / "SEG.dcm", header, uids, geometry, mask, sop_uids, roi_name)
    return PatientTruth(patient_id, uids.study, risk, outcome, time, event, decoy)


def _survival(rng: np.random.Generator, risk: float) -> tuple[float, int]:
    """Draw an exponential survival time with hazard rising with risk, and censoring."""
    hazard = BASE_HAZARD * math.exp(HAZARD_PER_RISK * risk)
    event_time = float(rng.exponential(1 / hazard))
    censor_time = float(rng.uniform(*CENSOR_RANGE))
    return round(min(event_time, censor_time), 1) or 0.1, int(event_time <= censor_time)


def _draw_tumour(rng: np.random.Generator, geometry: Geometry) -> Tumour:
    """Place an ellipsoid near the middle of the grid with random size."""
    ox, oy, oz = geometry.origin
    dy, dx = geometry.pixel_spacing
    cx = ox + (geometry.columns - 1) * dx / 2 + rng.uniform(-3, 3)
    cy = oy + (geometry.rows - 1) * dy / 2 + rng.uniform(-3, 3)
    cz = oz + (geometry.slices - 1) * geometry.slice_thickness / 2 + rng.uniform(-2, 2)
    axes = (rng.uniform(8, 12), rng.uniform(7, 11), rng.uniform(7, 10))
    return Tumour((float(cx), float(cy), float(cz)), tuple(float(a) for a in axes))  # type: ignore[arg-type]


def voxel_centres(geometry: Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the x (columns), y (rows) and z (slices) coordinates of voxel centres in mm."""
    ox, oy, oz = geometry.origin
    dy, dx = geometry.pixel_spacing
    xs = ox + np.arange(geometry.columns) * dx
    ys = oy + np.arange(geometry.rows) * dy
    zs = oz + np.arange(geometry.slices) * geometry.slice_thickness
    return xs, ys, zs


def tumour_mask(geometry: Geometry, tumour: Tumour) -> np.ndarray:
    """Return the (slices, rows, columns) mask of voxel centres inside each slice's contour."""
    xs, ys, zs = voxel_centres(geometry)
    mask = np.zeros((geometry.slices, geometry.rows, geometry.columns), dtype=bool)
    (cx, cy, _), (ax, ay, _) = tumour.centre, tumour.axes
    for k, z in enumerate(zs):
        scale = tumour.section(float(z))
        if scale * min(ax, ay) < 1.0:  # the same cut-off as the contours
            continue
        u = (xs[None, :] - cx) / (ax * scale)
        v = (ys[:, None] - cy) / (ay * scale)
        mask[k] = u * u + v * v <= 1
    return mask


def _ct_volume(
    rng: np.random.Generator, geometry: Geometry, tumour: Tumour, risk: float, decoy: float
) -> np.ndarray:
    """Build the HU volume: soft-tissue background and a textured tumour."""
    shape = (geometry.slices, geometry.rows, geometry.columns)
    background = -30 + 12 * _smooth_noise(rng, shape, 1.0) + rng.normal(scale=4, size=shape)
    # Risk makes the tumour more heterogeneous and coarser; the decoy only shifts its mean.
    amplitude = 14 * math.exp(0.45 * risk)
    grain = 0.9 + 0.5 / (1 + math.exp(-risk))
    texture = amplitude * _smooth_noise(rng, shape, grain) + rng.normal(scale=4, size=shape)
    inside = tumour_mask(geometry, tumour)
    volume = np.where(inside, 45 + 12 * decoy + texture, background)
    return np.clip(np.rint(volume), -1000, 3000).astype(np.int16)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise (in voxels, via FFT), scaled to unit variance."""
    noise = rng.normal(size=shape)
    spectrum = np.fft.rfftn(noise)
    freqs = np.meshgrid(
        *[np.fft.fftfreq(n) for n in shape[:-1]], np.fft.rfftfreq(shape[-1]), indexing="ij"
    )
    radius2 = sum(f * f for f in freqs)
    kernel = np.exp(-2 * (math.pi * sigma) ** 2 * radius2)
    smooth = np.fft.irfftn(spectrum * kernel, s=shape, axes=tuple(range(len(shape))))
    return smooth / (smooth.std() or 1.0)


# DICOM writing ---------------------------------------------------------------------------------
# pydicom's Dataset building and writing cost ~5 ms per file, too slow for 100-patient cohorts
# in tests; these flat datasets are encoded directly (Explicit VR Little Endian) instead and
# read back with pydicom (and highdicom for the SEG) in the tests.
Item = dict[str, Any]
LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
BINARY_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}
ITEM_TAG = struct.pack("<HH", 0xFFFE, 0xE000)


class Raw(NamedTuple):
    """A value with an explicit VR (for tags whose dictionary VR is ambiguous)."""

    vr: str
    value: Any


def encode_dataset(item: Item) -> bytes:
    """Encode a keyword → value mapping as Explicit VR Little Endian elements, in tag order."""
    tags = sorted((tag_for_keyword(k), k) for k in item)
    return b"".join(_encode_element(tag, item[keyword]) for tag, keyword in tags)


def _encode_element(tag: int, value: Any) -> bytes:
    """Encode one element: tag, VR, length, value (padded to even length)."""
    vr = value.vr if isinstance(value, Raw) else dictionary_VR(tag)
    value = value.value if isinstance(value, Raw) else value
    data = _encode_value(vr, value)
    header = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode()
    if vr in LONG_VRS:
        return header + struct.pack("<2xI", len(data)) + data
    return header + struct.pack("<H", len(data)) + data


def _encode_value(vr: str, value: Any) -> bytes:
    """Encode a value of a VR."""
    if vr == "SQ":
        return b"".join(
            ITEM_TAG + struct.pack("<I", len(b)) + b for b in map(encode_dataset, value)
        )
    if vr in BINARY_FORMATS:
        values = value if isinstance(value, list | tuple) else [value]
        return struct.pack(f"<{len(values)}{BINARY_FORMATS[vr]}", *values)
    if vr == "AT":
        return struct.pack("<HH", value >> 16, value & 0xFFFF)
    if vr in ("OB", "OW", "UN"):
        return value + (b"\0" if len(value) % 2 else b"")
    text = "\\".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    data = text.encode("latin-1")
    if len(data) % 2:
        data += b"\0" if vr == "UI" else b" "
    return data


def write_dicom_file(path: Path, sop_class: str, sop_uid: str, item: Item) -> None:
    """Write a Part 10 file: preamble, file meta group, then the dataset."""
    meta = encode_dataset(
        {
            "FileMetaInformationVersion": Raw("OB", b"\x00\x01"),
            "MediaStorageSOPClassUID": sop_class,
            "MediaStorageSOPInstanceUID": sop_uid,
            "TransferSyntaxUID": ExplicitVRLittleEndian,
            "ImplementationClassUID": PYDICOM_IMPLEMENTATION_UID,
            "ImplementationVersionName": "QI2_SYNTHETIC",
        }
    )
    group_length = _encode_element(0x00020000, len(meta))
    body = encode_dataset({**item, "SOPClassUID": sop_class, "SOPInstanceUID": sop_uid})
    path.write_bytes(b"\0" * 128 + b"DICM" + group_length + meta + body)


class _Uids:
    """Deterministic UIDs of one patient (same seed, same UIDs)."""

    def __init__(self, seed: int, patient_id: str) -> None:
        self._key = f"qi2-synthetic-{seed}-{patient_id}"
        self.study = self.make("study")
        self.frame = self.make("frame")
        self.ct_series = self.make("ct-series")
        self.rt_series = self.make("rt-series")
        self.seg_series = self.make("seg-series")

    def make(self, *parts: str) -> str:
        """Return the UID derived from this patient's key and the given parts."""
        digest = hashlib.sha256("/".join([self._key, *parts]).encode()).digest()
        # 120 bits give at most 37 digits: with the 26-character root, within the 64 allowed.
        return f"{UID_ROOT}{int.from_bytes(digest[:15], 'big')}"


def _patient_header(patient_id: str, index: int, uids: _Uids) -> Item:
    """Return the patient and study attributes shared by all the patient's files."""
    day = dt.date(2024, 1, 1) + dt.timedelta(days=index)
    return {
        "SpecificCharacterSet": "ISO_IR 100",
        "PatientName": f"Synthetic^{patient_id}",
        "PatientID": patient_id,
        "PatientBirthDate": "",
        "PatientSex": "O",
        "StudyInstanceUID": uids.study,
        "StudyDate": day.strftime("%Y%m%d"),
        "StudyTime": "090000",
        "StudyID": f"S{index + 1}",
        "AccessionNumber": "",
        "ReferringPhysicianName": "",
        "StudyDescription": "Synthetic radiomics cohort",
        "FrameOfReferenceUID": uids.frame,
        "PositionReferenceIndicator": "",
        "Manufacturer": "QuantImage v2 synthetic",
    }


def _ds(value: float) -> str:
    """Format a number as a valid DS string (at most 16 characters)."""
    return f"{value:.4f}".rstrip("0").rstrip(".") or "0"


def _write_ct(
    folder: Path, header: Item, uids: _Uids, geometry: Geometry, hu: np.ndarray
) -> list[str]:
    """Write the CT slices; return their SOPInstanceUIDs in slice order."""
    folder.mkdir(parents=True, exist_ok=True)
    _, _, zs = voxel_centres(geometry)
    ox, oy, _ = geometry.origin
    series = {
        **header,
        "Modality": "CT",
        "SeriesInstanceUID": uids.ct_series,
        "SeriesNumber": "1",
        "SeriesDescription": "Synthetic CT",
        "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
        "ImageOrientationPatient": ["1", "0", "0", "0", "1", "0"],
        "PixelSpacing": [_ds(v) for v in geometry.pixel_spacing],
        "SliceThickness": _ds(geometry.slice_thickness),
        "KVP": "120",
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "Rows": geometry.rows,
        "Columns": geometry.columns,
        "BitsAllocated": 16,
        "BitsStored": 16,
        "HighBit": 15,
        "PixelRepresentation": 1,
        "RescaleIntercept": "0",
        "RescaleSlope": "1",
        "RescaleType": "HU",
        "WindowCenter": "40",
        "WindowWidth": "400",
    }
    sop_uids = []
    for k, z in enumerate(zs):
        sop_uid = uids.make("ct", str(k))
        item = {
            **series,
            "InstanceNumber": str(k + 1),
            "ImagePositionPatient": [_ds(ox), _ds(oy), _ds(float(z))],
            "SliceLocation": _ds(float(z)),
            "PixelData": Raw("OW", np.ascontiguousarray(hu[k], dtype="<i2").tobytes()),
        }
        write_dicom_file(folder / f"CT_{k + 1:03d}.dcm", CTImageStorage, sop_uid, item)
        sop_uids.append(sop_uid)
    return sop_uids


def _ref(sop_class: str, sop_uid: str) -> Item:
    """Return a reference item (ReferencedSOPClassUID + ReferencedSOPInstanceUID)."""
    return {"ReferencedSOPClassUID": sop_class, "ReferencedSOPInstanceUID": sop_uid}


def _write_rtstruct(
    path: Path,
    header: Item,
    uids: _Uids,
    geometry: Geometry,
    tumour: Tumour,
    sop_uids: list[str],
    roi_name: str,
) -> None:
    """Write an RTSTRUCT with one CLOSED_PLANAR contour per slice the tumour crosses."""
    series_ref = {
        "SeriesInstanceUID": uids.ct_series,
        "ContourImageSequence": [_ref(CTImageStorage, u) for u in sop_uids],
    }
    study_ref = {
        **_ref(STUDY_COMPONENT_MANAGEMENT, uids.study),
        "RTReferencedSeriesSequence": [series_ref],
    }
    item = {
        **header,
        "Modality": "RTSTRUCT",
        "SeriesInstanceUID": uids.rt_series,
        "SeriesNumber": "2",
        "SeriesDescription": "Synthetic tumour contour",
        "InstanceNumber": "1",
        "StructureSetLabel": "SYNTHETIC",
        "StructureSetDate": header["StudyDate"],
        "StructureSetTime": header["StudyTime"],
        "ReferencedFrameOfReferenceSequence": [
            {"FrameOfReferenceUID": uids.frame, "RTReferencedStudySequence": [study_ref]}
        ],
        "StructureSetROISequence": [
            {
                "ROINumber": "1",
                "ReferencedFrameOfReferenceUID": uids.frame,
                "ROIName": roi_name,
                "ROIGenerationAlgorithm": "MANUAL",
            }
        ],
        "ROIContourSequence": [
            {
                "ROIDisplayColor": ["255", "0", "0"],
                "ReferencedROINumber": "1",
                "ContourSequence": _contours(geometry, tumour, sop_uids),
            }
        ],
        "RTROIObservationsSequence": [
            {
                "ObservationNumber": "1",
                "ReferencedROINumber": "1",
                "RTROIInterpretedType": "GTV",
                "ROIInterpreter": "",
            }
        ],
    }
    write_dicom_file(path, RTStructureSetStorage, uids.make("rtstruct"), item)


def _contours(geometry: Geometry, tumour: Tumour, sop_uids: list[str]) -> list[Item]:
    """Return the ellipse contour of each slice plane the tumour crosses, in patient mm."""
    _, _, zs = voxel_centres(geometry)
    (cx, cy, _), (ax, ay, _) = tumour.centre, tumour.axes
    angles = np.linspace(0, 2 * math.pi, CONTOUR_POINTS, endpoint=False)
    items = []
    for k, z in enumerate(zs):
        scale = tumour.section(float(z))
        if scale * min(ax, ay) < 1.0:
            continue
        xs = cx + ax * scale * np.cos(angles)
        ys = cy + ay * scale * np.sin(angles)
        data = [_ds(float(v)) for x, y in zip(xs, ys, strict=True) for v in (x, y, z)]
        items.append(
            {
                "ContourImageSequence": [_ref(CTImageStorage, sop_uids[k])],
                "ContourGeometricType": "CLOSED_PLANAR",
                "NumberOfContourPoints": str(CONTOUR_POINTS),
                "ContourData": data,
            }
        )
    return items


def _code(value: str, scheme: str, meaning: str) -> Item:
    """Return a code item."""
    return {"CodeValue": value, "CodingSchemeDesignator": scheme, "CodeMeaning": meaning}


def _write_seg(
    path: Path,
    header: Item,
    uids: _Uids,
    geometry: Geometry,
    mask: np.ndarray,
    sop_uids: list[str],
    roi_name: str,
) -> None:
    """Write a BINARY DICOM-SEG of the tumour: one frame per CT slice that contains it."""
    frames = [k for k in range(geometry.slices) if mask[k].any()]
    segment = {
        "SegmentNumber": 1,
        "SegmentLabel": roi_name,
        "SegmentDescription": roi_name,
        "SegmentAlgorithmType": "MANUAL",
        "SegmentedPropertyCategoryCodeSequence": [
            _code("49755003", "SCT", "Morphologically Altered Structure")
        ],
        "SegmentedPropertyTypeCodeSequence": [_code("4147007", "SCT", "Mass")],
    }
    item = {
        **header,
        "Modality": "SEG",
        "SeriesInstanceUID": uids.seg_series,
        "SeriesNumber": "3",
        "SeriesDescription": "Synthetic tumour segmentation",
        "InstanceNumber": "1",
        "ContentDate": header["StudyDate"],
        "ContentTime": header["StudyTime"],
        "ImageType": ["DERIVED", "PRIMARY"],
        "ContentLabel": "TUMOUR",
        "ContentDescription": "Synthetic tumour",
        "ContentCreatorName": "",
        "ManufacturerModelName": "synthetic",
        "DeviceSerialNumber": "1",
        "SoftwareVersions": "1",
        "SegmentationType": "BINARY",
        "LossyImageCompression": "00",
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "Rows": geometry.rows,
        "Columns": geometry.columns,
        "BitsAllocated": 1,
        "BitsStored": 1,
        "HighBit": 0,
        "PixelRepresentation": 0,
        "SegmentSequence": [segment],
        "ReferencedSeriesSequence": [
            {
                "SeriesInstanceUID": uids.ct_series,
                "ReferencedInstanceSequence": [_ref(CTImageStorage, u) for u in sop_uids],
            }
        ],
        **_seg_dimensions(uids),
        **_seg_functional_groups(geometry, frames, sop_uids),
        "NumberOfFrames": str(len(frames)),
        "PixelData": Raw("OB", pack_bits(mask[frames].astype(np.uint8))),
    }
    write_dicom_file(path, SegmentationStorage, uids.make("seg"), item)


def _seg_dimensions(uids: _Uids) -> Item:
    """Index frames by segment number and image position (the usual SEG dimensions)."""
    organization = uids.make("seg-dimensions")
    index_items = [
        {
            "DimensionOrganizationUID": organization,
            "DimensionIndexPointer": tag_for_keyword(pointer),
            "FunctionalGroupPointer": tag_for_keyword(group),
            "DimensionDescriptionLabel": pointer,
        }
        for pointer, group in (
            ("ReferencedSegmentNumber", "SegmentIdentificationSequence"),
            ("ImagePositionPatient", "PlanePositionSequence"),
        )
    ]
    return {
        "DimensionOrganizationSequence": [{"DimensionOrganizationUID": organization}],
        "DimensionOrganizationType": "3D",
        "DimensionIndexSequence": index_items,
    }


def _seg_functional_groups(geometry: Geometry, frames: list[int], sop_uids: list[str]) -> Item:
    """Return the shared (orientation, spacing) and per-frame (position, source) groups."""
    ox, oy, _ = geometry.origin
    _, _, zs = voxel_centres(geometry)
    measures = {
        "PixelSpacing": [_ds(v) for v in geometry.pixel_spacing],
        "SliceThickness": _ds(geometry.slice_thickness),
        "SpacingBetweenSlices": _ds(geometry.slice_thickness),
    }
    shared = {
        "PixelMeasuresSequence": [measures],
        "PlaneOrientationSequence": [{"ImageOrientationPatient": ["1", "0", "0", "0", "1", "0"]}],
    }
    purpose = _code("121322", "DCM", "Source image for image processing operation")
    per_frame = [
        {
            "FrameContentSequence": [{"DimensionIndexValues": [1, position]}],
            "PlanePositionSequence": [
                {"ImagePositionPatient": [_ds(ox), _ds(oy), _ds(float(zs[k]))]}
            ],
            "DerivationImageSequence": [
                {
                    "DerivationCodeSequence": [_code("113076", "DCM", "Segmentation")],
                    "SourceImageSequence": [
                        {
                            **_ref(CTImageStorage, sop_uids[k]),
                            "PurposeOfReferenceCodeSequence": [purpose],
                        }
                    ],
                }
            ],
            "SegmentIdentificationSequence": [{"ReferencedSegmentNumber": 1}],
        }
        for position, k in enumerate(frames, start=1)
    ]
    return {
        "SharedFunctionalGroupsSequence": [shared],
        "PerFrameFunctionalGroupsSequence": per_frame,
    }
