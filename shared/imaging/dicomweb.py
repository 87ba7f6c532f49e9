"""Any DICOMweb server (Orthanc, dcm4chee) as an image source, over QIDO-RS and WADO-RS.

A plain PACS has no albums, so they are configured in a YAML/JSON file (DICOMWEB_ALBUMS_FILE):
each album is either a list of StudyInstanceUIDs or a QIDO query such as `PatientID: "STS_*"`.
Also holds the streaming multipart/related reader that the Kheops client and layer share.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import IO, Any

import httpx
import yaml
from pydicom.datadict import tag_for_keyword

from shared.errors import NotFound, ServiceUnavailable, UpstreamError
from shared.imaging.http import HttpClient
from shared.imaging.source import (
    MODALITY,
    NUMBER_OF_SERIES_INSTANCES,
    PATIENT_ID,
    SERIES_DESCRIPTION,
    SERIES_UID,
    STUDY_UID,
    AlbumInfo,
    SeriesInfo,
    StudyInfo,
    dicom_value,
)

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
MULTIPART_DICOM = 'multipart/related; type="application/dicom"'
UID_CHUNK = 50  # UIDs per QIDO list-matching query, to keep URLs short
CHUNK_BYTES = 64 * 1024
_TAG_RE = re.compile(r"^[0-9A-Fa-f]{8}$")


# Album configuration ---------------------------------------------------------------------------
@dataclass(frozen=True)
class DicomWebAlbum:
    """An album defined over a DICOMweb server: fixed study UIDs or a QIDO query."""

    name: str
    study_uids: tuple[str, ...] = ()
    query: Mapping[str, str] = field(default_factory=dict)


def load_albums(path: Path) -> dict[str, DicomWebAlbum]:
    """Read the albums file (JSON when named *.json, YAML otherwise)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _config_error(f"cannot read {path} ({exc.strerror})") from exc
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise _config_error(f"{path} is not valid YAML/JSON") from exc
    return parse_albums(data)


def parse_albums(data: Any) -> dict[str, DicomWebAlbum]:
    """Validate `{album_id: {name, study_uids | query}}` into album definitions."""
    if not isinstance(data, dict):
        raise _config_error("expected a mapping of album id to album")
    return {str(album_id): _parse_album(str(album_id), spec) for album_id, spec in data.items()}


def _parse_album(album_id: str, spec: Any) -> DicomWebAlbum:
    """Validate one album entry."""
    if not isinstance(spec, dict):
        raise _config_error(f"album {album_id!r} must be a mapping")
    uids = spec.get("study_uids") or []
    query = spec.get("query") or {}
    if bool(uids) == bool(query):
        raise _config_error(f"album {album_id!r} needs either study_uids or query")
    if not isinstance(uids, list) or not all(isinstance(u, str) for u in uids):
        raise _config_error(f"album {album_id!r}: study_uids must be a list of strings")
    if not isinstance(query, dict):
        raise _config_error(f"album {album_id!r}: query must be a mapping")
    for key in query:
        if not (_TAG_RE.match(str(key)) or tag_for_keyword(str(key)) is not None):
            raise _config_error(
                f"album {album_id!r}: unknown DICOM attribute {key!r} (quote tags in YAML)"
            )
    return DicomWebAlbum(
        name=str(spec.get("name") or album_id),
        study_uids=tuple(uids),
        query={str(k): str(v) for k, v in query.items()},
    )


def _config_error(problem: str) -> ServiceUnavailable:
    """A broken albums file is a server configuration problem, not the caller's."""
    return ServiceUnavailable(f"DICOMweb albums configuration: {problem}")


# DICOM JSON → source records -------------------------------------------------------------------
def study_info(obj: dict[str, Any]) -> StudyInfo:
    """Build a StudyInfo from a QIDO-RS study object."""
    patient = dicom_value(obj, PATIENT_ID)
    return StudyInfo(
        study_uid=str(dicom_value(obj, STUDY_UID)),
        patient_id=None if patient is None else str(patient),
        dicom_json=obj,
    )


def series_info(obj: dict[str, Any]) -> SeriesInfo:
    """Build a SeriesInfo from a QIDO-RS series object."""
    count = dicom_value(obj, NUMBER_OF_SERIES_INSTANCES)
    description = dicom_value(obj, SERIES_DESCRIPTION)
    return SeriesInfo(
        series_uid=str(dicom_value(obj, SERIES_UID)),
        modality=str(dicom_value(obj, MODALITY) or ""),
        description=None if description is None else str(description),
        number_of_instances=None if count is None else int(count),
    )


def filter_modalities(
    series: list[SeriesInfo], modalities: tuple[str, ...] | None
) -> list[SeriesInfo]:
    """Keep the series of the given modalities (all when None)."""
    if not modalities:
        return series
    wanted = {m.upper() for m in modalities}
    return [s for s in series if s.modality.upper() in wanted]


# multipart/related ------------------------------------------------------------------------------
def multipart_boundary(content_type: str) -> bytes:
    """Return the boundary of a multipart Content-Type header."""
    message = Message()
    message["content-type"] = content_type
    boundary = message.get_param("boundary")
    if message.get_content_maintype() != "multipart" or not isinstance(boundary, str):
        raise ValueError(f"not a multipart answer: {content_type.split(';', 1)[0]}")
    return boundary.encode("latin-1")


class MultipartReader:
    """Split a multipart body fed in chunks; each part's body goes to a sink from `open_part`."""

    def __init__(self, boundary: bytes, open_part: Callable[[dict[str, str]], IO[bytes]]) -> None:
        self._delimiter = b"\r\n--" + boundary
        # A leading CRLF lets the first boundary (which has none) match like the others.
        self._buffer = bytearray(b"\r\n")
        self._state = "preamble"
        self._open_part = open_part
        self._sink: IO[bytes] | None = None
        self.parts = 0

    def feed(self, chunk: bytes) -> None:
        """Consume the next chunk of the body."""
        self._buffer += chunk
        while self._step():
            pass

    def finish(self) -> int:
        """Check the body ended with the closing boundary; return the number of parts."""
        self.close()
        if self._state != "done":
            raise ValueError("multipart body ended before its closing boundary")
        return self.parts

    def close(self) -> None:
        """Close the sink of an unfinished part (after an error)."""
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def _step(self) -> bool:
        """Advance the state machine once; False when more input is needed."""
        handler = {
            "preamble": self._skip_to_delimiter,
            "delimiter": self._after_delimiter,
            "headers": self._headers,
            "body": self._body,
            "done": lambda: False,
        }[self._state]
        return handler()

    def _skip_to_delimiter(self) -> bool:
        """Drop the preamble up to the first boundary."""
        index = self._buffer.find(self._delimiter)
        if index < 0:
            del self._buffer[: max(0, len(self._buffer) - len(self._delimiter))]
            return False
        del self._buffer[: index + len(self._delimiter)]
        self._state = "delimiter"
        return True

    def _after_delimiter(self) -> bool:
        """After a boundary: either the closing `--` or the end of the boundary line."""
        if len(self._buffer) < 2:
            return False
        if self._buffer[:2] == b"--":
            self._state = "done"
            self._buffer.clear()
            return False
        end = self._buffer.find(b"\r\n")
        if end < 0:
            return False
        del self._buffer[: end + 2]
        self._state = "headers"
        return True

    def _headers(self) -> bool:
        """Parse the part's headers and open its sink."""
        if self._buffer.startswith(b"\r\n"):
            raw, skip = b"", 2
        else:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return False
            raw, skip = bytes(self._buffer[:end]), end + 4
        del self._buffer[:skip]
        headers: dict[str, str] = {}
        for line in raw.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self._sink = self._open_part(headers)
        self._state = "body"
        return True

    def _body(self) -> bool:
        """Copy body bytes to the sink, holding back what could be the start of a boundary."""
        assert self._sink is not None
        index = self._buffer.find(self._delimiter)
        if index < 0:
            keep = len(self._delimiter) - 1
            if len(self._buffer) > keep:
                self._sink.write(self._buffer[:-keep])
                del self._buffer[:-keep]
            return False
        self._sink.write(self._buffer[:index])
        self._sink.close()
        self._sink = None
        self.parts += 1
        del self._buffer[: index + len(self._delimiter)]
        self._state = "delimiter"
        return True


def wado_download(http: HttpClient, path: str, params: Any, dest: Path) -> list[Path]:
    """Stream a WADO-RS multipart answer into numbered .dcm files in `dest`; return them."""
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def open_part(headers: dict[str, str]) -> IO[bytes]:
        # Parts are named by position: names from the server never reach the file system.
        target = dest / f"{len(written) + 1:05d}.dcm"
        written.append(target)
        return target.open("wb")

    try:
        with http.stream("GET", path, params=params, headers={"Accept": MULTIPART_DICOM}) as r:
            read_multipart(http, path, r, open_part)
    except BaseException:
        for item in written:
            item.unlink(missing_ok=True)
        raise
    return written


def read_multipart(
    http: HttpClient,
    path: str,
    response: httpx.Response,
    open_part: Callable[[dict[str, str]], IO[bytes]],
) -> int:
    """Feed a streamed multipart answer to a reader; return the number of parts."""
    reader: MultipartReader | None = None
    try:
        reader = MultipartReader(
            multipart_boundary(response.headers.get("content-type", "")), open_part
        )
        for chunk in response.iter_bytes(CHUNK_BYTES):
            reader.feed(chunk)
        return reader.finish()
    except httpx.TransportError as exc:
        raise http.body_error("GET", path, exc) from exc
    except ValueError as exc:
        raise UpstreamError(f"{http.service}: unreadable multipart answer ({exc})") from exc
    finally:
        if reader is not None:
            reader.close()


# The source --------------------------------------------------------------------------------------
class DicomWebSource:
    """Albums over a DICOMweb server: QIDO-RS to list, WADO-RS to fetch."""

    service = "DICOMweb server"

    def __init__(
        self,
        url: str,
        albums: Mapping[str, DicomWebAlbum],
        headers: Mapping[str, str] | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        client: httpx.Client | None = None,
    ) -> None:
        self.http = HttpClient(
            self.service,
            url,
            headers=headers,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            client=client,
        )
        self.albums = dict(albums)
        self._members: set[tuple[str, str]] = set()

    def list_albums(self) -> list[AlbumInfo]:
        """Return every configured album with its study count."""
        return [self.album(album_id) for album_id in sorted(self.albums)]

    def album(self, album_id: str) -> AlbumInfo:
        """Return a configured album; NotFound for unknown ids."""
        spec = self._spec(album_id)
        count = len(spec.study_uids) if spec.study_uids else len(self.list_studies(album_id))
        return AlbumInfo(album_id=album_id, name=spec.name, number_of_studies=count)

    def list_studies(self, album_id: str) -> list[StudyInfo]:
        """Return the album's studies as the server describes them (QIDO-RS)."""
        spec = self._spec(album_id)
        if spec.query:
            found = self._qido_studies(dict(spec.query))
        else:
            found = self._studies_by_uid(spec.study_uids)
        studies = [study_info(obj) for obj in found]
        self._members.update((album_id, s.study_uid) for s in studies)
        return studies

    def list_series(
        self, album_id: str, study_uid: str, modalities: tuple[str, ...] | None = None
    ) -> list[SeriesInfo]:
        """Return a study's series; the modality filter is applied here, not by the server."""
        self._check_member(album_id, study_uid)
        # Servers differ on multi-value modality matching, so ask for all and filter.
        found = self.http.get_json(f"studies/{study_uid}/series", accept=DICOM_JSON) or []
        return filter_modalities([series_info(obj) for obj in found], modalities)

    def series_metadata(
        self, album_id: str, study_uid: str, series_uid: str
    ) -> list[dict[str, Any]]:
        """Return the series' instance metadata (WADO-RS metadata)."""
        self._check_member(album_id, study_uid)
        path = f"studies/{study_uid}/series/{series_uid}/metadata"
        return list(self.http.get_json(path, accept=DICOM_JSON) or [])

    def download_series(
        self, album_id: str, study_uid: str, series_uid: str, dest: Path
    ) -> list[Path]:
        """Stream the series' instances (WADO-RS) into `dest`."""
        self._check_member(album_id, study_uid)
        files = wado_download(self.http, f"studies/{study_uid}/series/{series_uid}", None, dest)
        if not files:
            shutil.rmtree(dest, ignore_errors=True)
            raise NotFound(f"{self.service}: series {series_uid} has no instances")
        log.info("downloaded %d instances of series %s", len(files), series_uid)
        return files

    # helpers --------------------------------------------------------------------------------
    def _spec(self, album_id: str) -> DicomWebAlbum:
        """Return an album's definition or raise NotFound."""
        spec = self.albums.get(album_id)
        if spec is None:
            raise NotFound(f"Album {album_id!r} not found")
        return spec

    def _qido_studies(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """Run one study-level QIDO-RS query."""
        return list(self.http.get_json("studies", params=params, accept=DICOM_JSON) or [])

    def _studies_by_uid(self, uids: Iterable[str]) -> list[dict[str, Any]]:
        """Find studies by UID: UID-list matching, one query per UID where unsupported."""
        wanted = list(dict.fromkeys(uids))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), UID_CHUNK):
            chunk = wanted[start : start + UID_CHUNK]
            for obj in self._qido_studies({"StudyInstanceUID": ",".join(chunk)}):
                found[str(dicom_value(obj, STUDY_UID))] = obj
            if len(chunk) > 1 and not any(uid in found for uid in chunk):
                for uid in chunk:  # this server does not do list matching
                    for obj in self._qido_studies({"StudyInstanceUID": uid}):
                        found[str(dicom_value(obj, STUDY_UID))] = obj
        return [found[uid] for uid in wanted if uid in found]

    def _check_member(self, album_id: str, study_uid: str) -> None:
        """NotFound unless the study belongs to the album (no reading around the albums)."""
        spec = self._spec(album_id)
        if (album_id, study_uid) in self._members:
            return
        if spec.study_uids:
            member = study_uid in spec.study_uids
        else:
            member = bool(self._qido_studies({**spec.query, "StudyInstanceUID": study_uid}))
        if not member:
            raise NotFound(f"Study {study_uid} is not in album {album_id!r}")
        self._members.add((album_id, study_uid))
