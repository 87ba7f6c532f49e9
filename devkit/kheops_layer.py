"""A small stand-in for Kheops: its album API and DICOMweb routes over a study store.

For tests and the local dev platform only. Two stores: an Orthanc DICOMweb root (the tests'
Kheops; studies, series, metadata and WADO-RS answers streamed through, albums configured as
id → name, studies, allowed user subs) and a local folder of albums (`./qi2 run`: one album
per sub-folder, as the platform's local image source reads them; the album and study lists
the browser asks Kheops for, no DICOM retrieval). Callers authenticate like with Kheops: a
Keycloak-style RS256 access token (checked against a JWKS URL) or a capability secret created
with `POST /api/capabilities`. Each user sees only the albums that list their sub (`*`: every
user). CORS answers the configured origins, as the platform's API does.

Run alone: `python -m devkit.kheops_layer --dicomweb http://127.0.0.1:8042/dicom-web
--jwks http://127.0.0.1:8180/realms/QuantImage-v2/protocol/openid-connect/certs
--albums albums.yaml --port 8080` (albums file: `{id: {name, users: [sub], study_uids: [...]
| query: {PatientID: "STS_*"}}}`), or `--local-albums var/albums` instead of `--dicomweb`
(then the albums file only names albums and their users).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import logging
import secrets
import threading
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import yaml
from flask import Flask, Response, jsonify, request
from flask_cors import CORS
from werkzeug.serving import BaseWSGIServer, make_server

from shared.errors import DomainError, Forbidden, InvalidInput, NotFound, Unauthorized
from shared.imaging.dicomweb import (
    CHUNK_BYTES,
    DICOM_JSON,
    MULTIPART_DICOM,
    MultipartReader,
    multipart_boundary,
)
from shared.imaging.http import HttpClient
from shared.imaging.local import LocalFolderSource, dicom_element
from shared.imaging.source import (
    MODALITIES_IN_STUDY,
    MODALITY,
    NUMBER_OF_SERIES_INSTANCES,
    NUMBER_OF_STUDY_SERIES,
    PATIENT_ID,
    SERIES_DESCRIPTION,
    SERIES_UID,
    STUDY_UID,
    dicom_value,
)

log = logging.getLogger(__name__)

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
UID_CHUNK = 50
PAGING_PARAMS = {"album", "limit", "offset", "accept"}
EVERY_USER = "*"  # an album's `users` entry that lets every authenticated user see it


@dataclass
class LayerAlbum:
    """An album: its studies (fixed UIDs or a QIDO query) and the user subs allowed on it."""

    album_id: str
    name: str
    study_uids: list[str] = field(default_factory=list)
    users: set[str] = field(default_factory=set)
    # Subs that may create album-scoped capabilities (Kheops: album admins); None = all users.
    admins: set[str] | None = None
    query: dict[str, str] = field(default_factory=dict)
    description: str = ""


@dataclass
class Capability:
    """A capability token; its secret is kept only as a hash."""

    id: str
    secret_hash: str
    title: str
    sub: str
    scope_type: str
    album_id: str | None
    read: bool
    download: bool
    write: bool
    appropriate: bool
    issued_at: dt.datetime
    expires_at: dt.datetime
    revoked: bool = False

    def to_json(self, albums: dict[str, LayerAlbum]) -> dict[str, Any]:
        """Return Kheops' capability JSON (without the secret)."""
        body: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "issued_at_time": self.issued_at.strftime(TIME_FORMAT),
            "not_before_time": self.issued_at.strftime(TIME_FORMAT),
            "expiration_time": self.expires_at.strftime(TIME_FORMAT),
            "revoked": self.revoked,
            "scope_type": self.scope_type,
            "read_permission": self.read,
            "write_permission": self.write,
            "download_permission": self.download,
            "appropriate_permission": self.appropriate,
            "created_by": {"sub": self.sub},
        }
        if self.album_id is not None:
            album = albums.get(self.album_id)
            body["album"] = {"id": self.album_id, "name": album.name if album else ""}
        return body


@dataclass(frozen=True)
class Caller:
    """Who is calling: a user sub, possibly acting through a capability."""

    sub: str
    capability: Capability | None = None


def utcnow() -> dt.datetime:
    """Return the current naive UTC time."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _hash(secret: str) -> str:
    """Hash a capability secret (secrets are never stored in clear)."""
    return hashlib.sha256(secret.encode()).hexdigest()


class OrthancStore:
    """Studies of configured albums, from an Orthanc DICOMweb root."""

    def __init__(self, dicomweb_url: str, timeout: float = 30.0) -> None:
        self.orthanc = HttpClient("Orthanc DICOMweb", dicomweb_url, timeout=timeout, retries=1)

    def albums(self, configured: dict[str, LayerAlbum]) -> dict[str, LayerAlbum]:
        """Return the albums: exactly the configured ones."""
        return configured

    def has_study(self, album: LayerAlbum, study_uid: str) -> bool:
        """Tell whether a study belongs to an album (and, for query albums, is in Orthanc)."""
        if album.query:
            return bool(self._qido([*album.query.items(), ("StudyInstanceUID", study_uid)]))
        return study_uid in album.study_uids

    def studies(
        self, album: LayerAlbum, extra: list[tuple[str, str]] | None = None
    ) -> list[dict[str, Any]]:
        """Return the album's studies from Orthanc (QIDO-RS), with optional extra filters."""
        extra = extra or []
        if album.query:
            return self._qido(list(album.query.items()) + extra)
        # A caller's own StudyInstanceUID filter narrows the album's list (never widens it).
        asked = _asked_uids(extra)
        extra = [(k, v) for k, v in extra if k not in ("StudyInstanceUID", STUDY_UID)]
        uids = [u for u in album.study_uids if not asked or u in asked]
        found: list[dict[str, Any]] = []
        for start in range(0, len(uids), UID_CHUNK):
            chunk = uids[start : start + UID_CHUNK]
            found += self._qido([("StudyInstanceUID", ",".join(chunk)), *extra])
        wanted = set(uids)
        return [obj for obj in found if dicom_value(obj, STUDY_UID) in wanted]

    def series(self, album: LayerAlbum, study_uid: str) -> list[dict[str, Any]]:
        """Return the study's series objects (QIDO-RS)."""
        path = f"studies/{study_uid}/series"
        return list(self.orthanc.get_json(path, accept=DICOM_JSON) or [])

    def metadata(self, album: LayerAlbum, path: str) -> Any:
        """Return the metadata of `studies/{uid}[/series/{uid}]`."""
        return self.orthanc.get_json(f"{path}/metadata", accept=DICOM_JSON)

    def stream(self, path: str, accept: str) -> Any:
        """Open a streamed WADO-RS answer (a context manager)."""
        return self.orthanc.stream("GET", path, headers={"Accept": accept})

    def _qido(self, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """Run a study-level QIDO-RS query on Orthanc."""
        return list(self.orthanc.get_json("studies", params=params, accept=DICOM_JSON) or [])


class LocalStore:
    """Studies of a local folder of albums, read as the platform's local image source reads them.

    Every sub-folder is an album; its users come from the configured album of the same id,
    else `default_users`. Albums, studies, series and metadata only: the platform's workers
    read the files themselves, so no DICOM retrieval is served (501).
    """

    def __init__(self, root: Path, default_users: Iterable[str] = (EVERY_USER,)) -> None:
        self.source = LocalFolderSource(root)
        self.default_users = set(default_users)

    def albums(self, configured: dict[str, LayerAlbum]) -> dict[str, LayerAlbum]:
        """Return one album per folder, with the configured name and users when there are."""
        found = {}
        for info in self.source.list_albums():
            album = configured.get(info.album_id) or LayerAlbum(
                info.album_id, info.name, users=set(self.default_users)
            )
            found[info.album_id] = album
        return found

    def has_study(self, album: LayerAlbum, study_uid: str) -> bool:
        """Tell whether the album's folder holds the study."""
        return any(s.study_uid == study_uid for s in self.source.list_studies(album.album_id))

    def studies(
        self, album: LayerAlbum, extra: list[tuple[str, str]] | None = None
    ) -> list[dict[str, Any]]:
        """Return the album's study objects, filtered by StudyInstanceUID or PatientID."""
        extra = [(k, v) for k, v in extra or [] if k != "includefield"]
        asked = _asked_uids(extra)
        patients = {v for k, v in extra if k in ("PatientID", PATIENT_ID)}
        unknown = {k for k, _ in extra} - {"StudyInstanceUID", STUDY_UID, "PatientID", PATIENT_ID}
        if unknown:
            raise InvalidInput(
                f"This dev layer filters studies by StudyInstanceUID and PatientID, not {unknown}"
            )
        return [
            s.dicom_json
            for s in self.source.list_studies(album.album_id)
            if (not asked or s.study_uid in asked) and (not patients or s.patient_id in patients)
        ]

    def series(self, album: LayerAlbum, study_uid: str) -> list[dict[str, Any]]:
        """Return the study's series as QIDO-RS series objects."""
        return [
            {
                STUDY_UID: dicom_element("UI", study_uid),
                SERIES_UID: dicom_element("UI", s.series_uid),
                MODALITY: dicom_element("CS", s.modality),
                SERIES_DESCRIPTION: dicom_element("LO", s.description),
                NUMBER_OF_SERIES_INSTANCES: dicom_element("IS", s.number_of_instances),
            }
            for s in self.source.list_series(album.album_id, study_uid)
        ]

    def metadata(self, album: LayerAlbum, path: str) -> Any:
        """Return the instances' metadata of `studies/{uid}[/series/{uid}]` (no pixel data)."""
        parts = path.split("/")
        study_uid = parts[1]
        series = (
            [parts[3]]
            if len(parts) > 3
            else [s.series_uid for s in self.source.list_series(album.album_id, study_uid)]
        )
        return [
            item
            for uid in series
            for item in self.source.series_metadata(album.album_id, study_uid, uid)
        ]

    def stream(self, path: str, accept: str) -> Any:
        """No retrieval from a local folder: the platform reads the files itself."""
        raise NotServed("This dev layer serves no DICOM files from a local folder")


class NotServed(DomainError):
    """A route the store cannot answer (501)."""

    status = 501


class KheopsLayer:
    """Kheops' API over a study store (Orthanc or a local folder), with album and token checks."""

    def __init__(
        self,
        dicomweb_url: str | None,
        jwks_url: str,
        albums: Iterable[LayerAlbum] = (),
        *,
        issuer: str | None = None,
        audience: str | None = None,
        timeout: float = 30.0,
        store: OrthancStore | LocalStore | None = None,
        cors_origins: list[str] | None = None,
    ) -> None:
        if store is None:
            if dicomweb_url is None:
                raise ValueError("a DICOMweb URL or a store is needed")
            store = OrthancStore(dicomweb_url, timeout)
        self.store = store
        # The origins a browser may call from (the platform's CORS_ALLOWED_ORIGINS); None: none.
        self.cors_origins = cors_origins
        self.jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, timeout=timeout)
        self.issuer = issuer
        self.audience = audience
        self.albums: dict[str, LayerAlbum] = {a.album_id: a for a in albums}
        self.capabilities: dict[str, Capability] = {}
        # Test hooks: WADO-RS off (501) so clients use the ZIP route; a server-side page size
        # used when a list request has no `limit`, so clients must follow X-Total-Count.
        self.wado_rs_enabled = True
        self.page_size: int | None = None
        self._lock = threading.Lock()
        self._server: BaseWSGIServer | None = None
        self.base_url = ""

    def add_album(self, album: LayerAlbum) -> LayerAlbum:
        """Add or replace an album."""
        self.albums[album.album_id] = album
        return album

    # authentication and access ---------------------------------------------------------------
    def caller(self) -> Caller:
        """Identify the caller from the Authorization header (401 when impossible)."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("A Bearer token is required")
        token = token.strip()
        if token.count(".") == 2:
            return Caller(sub=self._verify_jwt(token))
        with self._lock:
            capability = next(
                (c for c in self.capabilities.values() if c.secret_hash == _hash(token)), None
            )
        if capability is None or capability.revoked or capability.expires_at <= utcnow():
            raise Unauthorized("The capability token is unknown, revoked or expired")
        return Caller(sub=capability.sub, capability=capability)

    def _verify_jwt(self, token: str) -> str:
        """Verify an RS256 access token against the JWKS; return its sub."""
        try:
            key = self.jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                audience=self.audience,
                issuer=self.issuer,
                options={"verify_aud": self.audience is not None, "require": ["exp", "sub"]},
            )
        except (jwt.PyJWTError, jwt.PyJWKClientError) as exc:
            raise Unauthorized(f"Invalid access token ({type(exc).__name__})") from exc
        return str(claims["sub"])

    def visible_albums(self, caller: Caller) -> list[LayerAlbum]:
        """Return the albums a caller may read."""
        capability = caller.capability
        if capability is not None and not capability.read:
            return []
        albums = [
            a
            for a in self.store.albums(self.albums).values()
            if caller.sub in a.users or EVERY_USER in a.users
        ]
        if capability is not None and capability.scope_type == "album":
            albums = [a for a in albums if a.album_id == capability.album_id]
        return sorted(albums, key=lambda a: a.album_id)

    def album_for(self, caller: Caller, album_id: str) -> LayerAlbum:
        """Return an album the caller may read: 404 if unknown, 403 if not allowed."""
        album = self.store.albums(self.albums).get(album_id)
        if album is None:
            raise NotFound(f"Album {album_id} not found")
        if album not in self.visible_albums(caller):
            raise Forbidden(f"Access to album {album_id} is not allowed")
        return album

    def study_album(self, caller: Caller, study_uid: str) -> LayerAlbum:
        """Return the album through which the caller reads a study (`album` param or any)."""
        album_id = request.args.get("album")
        candidates = [self.album_for(caller, album_id)] if album_id else self.visible_albums(caller)
        for album in candidates:
            if self.store.has_study(album, study_uid):
                return album
        raise NotFound(f"Study {study_uid} not found")

    def album_json(self, album: LayerAlbum, caller: Caller) -> dict[str, Any]:
        """Return Kheops' album JSON."""
        studies = self.store.studies(album)
        modalities = sorted(
            {m for obj in studies for m in obj.get(MODALITIES_IN_STUDY, {}).get("Value", [])}
        )
        admins = album.users if album.admins is None else album.admins
        return {
            "album_id": album.album_id,
            "name": album.name,
            "description": album.description,
            "number_of_studies": len(studies),
            "number_of_series": sum(
                int(dicom_value(s, NUMBER_OF_STUDY_SERIES) or 0) for s in studies
            ),
            "number_of_users": len(album.users),
            "modalities": modalities,
            "is_admin": caller.capability is None and caller.sub in admins,
            "is_favorite": False,
            "add_user": False,
            "add_series": False,
            "delete_series": False,
            "download_series": True,
            "send_series": False,
            "write_comments": False,
        }

    # capabilities -----------------------------------------------------------------------------
    def create_capability(self, caller: Caller, form: dict[str, str]) -> tuple[Capability, str]:
        """Create a capability from Kheops' form fields; return it and its secret."""
        if caller.capability is not None:
            raise Forbidden("A capability token cannot create capability tokens")
        scope = form.get("scope_type", "")
        if scope not in ("album", "user") or not form.get("title"):
            raise InvalidInput("title and scope_type (album or user) are required")
        album_id = None
        if scope == "album":
            album = self.album_for(caller, form.get("album", ""))
            admins = album.users if album.admins is None else album.admins
            if caller.sub not in admins:
                raise Unauthorized("Only an album admin can create album capability tokens")
            album_id = album.album_id
        expires = _parse_time(form.get("expiration_time"))
        if expires <= utcnow():
            raise InvalidInput("expiration_time must be in the future")
        secret = secrets.token_urlsafe(24)
        capability = Capability(
            id=secrets.token_urlsafe(8),
            secret_hash=_hash(secret),
            title=form["title"],
            sub=caller.sub,
            scope_type=scope,
            album_id=album_id,
            read=_flag(form, "read_permission"),
            download=_flag(form, "download_permission"),
            write=_flag(form, "write_permission"),
            appropriate=_flag(form, "appropriate_permission"),
            issued_at=utcnow(),
            expires_at=expires,
        )
        with self._lock:
            self.capabilities[capability.id] = capability
        log.info("capability %s created (%s scope)", capability.id, scope)
        return capability, secret

    def revoke_capability(self, caller: Caller, capability_id: str) -> Capability:
        """Revoke a capability created by the calling user."""
        if caller.capability is not None:
            raise Forbidden("A capability token cannot revoke capability tokens")
        capability = self.capabilities.get(capability_id)
        if capability is None or capability.sub != caller.sub:
            raise NotFound(f"Capability {capability_id} not found")
        capability.revoked = True
        log.info("capability %s revoked", capability_id)
        return capability

    # HTTP -------------------------------------------------------------------------------------
    def wsgi_app(self) -> Flask:
        """Build the Flask app serving Kheops' routes."""
        app = Flask("kheops_layer")
        if self.cors_origins:
            # As the platform's API: bearer tokens, no cookies; X-Total-Count readable.
            CORS(app, origins=self.cors_origins, expose_headers=["X-Total-Count"])
        self._album_routes(app)
        self._study_routes(app)
        self._retrieve_routes(app)
        self._capability_routes(app)

        @app.errorhandler(DomainError)
        def domain_error(exc: DomainError) -> Any:
            response = jsonify(error=exc.message)
            response.status_code = exc.status
            if exc.status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="kheops"'
            return response

        @app.errorhandler(404)
        def unknown_route(exc: Exception) -> Any:
            return jsonify(error="Not found"), 404

        return app

    def _album_routes(self, app: Flask) -> None:
        """GET /api/albums and /api/albums/{id}."""

        @app.get("/api/albums")
        def albums() -> Any:
            caller = self.caller()
            items = [self.album_json(a, caller) for a in self.visible_albums(caller)]
            return _paged(items, self.page_size)

        @app.get("/api/albums/<album_id>")
        def album(album_id: str) -> Any:
            caller = self.caller()
            return jsonify(self.album_json(self.album_for(caller, album_id), caller))

    def _study_routes(self, app: Flask) -> None:
        """QIDO-RS and metadata routes."""

        @app.get("/api/studies")
        @app.get("/api/studies/")
        def studies() -> Any:
            caller = self.caller()
            album_id = request.args.get("album")
            albums = [self.album_for(caller, album_id)] if album_id else self.visible_albums(caller)
            extra = [(k, v) for k, v in request.args.items(multi=True) if k not in PAGING_PARAMS]
            found: dict[str, dict[str, Any]] = {}
            for album in albums:
                for obj in self.store.studies(album, extra):
                    found.setdefault(str(dicom_value(obj, STUDY_UID)), obj)
            return _paged([found[uid] for uid in sorted(found)], self.page_size, DICOM_JSON)

        @app.get("/api/studies/<study_uid>/series")
        def series(study_uid: str) -> Any:
            album = self.study_album(self.caller(), study_uid)
            wanted = _modalities(request.args)
            found = self.store.series(album, study_uid)
            if wanted:
                found = [s for s in found if str(dicom_value(s, MODALITY)).upper() in wanted]
            return _json(found)

        @app.get("/api/studies/<study_uid>/metadata")
        def study_metadata(study_uid: str) -> Any:
            album = self.study_album(self.caller(), study_uid)
            return _json(self.store.metadata(album, f"studies/{study_uid}"))

        @app.get("/api/studies/<study_uid>/series/<series_uid>/metadata")
        def series_metadata(study_uid: str, series_uid: str) -> Any:
            album = self.study_album(self.caller(), study_uid)
            return _json(self.store.metadata(album, f"studies/{study_uid}/series/{series_uid}"))

    def _retrieve_routes(self, app: Flask) -> None:
        """WADO-RS retrieval (streamed from Orthanc) and the study ZIP."""

        @app.get("/api/studies/<study_uid>")
        def study_instances(study_uid: str) -> Any:
            caller = self.caller()
            album = self.study_album(caller, study_uid)
            if request.args.get("accept") == "application/zip":
                self._check_download(caller, album)
                return self._zip(study_uid)
            return self._wado(f"studies/{study_uid}")

        @app.get("/api/studies/<study_uid>/series/<series_uid>")
        def series_instances(study_uid: str, series_uid: str) -> Any:
            self.study_album(self.caller(), study_uid)
            return self._wado(f"studies/{study_uid}/series/{series_uid}")

        @app.get("/api/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>")
        def instance(study_uid: str, series_uid: str, sop_uid: str) -> Any:
            self.study_album(self.caller(), study_uid)
            return self._wado(f"studies/{study_uid}/series/{series_uid}/instances/{sop_uid}")

    def _capability_routes(self, app: Flask) -> None:
        """Create, show and revoke capability tokens."""

        @app.post("/api/capabilities")
        def create() -> Any:
            capability, secret = self.create_capability(self.caller(), request.form.to_dict())
            albums = self.store.albums(self.albums)
            return jsonify({**capability.to_json(albums), "secret": secret}), 201

        @app.get("/api/capabilities/<capability_id>")
        def show(capability_id: str) -> Any:
            caller = self.caller()
            capability = self.capabilities.get(capability_id)
            if capability is None or capability.sub != caller.sub:
                raise NotFound(f"Capability {capability_id} not found")
            return jsonify(capability.to_json(self.store.albums(self.albums)))

        @app.post("/api/capabilities/<capability_id>/revoke")
        @app.delete("/api/capabilities/<capability_id>")
        def revoke(capability_id: str) -> Any:
            capability = self.revoke_capability(self.caller(), capability_id)
            return jsonify(capability.to_json(self.store.albums(self.albums)))

    def _check_download(self, caller: Caller, album: LayerAlbum) -> None:
        """Album-scoped capabilities need the download permission for the ZIP."""
        capability = caller.capability
        if capability is not None and capability.scope_type == "album" and not capability.download:
            raise Forbidden(f"This capability may not download from album {album.album_id}")

    def _wado(self, path: str) -> Response:
        """Stream a WADO-RS answer from Orthanc to the client."""
        if not self.wado_rs_enabled:
            return Response('{"error": "WADO-RS disabled"}', 501, mimetype="application/json")
        accept = request.headers.get("Accept", "")
        if "multipart/related" not in accept:
            accept = MULTIPART_DICOM
        stack = ExitStack()
        upstream = stack.enter_context(self.store.stream(path, accept))
        response = Response(
            upstream.iter_bytes(CHUNK_BYTES), 200, content_type=upstream.headers.get("content-type")
        )
        # Werkzeug closes the response when the client is done (or gone): release Orthanc then.
        response.call_on_close(stack.close)
        return response

    def _zip(self, study_uid: str) -> Response:
        """Stream the study as a ZIP whose DICOM files sit under `DICOM/`, like Kheops'."""
        stack = ExitStack()
        upstream = stack.enter_context(self.store.stream(f"studies/{study_uid}", MULTIPART_DICOM))

        headers = {"Content-Disposition": f"attachment; filename={study_uid}.zip"}
        body = _zip_stream(upstream.headers.get("content-type", ""), upstream)
        response = Response(body, 200, mimetype="application/zip", headers=headers)
        response.call_on_close(stack.close)
        return response

    # server -----------------------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on a background thread; return the base URL (KHEOPS_BASE_URL)."""
        server = make_server(host, port, self.wsgi_app(), threaded=True)
        self._server = server
        self.base_url = f"http://{host}:{server.server_port}"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self.base_url

    def stop(self) -> None:
        """Stop the background server."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Collector(io.RawIOBase):
    """A write-only stream whose bytes are taken out as they come (for a streamed ZIP)."""

    def __init__(self) -> None:
        super().__init__()
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        """Return and forget what was written so far."""
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


class _PartBuffer(io.BytesIO):
    """A part sink that hands its bytes over when the part is complete."""

    def __init__(self, done: list[bytes]) -> None:
        super().__init__()
        self._done = done

    def close(self) -> None:
        if not self.closed:
            self._done.append(self.getvalue())
        super().close()


def _zip_stream(content_type: str, upstream: Any) -> Iterator[bytes]:
    """Turn a multipart WADO-RS answer into ZIP bytes, one instance at a time."""
    done: list[bytes] = []
    reader = MultipartReader(multipart_boundary(content_type), lambda _: _PartBuffer(done))
    out = _Collector()
    count = 0
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("README.txt", "Study exported by the QuantImage v2 dev Kheops layer\n")
        for chunk in upstream.iter_bytes(CHUNK_BYTES):
            reader.feed(chunk)
            while done:
                count += 1
                archive.writestr(f"DICOM/{count:05d}.dcm", done.pop(0))
            yield out.take()
        reader.finish()
    yield out.take()


def _asked_uids(extra: list[tuple[str, str]]) -> set[str]:
    """Return the StudyInstanceUIDs a QIDO filter asks for (comma lists too)."""
    return {
        uid
        for key, value in extra
        if key in ("StudyInstanceUID", STUDY_UID)
        for uid in value.split(",")
        if uid
    }


def _paged(items: list[Any], page_size: int | None, mimetype: str = "application/json") -> Response:
    """Answer a list with Kheops' limit/offset paging and X-Total-Count."""
    offset = _int_arg("offset", 0)
    limit = _int_arg("limit", page_size or len(items))
    response = _json(items[offset : offset + limit], mimetype)
    response.headers["X-Total-Count"] = str(len(items))
    return response


def _json(data: Any, mimetype: str = DICOM_JSON) -> Response:
    """Answer JSON with a given media type."""
    response = jsonify(data)
    response.mimetype = mimetype
    return response


def _int_arg(name: str, default: int) -> int:
    """Read a non-negative integer query parameter."""
    value = request.args.get(name)
    if value is None:
        return default
    if not value.isdigit():
        raise InvalidInput(f"{name} must be a non-negative integer")
    return int(value)


def _modalities(args: Any) -> set[str]:
    """Collect the modality filter: repeated `00080060`/`Modality` params, comma lists too."""
    values = args.getlist(MODALITY) + args.getlist("Modality")
    return {m.strip().upper() for v in values for m in v.split(",") if m.strip()}


def _flag(form: dict[str, str], name: str) -> bool:
    """Read a boolean form field."""
    return form.get(name, "false").strip().lower() == "true"


def _parse_time(value: str | None) -> dt.datetime:
    """Parse Kheops' expiration time (default: in three days, like Kheops)."""
    if not value:
        return utcnow() + dt.timedelta(days=3)
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput("expiration_time must be an ISO 8601 time") from exc
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment


def load_layer_albums(path: Path) -> list[LayerAlbum]:
    """Read albums from YAML/JSON: `{id: {name, users, admins?, study_uids | query}}`."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return [
        LayerAlbum(
            album_id=str(album_id),
            name=str(spec.get("name") or album_id),
            study_uids=[str(u) for u in spec.get("study_uids") or []],
            users={str(u) for u in spec.get("users") or []},
            admins=None if spec.get("admins") is None else {str(u) for u in spec["admins"]},
            query={str(k): str(v) for k, v in (spec.get("query") or {}).items()},
            description=str(spec.get("description") or ""),
        )
        for album_id, spec in data.items()
    ]


def main() -> None:
    """Run the layer in the foreground."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--dicomweb", help="Orthanc DICOMweb root URL")
    where.add_argument("--local-albums", type=Path, help="a folder of album folders")
    parser.add_argument("--jwks", required=True, help="JWKS URL of the token issuer")
    parser.add_argument("--albums", type=Path, help="albums YAML/JSON file (names, users)")
    parser.add_argument("--cors-origins", default="", help="comma-separated browser origins")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    albums = load_layer_albums(args.albums) if args.albums else []
    store = LocalStore(args.local_albums) if args.local_albums else None
    origins = [o.strip() for o in args.cors_origins.split(",") if o.strip()]
    layer = KheopsLayer(args.dicomweb, args.jwks, albums, store=store, cors_origins=origins)
    make_server(args.host, args.port, layer.wsgi_app(), threaded=True).serve_forever()


if __name__ == "__main__":
    main()
