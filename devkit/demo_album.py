"""Write the demo albums (small synthetic CT + RTSTRUCT cohorts) for the local dev platform.

`demo` (12 patients) is shared by the dev users `researcher` and `admin`; `admin-demo` (3
patients) is the admin's alone, so a researcher's dashboard shows that albums are private.
Usage: `python -m devkit.demo_album <albums-dir>`; an album that exists is left as it is.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from devkit.synthetic import write_cohort

DEMO_ALBUM = "demo"
DEMO_PATIENTS = 12


@dataclass(frozen=True)
class DemoAlbum:
    """A demo album: its folder name, size, seed and the dev users' subs who may see it."""

    album_id: str
    patients: int
    seed: int
    users: tuple[str, ...]


DEMO_ALBUMS = (
    DemoAlbum(DEMO_ALBUM, DEMO_PATIENTS, 2026, ("dev-researcher", "dev-admin")),
    DemoAlbum("admin-demo", 3, 2027, ("dev-admin",)),
)


def ensure_demo_album(albums_dir: Path, album: DemoAlbum = DEMO_ALBUMS[0]) -> Path:
    """Create `<albums_dir>/<album>` with its synthetic cohort unless it is already there."""
    folder = albums_dir / album.album_id
    if folder.is_dir() and any(folder.iterdir()):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    write_cohort(folder, n_patients=album.patients, seed=album.seed)
    return folder


if __name__ == "__main__":
    for demo in DEMO_ALBUMS:
        print(f"demo album ready: {ensure_demo_album(Path(sys.argv[1]), demo)}")
