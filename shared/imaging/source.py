"""The ImageSource interface: what the platform needs from a PACS or album manager."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

# DICOM JSON tags used across sources (contract §5).
STUDY_UID = "0020000D"
SERIES_UID = "0020000E"
SOP_INSTANCE_UID = "00080018"
PATIENT_ID = "00100020"
PATIENT_NAME = "00100010"
STUDY_DATE = "00080020"
MODALITY = "00080060"
MODALITIES_IN_STUDY = "00080061"
SERIES_DESCRIPTION = "0008103E"
NUMBER_OF_SERIES_INSTANCES = "00201209"
NUMBER_OF_STUDY_SERIES = "00201206"
NUMBER_OF_STUDY_INSTANCES = "00201208"
STUDY_DESCRIPTION = "00081030"
STRUCTURE_SET_ROI_SEQUENCE = "30060020"
ROI_NAME = "30060026"
SEGMENT_SEQUENCE = "00620002"
SEGMENT_DESCRIPTION = "00620006"
CONTOUR_MODALITIES = ("RTSTRUCT", "SEG")


def dicom_value(obj: dict[str, Any], tag: str) -> Any:
    """Return the first value of a tag in a DICOM JSON object, or None."""
    values = obj.get(tag, {}).get("Value") or []
    return values[0] if values else None


@dataclass(frozen=True)
class AlbumInfo:
    """An album as the frontend knows it (Kheops' album_id, name, number_of_studies)."""

    album_id: str
    name: str
    number_of_studies: int


@dataclass(frozen=True)
class StudyInfo:
    """One study of an album; `dicom_json` is the QIDO-RS study object, passed through as is."""

    study_uid: str
    patient_id: str | None
    dicom_json: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def instance_count(self) -> int | None:
        """Return NumberOfStudyRelatedInstances when the source reported it."""
        value = dicom_value(self.dicom_json, NUMBER_OF_STUDY_INSTANCES)
        try:
            return None if value is None else int(value)
        except (TypeError, ValueError):
            return None


@dataclass(frozen=True)
class SeriesInfo:
    """One series of a study."""

    series_uid: str
    modality: str
    description: str | None = None
    number_of_instances: int | None = None


class ImageSource(Protocol):
    """Read access to albums of DICOM studies, with one caller's credentials."""

    def list_albums(self) -> list[AlbumInfo]:
        """Return the albums the caller can see."""
        ...

    def album(self, album_id: str) -> AlbumInfo:
        """Return the album's details; NotFound when it does not exist or is not visible."""
        ...

    def list_studies(self, album_id: str) -> list[StudyInfo]:
        """Return the album's studies."""
        ...

    def list_series(
        self, album_id: str, study_uid: str, modalities: tuple[str, ...] | None = None
    ) -> list[SeriesInfo]:
        """Return a study's series, optionally only those of the given modalities."""
        ...

    def series_metadata(
        self, album_id: str, study_uid: str, series_uid: str
    ) -> list[dict[str, Any]]:
        """Return the DICOM JSON metadata of every instance of a series (no pixel data)."""
        ...

    def download_series(
        self, album_id: str, study_uid: str, series_uid: str, dest: Path
    ) -> list[Path]:
        """Write the series' instances as DICOM files into `dest`; return their paths."""
        ...
