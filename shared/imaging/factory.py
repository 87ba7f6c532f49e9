"""Choose the image source from the settings (IMAGE_SOURCE = local | kheops | dicomweb)."""

from __future__ import annotations

import threading
from pathlib import Path

from shared.config import Settings
from shared.errors import ServiceUnavailable
from shared.imaging.dicomweb import DicomWebAlbum, DicomWebSource, load_albums
from shared.imaging.kheops import KheopsSource
from shared.imaging.local import LocalFolderSource
from shared.imaging.source import ImageSource

_albums_lock = threading.Lock()
_albums_cache: dict[Path, tuple[int, dict[str, DicomWebAlbum]]] = {}


def image_source(settings: Settings, credential: str | None = None) -> ImageSource:
    """Return the configured image source acting with the caller's credential.

    Only Kheops receives the credential (a Keycloak access token or a capability secret); the
    generic DICOMweb server is not sent user tokens, which were not issued for it.
    """
    if settings.image_source == "kheops":
        return KheopsSource(
            settings.kheops_base_url,
            credential,
            timeout=settings.http_timeout_seconds,
            retries=settings.http_retries,
        )
    if settings.image_source == "dicomweb":
        if not settings.dicomweb_url or settings.dicomweb_albums_file is None:
            raise ServiceUnavailable(
                "The DICOMweb image source needs DICOMWEB_URL and DICOMWEB_ALBUMS_FILE"
            )
        return DicomWebSource(
            settings.dicomweb_url,
            dicomweb_albums(settings.dicomweb_albums_file),
            timeout=settings.http_timeout_seconds,
            retries=settings.http_retries,
        )
    return LocalFolderSource(local_albums_root(settings))


def local_albums_root(settings: Settings) -> Path:
    """Return the folder whose sub-folders are the local albums."""
    return settings.local_albums_dir or settings.data_dir / "albums"


def dicomweb_albums(path: Path) -> dict[str, DicomWebAlbum]:
    """Return the albums file's content, re-read when the file changes."""
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        mtime = -1  # let load_albums report the problem
    with _albums_lock:
        cached = _albums_cache.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
    albums = load_albums(path)
    with _albums_lock:
        _albums_cache[path] = (mtime, albums)
    return albums
