"""Schema of the extraction configuration (preset YAML) and its validation.

The format is the one the frontend edits and sends back as `config` (keys `general`,
`volume_preprocessing`, `mask_preprocessing`, `feature_extraction`). Unknown keys are errors, so
a typo such as `binWidht` is reported instead of silently falling back to a default.
"""

from __future__ import annotations

import copy
import functools
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.errors import InvalidInput
from shared.presets.vocabulary import FEATURE_CLASSES, IMAGE_TYPES, WAVELETS

# libyaml's loader parses ~20x faster than the pure-Python one, with the same safe constructors.
SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

INTERPOLATORS = {
    "sitkNearestNeighbor",
    "sitkLinear",
    "sitkBSpline",
    "sitkGaussian",
    "sitkLabelGaussian",
    "sitkHammingWindowedSinc",
    "sitkCosineWindowedSinc",
    "sitkWelchWindowedSinc",
    "sitkLanczosWindowedSinc",
    "sitkBlackmanWindowedSinc",
}


class Strict(BaseModel):
    """Base of every config block: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class General(Strict):
    """`general`: cropping margin, sub-modalities and ROI combination."""

    padding: float | Literal["whole_image"] = 10
    submodalities: bool = False
    combine_segmentation: bool = False
    result_format: Literal["long", "multiindex"] = "long"
    additional_dicom_tags: list[str] = Field(default_factory=list)
    study_processor: str | None = None
    patch_size: float | None = None

    @field_validator("padding")
    @classmethod
    def _positive_padding(cls, value: float | str) -> float | str:
        if isinstance(value, float) and value < 0:
            raise ValueError("padding must be >= 0 mm or 'whole_image'")
        return value


class BsplineResampler(Strict):
    """Resample onto an isotropic/anisotropic grid; a spacing <= 0 keeps that axis."""

    resampling_spacing: list[float] = Field(min_length=3, max_length=3)
    order: int = Field(3, ge=0, le=5)
    mode: Literal["mirror", "nearest", "reflect", "constant", "wrap"] = "mirror"
    cval: float = 0.0


class Standardizer(Strict):
    """z-score with the mean/std of voxels above a threshold."""

    threshold: float = 0.0


class MaskedStandardizer(Strict):
    """z-score with the mean/std of voxels inside a named ROI."""

    mask_label: str


class VolumeProcessors(Strict):
    """The processors applied to an image, in this order."""

    bspline_resampler: BsplineResampler | None = None
    standardizer: Standardizer | None = None
    masked_standardizer: MaskedStandardizer | None = None
    # The identity processor takes no parameters: only `{}` (or null) is accepted.
    identity_processor: Annotated[dict[str, None], Field(max_length=0)] | None = None


class BinaryBsplineResampler(Strict):
    """Resample a mask onto the processed image grid, then threshold."""

    order: int = Field(1, ge=0, le=5)
    threshold: float = Field(0.5, gt=0, lt=1)


class MaskProcessors(Strict):
    """The processors applied to masks."""

    binary_bspline_resampler: BinaryBsplineResampler | None = None


class RadiomicsSetting(Strict):
    """PyRadiomics `setting` keys (the parameter-file schema of PyRadiomics 3.1)."""

    minimumROIDimensions: int | None = Field(None, ge=1, le=3)
    minimumROISize: int | None = Field(None, gt=0)
    geometryTolerance: float | None = Field(None, gt=0)
    correctMask: bool | None = None
    additionalInfo: bool | None = None
    label: int | None = Field(None, gt=0)
    label_channel: int | None = Field(None, ge=0)
    binWidth: float | None = Field(None, gt=0)
    binCount: int | None = Field(None, gt=0)
    normalize: bool | None = None
    normalizeScale: float | None = Field(None, gt=0)
    removeOutliers: float | None = Field(None, gt=0)
    resampledPixelSpacing: list[float] | None = None
    interpolator: str | int | None = None
    padDistance: int | None = Field(None, ge=0)
    distances: list[int] | None = None
    force2D: bool | None = None
    force2Ddimension: int | None = Field(None, ge=0, le=2)
    resegmentRange: list[float] | None = Field(None, min_length=1, max_length=2)
    resegmentMode: Literal["absolute", "relative", "sigma"] | None = None
    resegmentShape: bool | None = None
    preCrop: bool | None = None
    sigma: list[float] | None = None
    start_level: int | None = Field(None, ge=0)
    level: int | None = Field(None, gt=0)
    wavelet: str | None = None
    gradientUseSpacing: bool | None = None
    lbp2DRadius: float | None = Field(None, gt=0)
    lbp2DSamples: int | None = Field(None, ge=1)
    lbp2DMethod: Literal["default", "ror", "uniform", "var"] | None = None
    lbp3DLevels: int | None = Field(None, ge=1)
    lbp3DIcosphereRadius: float | None = Field(None, gt=0)
    lbp3DIcosphereSubdivision: int | None = Field(None, ge=0)
    voxelArrayShift: int | None = None
    symmetricalGLCM: bool | None = None
    weightingNorm: Literal["euclidean", "manhattan", "infinity", "no_weighting"] | None = None
    gldm_a: int | None = Field(None, ge=0)

    @field_validator("interpolator")
    @classmethod
    def _interpolator(cls, value: str | int | None) -> str | int | None:
        if isinstance(value, str) and value not in INTERPOLATORS:
            raise ValueError(f"unknown interpolator {value!r}")
        if isinstance(value, int) and not 1 <= value <= 10:
            raise ValueError("interpolator must be in 1..10")
        return value

    @field_validator("wavelet")
    @classmethod
    def _wavelet(cls, value: str | None) -> str | None:
        if value is not None and value not in WAVELETS:
            raise ValueError(f"unknown wavelet {value!r}")
        return value


class VoxelSetting(Strict):
    """PyRadiomics `voxelSetting` keys (voxel-based feature maps)."""

    kernelRadius: int | None = Field(None, ge=1, le=10)
    maskedKernel: bool | None = None
    initValue: float | None = None
    voxelBatch: int | None = Field(None, ge=-1)


class PyRadiomicsParams(Strict):
    """One named PyRadiomics extractor: image types, feature classes and settings."""

    imageType: dict[str, RadiomicsSetting | None] = Field(
        default_factory=lambda: {"Original": None}
    )
    featureClass: dict[str, list[str] | None] = Field(default_factory=dict)
    setting: RadiomicsSetting = Field(default_factory=RadiomicsSetting)
    voxelSetting: VoxelSetting | None = None

    @field_validator("imageType")
    @classmethod
    def _image_types(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - IMAGE_TYPES)
        if unknown:
            raise ValueError(f"unknown image type(s) {unknown}; known: {sorted(IMAGE_TYPES)}")
        return value

    @field_validator("featureClass")
    @classmethod
    def _feature_classes(cls, value: dict[str, list[str] | None]) -> dict[str, list[str] | None]:
        for name, features in value.items():
            if name not in FEATURE_CLASSES:
                known = sorted(FEATURE_CLASSES)
                raise ValueError(f"unknown feature class {name!r}; known: {known}")
            unknown = sorted(set(features or ()) - FEATURE_CLASSES[name])
            if unknown:
                raise ValueError(f"unknown {name} feature(s) {unknown}")
        return value


class ModalityExtraction(Strict):
    """The extractors of one (sub)modality."""

    pyradiomics: dict[str, PyRadiomicsParams] = Field(min_length=1)


class ExtractionConfig(Strict):
    """A whole extraction configuration (a preset, or a custom YAML from the editor)."""

    general: General = Field(default_factory=General)
    volume_preprocessing: dict[str, VolumeProcessors | None] = Field(default_factory=dict)
    mask_preprocessing: dict[str, MaskProcessors | None] = Field(default_factory=dict)
    feature_extraction: dict[str, ModalityExtraction] = Field(min_length=1)


def _location(loc: tuple[Any, ...]) -> str:
    """Render a pydantic error location as a dotted key path."""
    return ".".join(str(part) for part in loc)


def validation_details(error: ValidationError) -> list[dict[str, str]]:
    """Turn pydantic errors into `[{"key": "a.b.c", "message": ...}]`."""
    details = []
    for item in error.errors():
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        details.append({"key": _location(item["loc"]), "message": message})
    return details


def validate_config(config: Any) -> ExtractionConfig:
    """Validate a parsed configuration; raise InvalidInput naming every bad key."""
    if not isinstance(config, dict):
        raise InvalidInput("The extraction configuration must be a mapping (YAML object)")
    try:
        return ExtractionConfig.model_validate(config)
    except ValidationError as exc:
        details = validation_details(exc)
        listed = "; ".join(f"{d['key']}: {d['message']}" for d in details[:5])
        raise InvalidInput(f"Invalid extraction configuration: {listed}", details=details) from exc


MAX_PRESET_BYTES = 256 * 1024


def _reject_non_plain(text: str) -> None:
    """Refuse anchors, aliases and explicit tags: they can expand a small file a million-fold
    (alias bombs) or build values (`!!binary`) that are not JSON."""
    for event in yaml.parse(text, Loader=SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise InvalidInput(
                f"The preset file uses the YAML alias *{event.anchor}; "
                "aliases and anchors are not accepted"
            )
        if getattr(event, "anchor", None):
            raise InvalidInput(
                f"The preset file uses the YAML anchor &{event.anchor}; "
                "aliases and anchors are not accepted"
            )
        if getattr(event, "tag", None) is not None:
            raise InvalidInput(
                f"The preset file uses the explicit YAML tag {event.tag!r}; "
                "only plain values are accepted"
            )


def parse_yaml(text: str) -> dict[str, Any]:
    """Parse plain preset YAML into a mapping, with a readable error on bad syntax."""
    if len(text.encode()) > MAX_PRESET_BYTES:
        raise InvalidInput(f"The preset file is too large (over {MAX_PRESET_BYTES // 1024} KiB)")
    try:
        _reject_non_plain(text)
        data = yaml.load(text, Loader=SafeLoader)  # a safe loader (libyaml when present)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"The preset file is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidInput("The preset file must contain a YAML mapping")
    return data


@functools.lru_cache(maxsize=32)
def _parse_stored(text: str) -> dict[str, Any]:
    """Parse stored preset text once per distinct text (the cache key is the text itself)."""
    return parse_yaml(text)


def parse_stored_yaml(text: str) -> dict[str, Any]:
    """Parse a stored preset: every preset list read needs every preset, so the parse is cached
    by the exact text (an edited preset is a new key); the caller gets its own copy."""
    return copy.deepcopy(_parse_stored(text))


def canonical_yaml(text: str) -> str:
    """Validate preset YAML and return the canonical text of what was validated (stored as is)."""
    data = parse_yaml(text)
    validate_config(data)
    canonical = yaml.safe_dump(data, default_flow_style=False, sort_keys=False, allow_unicode=True)
    if parse_yaml(canonical) != data:  # e.g. a float that does not survive the round trip
        raise InvalidInput("The preset file holds values that cannot be stored faithfully")
    return canonical


def dump_yaml(config: dict[str, Any]) -> str:
    """Serialise a configuration as block-style YAML with sorted keys (as downloads expect)."""
    return yaml.safe_dump(config, default_flow_style=False, sort_keys=True)
