"""Album rules: the ROI-name map (cached per album, recomputed when its studies change)."""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.exc import IntegrityError

from shared.albums.models import AlbumRoiCache
from shared.errors import DomainError
from shared.imaging.source import (
    CONTOUR_MODALITIES,
    ROI_NAME,
    SEGMENT_DESCRIPTION,
    SEGMENT_SEQUENCE,
    STRUCTURE_SET_ROI_SEQUENCE,
    ImageSource,
)

log = logging.getLogger(__name__)
SCAN_THREADS = 8


def roi_names_from_metadata(instances: list[dict[str, Any]]) -> set[str]:
    """Collect RTSTRUCT ROI names and SEG segment descriptions from DICOM JSON metadata."""
    names: set[str] = set()
    for instance in instances:
        for tag, name_tag in (
            (STRUCTURE_SET_ROI_SEQUENCE, ROI_NAME),
            (SEGMENT_SEQUENCE, SEGMENT_DESCRIPTION),
        ):
            for item in instance.get(tag, {}).get("Value", []):
                value = item.get(name_tag, {}).get("Value", [])
                if value:
                    names.add(str(value[0]))
    return names


def study_roi_names(source: ImageSource, album_id: str, study_uid: str) -> set[str]:
    """Return the ROI names of one study (from its RTSTRUCT and SEG series)."""
    names: set[str] = set()
    for series in source.list_series(album_id, study_uid, CONTOUR_MODALITIES):
        metadata = source.series_metadata(album_id, study_uid, series.series_uid)
        names |= roi_names_from_metadata(metadata)
    return names


def scan_rois(
    source: ImageSource, album_id: str, study_uids: list[str]
) -> tuple[dict[str, int], int]:
    """Count, per ROI name, the studies that contain it; return the map and the failures."""
    counts: Counter[str] = Counter()
    failures = 0

    def scan(uid: str) -> set[str] | None:
        try:
            return study_roi_names(source, album_id, uid)
        except DomainError as exc:
            log.warning("album %s study %s: ROI scan failed: %s", album_id, uid, exc.message)
            return None

    with ThreadPoolExecutor(max_workers=SCAN_THREADS) as pool:
        for names in pool.map(scan, study_uids):
            if names is None:
                failures += 1
            else:
                counts.update(names)
    return dict(sorted(counts.items())), failures


def album_rois(
    session: so.Session, *, source: ImageSource, album_id: str, force: bool = False
) -> dict[str, int]:
    """Return the album's ROI map, from the cache unless its studies changed (or forced).

    The study list is always read with the caller's credentials first, so a user who cannot
    see the album gets the source's refusal, never the cached map.
    """
    study_uids = sorted(s.study_uid for s in source.list_studies(album_id))
    cache = session.scalar(sa.select(AlbumRoiCache).where(AlbumRoiCache.album_id == album_id))
    if (
        cache is not None
        and not force
        and cache.rois is not None
        and cache.study_uids == study_uids
    ):
        return cache.rois
    rois, failures = scan_rois(source, album_id, study_uids)
    if failures:
        return rois  # incomplete: answer, but do not cache it
    if cache is None:
        _insert_cache(session, album_id, study_uids, rois)
    else:
        cache.study_uids, cache.rois = study_uids, rois
        session.flush()
    return rois


def _insert_cache(session: so.Session, album_id: str, study_uids: list[str], rois: dict) -> None:
    """Insert the cache row; a concurrent request that inserted it first wins harmlessly."""
    try:
        with session.begin_nested():
            session.add(AlbumRoiCache(album_id=album_id, study_uids=study_uids, rois=rois))
    except IntegrityError:
        log.info("album %s: ROI cache written concurrently", album_id)
