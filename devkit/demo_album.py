"""Write the demo album (a small synthetic CT + RTSTRUCT cohort) for the local dev platform.

Usage: `python -m devkit.demo_album <albums-dir>`; does nothing if the album exists.
"""

from __future__ import annotations

import sys
from pathlib import Path

from devkit.synthetic import write_cohort

DEMO_ALBUM = "demo"
DEMO_PATIENTS = 12


def ensure_demo_album(albums_dir: Path) -> Path:
    """Create `<albums_dir>/demo` with the synthetic cohort unless it is already there."""
    album = albums_dir / DEMO_ALBUM
    if album.is_dir() and any(album.iterdir()):
        return album
    album.mkdir(parents=True, exist_ok=True)
    write_cohort(album, n_patients=DEMO_PATIENTS, seed=2026)
    return album


if __name__ == "__main__":
    path = ensure_demo_album(Path(sys.argv[1]))
    print(f"demo album ready: {path}")
