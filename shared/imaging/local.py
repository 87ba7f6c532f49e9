"""A folder of DICOM files as an image source: each sub-folder of the root is an album.

Studies are found by reading headers (never pixels) and grouping by StudyInstanceUID. The index
is cached per album folder and refreshed when files appear, change or go away, re-reading only
the files that changed. Album ids are plain folder names and can never leave the root.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pydicom
import pydicom.config
from pydicom.filereader import read_partial
from pydicom.tag import Tag

from shared.errors import NotFound
from shared.imaging.source import (
    MODALITIES_IN_STUDY,
    NUMBER_OF_STUDY_INSTANCES,
    NUMBER_OF_STUDY_SERIES,
    PATIENT_ID,
    PATIENT_NAME,
    STUDY_DATE,
    STUDY_DESCRIPTION,
    STUDY_UID,
    AlbumInfo,
    SeriesInfo,
    StudyInfo,
)

log = logging.getLogger(__name__)

ALBUM_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_. -]{0,127}$")
HEADER_TAGS = [
    "SpecificCharacterSet",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "Modality",
    "PatientID",
    "PatientName",
    "StudyDate",
    "StudyDescription",
    "SeriesDescription",
    "InstanceNumber",
]
_HEADER_TAG_NUMBERS = [Tag(keyword) for keyword in HEADER_TAGS]
LAST_HEADER_TAG = 0x00200013  # InstanceNumber: nothing after it is needed for the index
RESCAN_SECONDS = 1.0


@dataclass(frozen=True)
class Instance:
    """What the index keeps of one DICOM file."""

    path: Path
    study_uid: str
    series_uid: str
    sop_uid: str
    modality: str
    patient_id: str | None = None
    patient_name: str | None = None
    study_date: str | None = None
    study_description: str | None = None
    series_description: str | None = None
    instance_number: int | None = None


@dataclass
class AlbumIndex:
    """The indexed files of one album folder, with the stamps they were read at."""

    stamps: dict[str, tuple[int, int]] = field(default_factory=dict)
    instances: dict[str, Instance | None] = field(default_factory=dict)
    checked_at: float = 0.0

    @cached_property
    def by_study(self) -> dict[str, list[Instance]]:
        """Group the DICOM instances by StudyInstanceUID (computed once per index)."""
        grouped: dict[str, list[Instance]] = {}
        for item in self.instances.values():
            if item is not None:
                grouped.setdefault(item.study_uid, []).append(item)
        return grouped


# One cache per process, shared by the sources that requests create and drop.
_cache_lock = threading.Lock()
_cache: dict[Path, AlbumIndex] = {}
_album_locks: dict[Path, threading.Lock] = {}
_pydicom_lock = threading.RLock()


class LocalFolderSource:
    """Albums as sub-folders of a root folder."""

    def __init__(self, root: Path, *, rescan_seconds: float = RESCAN_SECONDS) -> None:
        self.root = Path(root)
        # Stat-ing every file costs ~40 ms per 1,000 files; a ROI scan asks many times a second.
        self.rescan_seconds = rescan_seconds

    def _index(self, album_id: str) -> AlbumIndex:
        """Return the index of an album's folder."""
        return album_index(self._album_dir(album_id), self.rescan_seconds)

    def list_albums(self) -> list[AlbumInfo]:
        """Return one album per sub-folder of the root."""
        if not self.root.is_dir():
            return []
        names = sorted(
            entry.name
            for entry in os.scandir(self.root)
            if entry.is_dir(follow_symlinks=False) and ALBUM_ID_RE.match(entry.name)
        )
        return [self.album(name) for name in names]

    def album(self, album_id: str) -> AlbumInfo:
        """Return the album of a sub-folder; NotFound when there is no such folder."""
        studies = self._index(album_id).by_study
        return AlbumInfo(album_id=album_id, name=album_id, number_of_studies=len(studies))

    def list_studies(self, album_id: str) -> list[StudyInfo]:
        """Return the album's studies with QIDO-style JSON built from their headers."""
        studies = self._index(album_id).by_study
        return [study_record(uid, studies[uid]) for uid in sorted(studies)]

    def list_series(
        self, album_id: str, study_uid: str, modalities: tuple[str, ...] | None = None
    ) -> list[SeriesInfo]:
        """Return the study's series, optionally only some modalities."""
        wanted = {m.upper() for m in modalities or ()}
        grouped: dict[str, list[Instance]] = {}
        for item in self._study(album_id, study_uid):
            grouped.setdefault(item.series_uid, []).append(item)
        series = [
            SeriesInfo(
                series_uid=uid,
                modality=items[0].modality,
                description=items[0].series_description,
                number_of_instances=len(items),
            )
            for uid, items in sorted(grouped.items())
        ]
        return [s for s in series if not wanted or s.modality.upper() in wanted]

    def series_metadata(
        self, album_id: str, study_uid: str, series_uid: str
    ) -> list[dict[str, Any]]:
        """Return the DICOM JSON of every instance of the series (pixel data left out)."""
        items = self._series(album_id, study_uid, series_uid)
        with lenient_reading():
            return [
                pydicom.dcmread(i.path, stop_before_pixels=True, force=True).to_json_dict()
                for i in items
            ]

    def download_series(
        self, album_id: str, study_uid: str, series_uid: str, dest: Path
    ) -> list[Path]:
        """Hard-link (or copy, across file systems) the series' files into `dest`."""
        dest.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        for number, item in enumerate(self._series(album_id, study_uid, series_uid), start=1):
            target = dest / f"{number:05d}.dcm"
            try:
                os.link(item.path, target)
            except OSError:
                shutil.copyfile(item.path, target)
            written.append(target)
        return written

    # helpers --------------------------------------------------------------------------------
    def _album_dir(self, album_id: str) -> Path:
        """Resolve an album id to its folder, refusing anything that is not a plain child."""
        if not ALBUM_ID_RE.match(album_id) or album_id.strip(". ") == "":
            raise NotFound(f"Album {album_id!r} not found")
        root = self.root.resolve()
        folder = (root / album_id).resolve()
        if folder.parent != root or not folder.is_dir():
            raise NotFound(f"Album {album_id!r} not found")
        return folder

    def _study(self, album_id: str, study_uid: str) -> list[Instance]:
        """Return the instances of one study of the album, or raise NotFound."""
        items = self._index(album_id).by_study.get(study_uid)
        if not items:
            raise NotFound(f"Study {study_uid} is not in album {album_id!r}")
        return items

    def _series(self, album_id: str, study_uid: str, series_uid: str) -> list[Instance]:
        """Return the instances of one series, in instance-number order."""
        items = [i for i in self._study(album_id, study_uid) if i.series_uid == series_uid]
        if not items:
            raise NotFound(f"Series {series_uid} is not in study {study_uid}")
        return sorted(items, key=lambda i: (i.instance_number or 0, i.path.name))


def album_index(folder: Path, rescan_seconds: float = RESCAN_SECONDS) -> AlbumIndex:
    """Return the folder's index, re-reading only files that are new or changed."""
    with _cache_lock:
        lock = _album_locks.setdefault(folder, threading.Lock())
    with lock:
        cached = _cache.get(folder)
        now = time.monotonic()
        if cached is not None and now - cached.checked_at < rescan_seconds:
            return cached
        stamps = scan_files(folder)
        if cached is not None and cached.stamps == stamps:
            cached.checked_at = now
            return cached
        old = cached or AlbumIndex()
        index = AlbumIndex(stamps=stamps, checked_at=now)
        for rel, stamp in stamps.items():
            if old.stamps.get(rel) == stamp and rel in old.instances:
                index.instances[rel] = old.instances[rel]
            else:
                index.instances[rel] = read_instance(folder / rel)
        log.info(
            "indexed album folder %s: %d files, %d studies",
            folder.name,
            len(stamps),
            len(index.by_study),
        )
        with _cache_lock:
            _cache[folder] = index
        return index


def scan_files(folder: Path) -> dict[str, tuple[int, int]]:
    """Return (mtime_ns, size) of every regular file under the folder (no symlinks)."""
    stamps: dict[str, tuple[int, int]] = {}
    stack = [folder]
    while stack:
        current = stack.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                # Symlinks are skipped so that nothing outside the album is ever served.
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    stat = entry.stat(follow_symlinks=False)
                    rel = os.path.relpath(entry.path, folder)
                    stamps[rel] = (stat.st_mtime_ns, stat.st_size)
    return stamps


def read_instance(path: Path) -> Instance | None:
    """Read the indexed header fields of a file; None when it is not a usable DICOM file."""
    try:
        with lenient_reading(), path.open("rb") as handle:
            # Stop at the last tag we need: RTSTRUCT contours and pixels are never parsed.
            ds = read_partial(
                handle,
                stop_when=lambda tag, vr, length: tag > LAST_HEADER_TAG,
                force=True,
                specific_tags=_HEADER_TAG_NUMBERS,
            )
            return _instance(path, ds)
    except Exception:  # any unreadable or non-DICOM file is just not part of the album
        log.debug("skipping %s: not a DICOM instance", path.name)
        return None


@contextmanager
def lenient_reading() -> Iterator[None]:
    """Read real-world files without pydicom's value-validation warnings.

    Clinical files often break VR limits (STS: a 20-character StudyID in an SH); the values
    are passed on as they are. pydicom's switch is process-wide, hence the lock.
    """
    with _pydicom_lock:
        previous = pydicom.config.settings.reading_validation_mode
        pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
        try:
            yield
        finally:
            pydicom.config.settings.reading_validation_mode = previous


def _instance(path: Path, ds: pydicom.Dataset) -> Instance:
    """Build the index record of a dataset read with HEADER_TAGS."""
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    name = ds.get("PatientName")
    number = ds.get("InstanceNumber")
    return Instance(
        path=path,
        study_uid=str(study),
        series_uid=str(series),
        sop_uid=str(sop),
        modality=str(ds.get("Modality") or ""),
        patient_id=_text(ds.get("PatientID")),
        patient_name=None if name is None else str(name),
        study_date=_text(ds.get("StudyDate")),
        study_description=_text(ds.get("StudyDescription")),
        series_description=_text(ds.get("SeriesDescription")),
        instance_number=_number(number),
    )


def study_record(study_uid: str, items: list[Instance]) -> StudyInfo:
    """Build a StudyInfo whose JSON has the QIDO-RS study shape the frontend reads."""
    first = items[0]
    modalities = sorted({i.modality for i in items if i.modality})
    obj: dict[str, Any] = {
        STUDY_DATE: dicom_element("DA", first.study_date),
        MODALITIES_IN_STUDY: {"vr": "CS", "Value": modalities},
        STUDY_DESCRIPTION: dicom_element("LO", first.study_description),
        PATIENT_NAME: dicom_element(
            "PN", None if first.patient_name is None else {"Alphabetic": first.patient_name}
        ),
        PATIENT_ID: dicom_element("LO", first.patient_id),
        STUDY_UID: dicom_element("UI", study_uid),
        NUMBER_OF_STUDY_SERIES: dicom_element("IS", len({i.series_uid for i in items})),
        NUMBER_OF_STUDY_INSTANCES: dicom_element("IS", len(items)),
    }
    return StudyInfo(study_uid=study_uid, patient_id=first.patient_id, dicom_json=obj)


def dicom_element(vr: str, value: Any) -> dict[str, Any]:
    """Build one DICOM JSON element (no Value key when the value is empty)."""
    if value in (None, ""):
        return {"vr": vr}
    return {"vr": vr, "Value": [value]}


def _number(value: Any) -> int | None:
    """Return an InstanceNumber as int, or None when absent or malformed."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str | None:
    """Return a header value as text, or None when absent or empty."""
    if value is None or str(value) == "":
        return None
    return str(value)
