"""Kheops as an image source: its album API plus DICOMweb under `{base}/api` (contract §5).

Series are fetched with WADO-RS (only the series needed, streamed to disk); the study ZIP route
the reference backend used is the fallback when WADO-RS fails. Workers use a read-only
capability token created here, scoped to the album when Kheops allows it.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pydicom
from pydicom.errors import InvalidDicomError

from shared.errors import Forbidden, NotFound, UpstreamError
from shared.imaging.dicomweb import (
    CHUNK_BYTES,
    DICOM_JSON,
    filter_modalities,
    series_info,
    study_info,
    wado_download,
)
from shared.imaging.http import HttpClient
from shared.imaging.local import lenient_reading
from shared.imaging.source import MODALITY, AlbumInfo, SeriesInfo, StudyInfo

log = logging.getLogger(__name__)

MAX_PAGES = 1000  # a guard against a server whose X-Total-Count never converges
ZIP_DICOM_PREFIX = "DICOM/"


class KheopsSource:
    """Albums, studies and series from Kheops, with a user token or a capability secret."""

    service = "Kheops"

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        client: httpx.Client | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = HttpClient(
            self.service,
            f"{base_url.rstrip('/')}/api",
            headers=headers,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            client=client,
        )

    def __repr__(self) -> str:
        return f"KheopsSource({self.http.base_url!r})"

    # albums and studies --------------------------------------------------------------------
    def list_albums(self) -> list[AlbumInfo]:
        """Return the albums the token can see."""
        return [album_info(obj) for obj in self._paged("albums", [], "application/json")]

    def album(self, album_id: str) -> AlbumInfo:
        """Return an album's details (`GET /api/albums/{id}`)."""
        return album_info(self.http.get_json(f"albums/{album_id}") or {})

    def list_studies(self, album_id: str) -> list[StudyInfo]:
        """Return the album's studies (`GET /api/studies?album=`), all pages."""
        found = self._paged("studies", [("album", album_id)], DICOM_JSON)
        return [study_info(obj) for obj in found]

    def list_series(
        self, album_id: str, study_uid: str, modalities: tuple[str, ...] | None = None
    ) -> list[SeriesInfo]:
        """Return a study's series, filtered by modality on the server (and checked here)."""
        params = [("album", album_id)] + [(MODALITY, m) for m in modalities or ()]
        found = self.http.get_json(f"studies/{study_uid}/series", params=params, accept=DICOM_JSON)
        return filter_modalities([series_info(obj) for obj in found or []], modalities)

    def series_metadata(
        self, album_id: str, study_uid: str, series_uid: str
    ) -> list[dict[str, Any]]:
        """Return the DICOM JSON metadata of every instance of the series."""
        path = f"studies/{study_uid}/series/{series_uid}/metadata"
        found = self.http.get_json(path, params={"album": album_id}, accept=DICOM_JSON)
        return list(found or [])

    # downloads ------------------------------------------------------------------------------
    def download_series(
        self, album_id: str, study_uid: str, series_uid: str, dest: Path
    ) -> list[Path]:
        """Fetch one series with WADO-RS; fall back to the study ZIP when that fails."""
        path = f"studies/{study_uid}/series/{series_uid}"
        try:
            files = wado_download(self.http, path, {"album": album_id}, dest)
        except UpstreamError as exc:
            log.warning("series %s: WADO-RS failed (%s); using the study ZIP", series_uid, exc)
            files = []
        if not files:
            files = self.download_series_from_zip(album_id, study_uid, series_uid, dest)
        log.info("downloaded %d instances of series %s", len(files), series_uid)
        return files

    def download_series_from_zip(
        self, album_id: str, study_uid: str, series_uid: str, dest: Path
    ) -> list[Path]:
        """Download the study as a ZIP and keep the `DICOM/` files of one series."""
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="qi2-kheops-zip-") as tmp:
            archive = Path(tmp) / "study.zip"
            self._download_zip(album_id, study_uid, archive)
            files = extract_series(archive, series_uid, dest)
        if not files:
            raise NotFound(f"{self.service}: series {series_uid} is not in study {study_uid}")
        return files

    def _download_zip(self, album_id: str, study_uid: str, target: Path) -> None:
        """Stream the study ZIP to a file (never into memory)."""
        path = f"studies/{study_uid}"
        params = {"accept": "application/zip", "album": album_id}
        with self.http.stream("GET", path, params=params) as response, target.open("wb") as out:
            try:
                for chunk in response.iter_bytes(CHUNK_BYTES):
                    out.write(chunk)
            except httpx.TransportError as exc:
                raise self.http.body_error("GET", path, exc) from exc

    # capabilities ---------------------------------------------------------------------------
    def create_capability(
        self, album_id: str, title: str, expires_at: dt.datetime
    ) -> tuple[str, str]:
        """Create a read-only capability token for the workers; return (id, secret).

        Album scope (read + download of this album only) needs album-admin rights in Kheops;
        for other members it falls back to a read-only user-scoped token.
        """
        form = {
            "title": title,
            "scope_type": "album",
            "album": album_id,
            "read_permission": "true",
            "download_permission": "true",
            "appropriate_permission": "false",
            "write_permission": "false",
            "expiration_time": kheops_time(expires_at),
        }
        try:
            answer = self._post_capability(form)
        except Forbidden:
            log.info("album %s: not album admin; creating a user-scoped read token", album_id)
            user_form = {k: form[k] for k in ("title", "read_permission", "expiration_time")}
            answer = self._post_capability({**user_form, "scope_type": "user"})
        capability_id, secret = answer.get("id"), answer.get("secret")
        if not capability_id or not secret:
            raise UpstreamError(f"{self.service} answered a capability without id or secret")
        log.info("album %s: capability %s created", album_id, capability_id)
        return str(capability_id), str(secret)

    def revoke_capability(self, capability_id: str) -> None:
        """Revoke a capability token (Kheops: `POST /api/capabilities/{id}/revoke`)."""
        self.http.request(
            "POST", f"capabilities/{capability_id}/revoke", headers={"Accept": "application/json"}
        )
        log.info("capability %s revoked", capability_id)

    def _post_capability(self, form: dict[str, str]) -> dict[str, Any]:
        """POST the capability form and return the JSON answer."""
        response = self.http.request(
            "POST", "capabilities", data=form, headers={"Accept": "application/json"}
        )
        try:
            answer = response.json()
        except ValueError as exc:
            raise UpstreamError(f"{self.service} sent invalid JSON for a capability") from exc
        return answer if isinstance(answer, dict) else {}

    # helpers ----------------------------------------------------------------------------------
    def _paged(self, path: str, params: list[tuple[str, Any]], accept: str) -> list[Any]:
        """GET a list, following `offset` while X-Total-Count says more items exist."""
        items: list[Any] = []
        for _ in range(MAX_PAGES):
            page_params = params + ([("offset", len(items))] if items else [])
            response = self.http.request(
                "GET", path, params=page_params, headers={"Accept": accept}
            )
            try:
                page = response.json() if response.content else []
            except ValueError:
                page = None
            if not isinstance(page, list):
                raise UpstreamError(f"{self.service} sent an unexpected answer for /{path}")
            items.extend(page)
            total = response.headers.get("X-Total-Count", "")
            if not page or not total.isdigit() or len(items) >= int(total):
                break
        return items


def album_info(obj: dict[str, Any]) -> AlbumInfo:
    """Build an AlbumInfo from Kheops' album JSON."""
    if "album_id" not in obj:
        raise UpstreamError("Kheops sent an album without album_id")
    return AlbumInfo(
        album_id=str(obj["album_id"]),
        name=str(obj.get("name") or obj["album_id"]),
        number_of_studies=int(obj.get("number_of_studies") or 0),
    )


def kheops_time(moment: dt.datetime) -> str:
    """Format a time as Kheops expects (UTC, `%Y-%m-%dT%H:%M:%SZ`); naive means UTC."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def extract_series(archive: Path, series_uid: str, dest: Path) -> list[Path]:
    """Extract the archive's `DICOM/` files that belong to one series into `dest`."""
    kept: list[Path] = []
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                if member.is_dir() or not member.filename.startswith(ZIP_DICOM_PREFIX):
                    continue
                # Files get our own names: an entry name never becomes a path (no zip-slip).
                target = dest / f"{len(kept) + 1:05d}.dcm"
                with zf.open(member) as src, target.open("wb") as out:
                    shutil.copyfileobj(src, out, CHUNK_BYTES)
                if _series_of(target) == series_uid:
                    kept.append(target)
                else:
                    target.unlink()
    except zipfile.BadZipFile as exc:
        for item in kept:
            item.unlink(missing_ok=True)
        raise UpstreamError("Kheops sent an unreadable study ZIP") from exc
    return kept


def _series_of(path: Path) -> str | None:
    """Return a DICOM file's SeriesInstanceUID, or None if it is not DICOM."""
    try:
        with lenient_reading():
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return None
    value = ds.get("SeriesInstanceUID")
    return None if value is None else str(value)
