"""The pure extraction entry points: DICOM study folder -> feature vectors per (modality, ROI).

No database, Celery or Redis here: the task layer fetches the series `plan_series` asks for,
calls `extract_study`, and stores the vectors. Errors are `ExtractionError` with a readable
message; the study's task fails with it.
"""

from __future__ import annotations

import functools
import json
import logging
import warnings as pywarnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from radiomics import featureextractor

from shared.imaging.source import SeriesInfo
from shared.presets.config_schema import ExtractionConfig, ModalityExtraction, PyRadiomicsParams
from workers.extraction import pet, preprocess
from workers.extraction.dicom import (
    CONTOUR_MODALITIES,
    IMAGE_MODALITIES,
    DicomSeries,
    ExtractionError,
    modality_label,
    read_image,
    scan_folder,
)
from workers.extraction.masks import RoiRef, build_masks, read_rois

__all__ = [
    "ExtractionError",
    "FeatureVectorResult",
    "StudyExtraction",
    "extract_image_mask",
    "extract_study",
    "plan_series",
]

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class FeatureVectorResult:
    """The features of one (modality label, ROI) pair; `values` is float64 in `names` order."""

    modality: str
    roi: str
    names: list[str]
    values: np.ndarray


@dataclass
class StudyExtraction:
    """Everything extracted from one study, with the warnings worth showing to the user."""

    study_uid: str
    patient_id: str | None
    vectors: list[FeatureVectorResult]
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Job:
    """One image to extract and the ROIs applied to it."""

    series: DicomSeries
    label: str
    rois: list[RoiRef]


# --- planning --------------------------------------------------------------------------------


def plan_series(
    contour_files: list[Path],
    series: list[SeriesInfo],
    config: ExtractionConfig,
    rois: Sequence[str],
) -> set[str]:
    """Return the image SeriesInstanceUIDs to fetch for the chosen ROIs of one study."""
    chosen = _choose_rois([ref for path in contour_files for ref in read_rois(path)], rois, [])
    images = {s.series_uid: s for s in series if s.modality.upper() in IMAGE_MODALITIES}
    found = {roi: _referenced_uid(roi, images) for roi in chosen}
    referenced = {uid for uid in found.values() if uid is not None}
    # A ROI whose series is not listed is matched by frame of reference, which needs the
    # geometry of every image.
    needed = set(images) if None in found.values() else set(referenced)
    submodalities = config.general.submodalities
    if config.general.combine_segmentation:
        for label, candidates in _group_by_label(images.values(), submodalities).items():
            if label in config.feature_extraction:
                needed.add(_pick(candidates, referenced, lambda s: s.number_of_instances or 0))
    else:
        for uid in referenced:
            _require_configured(_label(images[uid], submodalities), uid, config)
    log.info("Planned %d image series for ROIs %s", len(needed), sorted(r.name for r in chosen))
    return needed


def _referenced_uid(roi: RoiRef, images: dict[str, Any]) -> str | None:
    """Return the first series the ROI references that is among the images, if any."""
    return next((uid for uid in roi.referenced_series if uid in images), None)


# --- extraction ------------------------------------------------------------------------------


def extract_study(
    study_dir: Path,
    config: ExtractionConfig,
    rois: Sequence[str],
    progress: Progress | None = None,
) -> StudyExtraction:
    """Convert a study folder (images + RTSTRUCT/SEG) and extract the configured features."""
    report = progress or (lambda _message: None)
    report("Reading DICOM")
    every = scan_folder(study_dir)
    images = {s.series_uid: s for s in every if s.modality in IMAGE_MODALITIES}
    contours = [p for s in every if s.modality in CONTOUR_MODALITIES for p in s.paths]
    study_uid, patient_id = _identity(images.values(), contours)
    warnings: list[str] = []
    chosen = _choose_rois([ref for path in contours for ref in read_rois(path)], rois, warnings)
    references = {roi: _reference(roi, images, warnings) for roi in chosen}
    jobs = _jobs(chosen, references, images, config, warnings)
    report("Converting")
    volumes = _read_volumes(jobs, references.values(), images, warnings)
    masks = _native_masks(references, volumes)
    vectors = [
        vector for job in jobs for vector in _extract_job(job, volumes, masks, config, report)
    ]
    log.info("Study %s: %d feature vector(s)", study_uid, len(vectors))
    return StudyExtraction(study_uid, patient_id, vectors, warnings)


def extract_image_mask(image: sitk.Image, mask: sitk.Image, params: dict) -> dict[str, float]:
    """Run one PyRadiomics extractor on an image and a mask; drop the diagnostics."""
    try:
        extractor = _extractor(json.dumps(params, sort_keys=True))
        result = extractor.execute(image, mask)
    except Exception as exc:
        raise ExtractionError(f"PyRadiomics failed: {exc}") from exc
    return {
        name: float(value) for name, value in result.items() if not name.startswith("diagnostics_")
    }


@functools.lru_cache(maxsize=32)
def _extractor(params_json: str) -> featureextractor.RadiomicsFeatureExtractor:
    """Return this process's extractor for a parameter set (keyed by its canonical JSON).

    Building one validates the parameters with pykwalify, about 40 ms: a worker reuses it
    for every ROI and study, as PyRadiomics' own batch mode does (execute keeps no state).
    """
    with pywarnings.catch_warnings():
        # pykwalify (PyRadiomics' parameter validator) loads its extension module with the
        # deprecated importlib `load_module`; nothing to fix on our side.
        pywarnings.filterwarnings("ignore", "the load_module", DeprecationWarning)
        return featureextractor.RadiomicsFeatureExtractor(json.loads(params_json))


def pyradiomics_params(block: PyRadiomicsParams) -> dict[str, Any]:
    """Turn a validated block into the parameter dict PyRadiomics expects."""
    params: dict[str, Any] = {
        "imageType": {
            name: (setting.model_dump(exclude_none=True) if setting else {})
            for name, setting in block.imageType.items()
        },
        "featureClass": dict(block.featureClass),
        "setting": block.setting.model_dump(exclude_none=True),
    }
    if block.voxelSetting is not None:
        params["voxelSetting"] = block.voxelSetting.model_dump(exclude_none=True)
    return params


# --- steps -----------------------------------------------------------------------------------


def _identity(images: Iterable[DicomSeries], contours: list[Path]) -> tuple[str, str | None]:
    """Return the study UID and patient ID; refuse folders without images or contours."""
    images = list(images)
    if not images:
        raise ExtractionError("The study has no CT, PT or MR image series")
    if not contours:
        raise ExtractionError("The study has no RTSTRUCT or SEG contours to extract from")
    studies = {s.study_uid for s in images}
    if len(studies) > 1:
        raise ExtractionError(f"The folder holds {len(studies)} studies; extract one at a time")
    return studies.pop(), next((s.patient_id for s in images if s.patient_id), None)


def _choose_rois(refs: list[RoiRef], wanted: Sequence[str], warnings: list[str]) -> list[RoiRef]:
    """Keep the ROIs whose name was asked for; error when none is in the study."""
    available = sorted({ref.name for ref in refs})
    if not refs:
        raise ExtractionError("The study's RTSTRUCT/SEG files define no ROI")
    chosen = [ref for ref in refs if ref.name in wanted]
    if not chosen:
        raise ExtractionError(
            f"None of the requested ROIs ({', '.join(wanted) or 'none'}) is in this study; "
            f"it has: {', '.join(available)}"
        )
    missing = sorted(set(wanted) - set(available))
    if missing:
        warnings.append(f"ROI(s) not in this study, skipped: {', '.join(missing)}")
    return sorted(chosen, key=lambda ref: (str(ref.path), ref.number))


def _reference(roi: RoiRef, images: dict[str, DicomSeries], warnings: list[str]) -> DicomSeries:
    """Return the image series a ROI was drawn on (its reference, else its frame of reference)."""
    uid = _referenced_uid(roi, images)
    if uid is not None:
        return images[uid]
    frame = roi.frame_of_reference_uid
    same_frame = [s for s in images.values() if frame and s.frame_of_reference_uid == frame]
    if not same_frame:
        raise ExtractionError(
            f"ROI '{roi.name}' ({roi.path.name}) refers to no image series of this study "
            "(neither by series UID nor by frame of reference)"
        )
    best = min(same_frame, key=lambda s: (s.pixel_spacing or float("inf"), s.series_uid))
    warnings.append(
        f"ROI '{roi.name}': its referenced series is not in the study; used {best.modality} "
        f"series {best.series_uid}, which shares its frame of reference"
    )
    return best


def _jobs(
    chosen: list[RoiRef],
    references: dict[RoiRef, DicomSeries],
    images: dict[str, DicomSeries],
    config: ExtractionConfig,
    warnings: list[str],
) -> list[_Job]:
    """Decide which ROIs apply to which image (combine_segmentation or by reference)."""
    submodalities = config.general.submodalities
    if config.general.combine_segmentation:
        referenced = {s.series_uid for s in references.values()}
        by_label = _group_by_label(images.values(), submodalities)
        configured = sorted(label for label in by_label if label in config.feature_extraction)
        if not configured:
            raise ExtractionError(
                f"No image series of this study ({', '.join(sorted(by_label))}) has a "
                f"feature_extraction entry (configured: {', '.join(config.feature_extraction)})"
            )
        targets = [
            (label, _pick(by_label[label], referenced, lambda s: len(s.paths), warnings))
            for label in configured
        ]
        pairs = [(uid, label, roi) for label, uid in targets for roi in chosen]
    else:
        pairs = []
        for roi in chosen:
            series = references[roi]
            label = _label(series, submodalities)
            _require_configured(label, series.series_uid, config)
            pairs.append((series.series_uid, label, roi))
    return _group_jobs(pairs, images, warnings)


def _group_jobs(
    pairs: list[tuple[str, str, RoiRef]], images: dict[str, DicomSeries], warnings: list[str]
) -> list[_Job]:
    """Group (image, ROI) pairs per image, keeping one ROI per name."""
    jobs: dict[str, _Job] = {}
    for uid, label, roi in pairs:
        job = jobs.setdefault(uid, _Job(images[uid], label, []))
        if any(existing.name == roi.name for existing in job.rois):
            warnings.append(
                f"ROI '{roi.name}' is defined more than once for {label}; "
                f"kept the one from {job.rois[0].path.name}"
            )
            continue
        job.rois.append(roi)
    return list(jobs.values())


def _label(item: SeriesInfo | DicomSeries, submodalities: bool) -> str:
    """Return the modality label of a series (SeriesInfo or DicomSeries)."""
    return modality_label(item.modality.upper(), item.description, submodalities)


def _group_by_label(items: Iterable[Any], submodalities: bool) -> dict[str, list[Any]]:
    """Group series (SeriesInfo or DicomSeries) by modality label."""
    groups: dict[str, list[Any]] = {}
    for item in items:
        groups.setdefault(_label(item, submodalities), []).append(item)
    return groups


def _pick(
    candidates: list[Any],
    referenced: set[str],
    count: Callable[[Any], int],
    warnings: list[str] | None = None,
) -> str:
    """Choose one series among those sharing a label: a referenced one, else the largest."""
    ordered = sorted(
        candidates, key=lambda s: (s.series_uid not in referenced, -count(s), s.series_uid)
    )
    if len(candidates) > 1 and warnings is not None:
        warnings.append(
            f"{len(candidates)} series share the modality {ordered[0].modality}; "
            f"used series {ordered[0].series_uid}"
        )
    return ordered[0].series_uid


def _require_configured(label: str, series_uid: str, config: ExtractionConfig) -> None:
    """Refuse an image whose modality label has no feature_extraction entry."""
    if label not in config.feature_extraction:
        raise ExtractionError(
            f"Modality {label} (series {series_uid}) has no feature_extraction entry in the "
            f"configuration (configured: {', '.join(config.feature_extraction)})"
        )


def _read_volumes(
    jobs: list[_Job],
    references: Iterable[DicomSeries],
    images: dict[str, DicomSeries],
    warnings: list[str],
) -> dict[str, sitk.Image]:
    """Read every image series that is extracted or that a mask is drawn on."""
    weight = next((s.patient_weight for s in images.values() if s.patient_weight), None)
    wanted = {job.series.series_uid: job.series for job in jobs}
    wanted.update({s.series_uid: s for s in references})
    volumes = {}
    for uid, series in wanted.items():
        volumes[uid], notes = read_image(series, fallback_weight=weight)
        warnings.extend(notes)
    return volumes


def _native_masks(
    references: dict[RoiRef, DicomSeries], volumes: dict[str, sitk.Image]
) -> dict[RoiRef, sitk.Image]:
    """Build each chosen ROI's mask on the grid of the image it was drawn on."""
    groups: dict[tuple[Path, str], list[RoiRef]] = {}
    for roi, series in references.items():
        groups.setdefault((roi.path, series.series_uid), []).append(roi)
    masks = {}
    for (path, uid), rois in groups.items():
        built = build_masks(path, volumes[uid], [roi.name for roi in rois], rois[0].kind)
        masks.update({roi: built[roi.name] for roi in rois})
    return masks


def _extract_job(
    job: _Job,
    volumes: dict[str, sitk.Image],
    masks: dict[RoiRef, sitk.Image],
    config: ExtractionConfig,
    report: Progress,
) -> list[FeatureVectorResult]:
    """Preprocess one image and extract every ROI applied to it."""
    native = {roi.name: masks[roi] for roi in job.rois}
    try:
        cropped = preprocess.crop_to_masks(
            volumes[job.series.series_uid], list(native.values()), config.general.padding
        )
        image = preprocess.preprocess_image(cropped, config, job.label, native)
    except ExtractionError as exc:
        raise ExtractionError(f"{job.label} ({', '.join(native)}): {exc}") from exc
    resampler = preprocess.mask_resampler(config, job.label)
    vectors = []
    for roi in job.rois:
        report(f"Extracting {job.label}/{roi.name}")
        try:
            mask = preprocess.mask_on_grid(native[roi.name], image, resampler)
            extraction = config.feature_extraction[job.label]
            names, values = _extract_blocks(image, mask, extraction, job.series.modality)
        except ExtractionError as exc:
            raise ExtractionError(f"{job.label}/{roi.name}: {exc}") from exc
        vectors.append(FeatureVectorResult(job.label, roi.name, names, values))
    return vectors


def _extract_blocks(
    image: sitk.Image, mask: sitk.Image, extraction: ModalityExtraction, modality: str
) -> tuple[list[str], np.ndarray]:
    """Run every named PyRadiomics block and merge their features (names must not clash).

    PT vectors also get MTV, TLG and SUVpeak when a block computes original first-order
    features, as the reference platform's PET vectors did.
    """
    merged: dict[str, float] = {}
    if modality == "PT" and any(map(_original_firstorder, extraction.pyradiomics.values())):
        merged.update(pet.pet_extras(image, mask))
    for block_name, block in extraction.pyradiomics.items():
        features = extract_image_mask(image, mask, pyradiomics_params(block))
        clash = sorted(merged.keys() & features.keys())
        if clash:
            raise ExtractionError(
                f"PyRadiomics block '{block_name}' produces feature names that another block "
                f"already produced ({', '.join(clash[:3])}...); use distinct image types or "
                "feature classes per block"
            )
        merged.update(features)
    names = list(merged)
    return names, np.array([merged[name] for name in names], dtype=np.float64)


def _original_firstorder(block: PyRadiomicsParams) -> bool:
    """Whether a block computes first-order features on the original image."""
    classes = block.featureClass
    return "Original" in block.imageType and (not classes or "firstorder" in classes)
