"""The Python floor in pyproject.toml is the lowest version the lock is complete for.

A locked package may need more packages on older Pythons (redis needs async-timeout below
3.11.3). Below the floor pip would install those unpinned; at or above it, every requirement
of every locked package is itself locked.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _floor() -> str:
    """Return the x.y.z of pyproject.toml's `requires-python = ">=x.y.z"`."""
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    match = re.fullmatch(r">=(\d+\.\d+\.\d+)", spec["requires-python"])
    assert match, f"requires-python should be a full >=x.y.z floor, not {spec['requires-python']}"
    return match.group(1)


def _locked() -> dict[str, str]:
    """Map each canonical name in requirements/lock.txt to its pinned version."""
    pins = {}
    for line in (ROOT / "requirements" / "lock.txt").read_text(encoding="utf-8").splitlines():
        name, sep, version = line.partition("==")
        if sep and not line.startswith("#"):
            pins[canonicalize_name(name)] = version.split(";")[0].strip()
    return pins


def _missing_at(version: str, locked: dict[str, str]) -> set[str]:
    """Requirements (no extras) of locked packages that apply on `version` but are not locked."""
    env = default_environment() | {
        "python_full_version": version,
        "python_version": ".".join(version.split(".")[:2]),
        "extra": "",
    }
    missing = set()
    for name in locked:
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # a package of another image's extra that this venv lacks
        for line in requires:
            req = Requirement(line)
            if req.marker is not None and "extra" in str(req.marker):
                continue
            if (req.marker is None or req.marker.evaluate(env)) and (
                canonicalize_name(req.name) not in locked
            ):
                missing.add(f"{name} -> {req}")
    return missing


def test_lock_is_complete_at_the_declared_floor() -> None:
    assert not _missing_at(_floor(), _locked())


def test_floor_is_not_lower_than_the_lock_allows() -> None:
    # One patch release below the floor the lock must be incomplete, or the floor is too high.
    major, minor, patch = (int(p) for p in _floor().split("."))
    below = f"{major}.{minor}.{patch - 1}"
    assert _missing_at(below, _locked()), f"the lock also works on {below}: lower the floor"
