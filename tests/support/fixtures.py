"""Imaging fixtures: Orthanc loaded with the STS patients, the Kheops layer, synthetic cohorts.

Orthanc starts once per session (its storage in /dev/shm when possible, which halves the
upload time) and the ten STS patients are uploaded once.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from devkit.kheops_layer import KheopsLayer, LayerAlbum
from devkit.oidc_issuer import LocalIssuer
from devkit.synthetic import PatientTruth, write_cohort
from tests.support.orthanc import OrthancServer, available

STS_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sts"
SHM = Path("/dev/shm")

# Album layout of the Kheops layer (subs are those of the session issuer in tests/conftest.py).
BOB, ALICE, CAROL = "user-bob", "user-alice", "user-carol"
SMALL_PATIENTS = ("STS_002", "STS_003", "STS_008")
PRIVATE_PATIENTS = ("STS_024", "STS_025")


@dataclass(frozen=True)
class Cohort:
    """A synthetic cohort on disk with its ground truth."""

    root: Path
    truths: list[PatientTruth]


@pytest.fixture(scope="session")
def sts_dir() -> Path:
    """The ten STS patients (read-only)."""
    if not STS_DIR.is_dir():
        pytest.fail(f"STS data not found at {STS_DIR} (shared/ must sit beside the clone)")
    return STS_DIR


@pytest.fixture(scope="session")
def sts_studies(sts_dir: Path) -> dict[str, str]:
    """PatientID → StudyInstanceUID of the STS patients."""
    return study_uids(sts_dir)


def study_uids(folder: Path) -> dict[str, str]:
    """Return patient folder name → StudyInstanceUID for each patient folder of a cohort."""
    studies = {}
    for patient in sorted(p for p in folder.iterdir() if p.is_dir()):
        first = next(patient.rglob("*.dcm"))
        ds = pydicom.dcmread(first, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
        studies[patient.name] = str(ds.StudyInstanceUID)
    return studies


@pytest.fixture(scope="session")
def orthanc(sts_dir: Path) -> Iterator[OrthancServer]:
    """Orthanc + DICOMweb on loopback holding the ten STS patients."""
    if not available():
        pytest.fail("Orthanc and its DICOMweb plugin are not installed (./qi2 test installs them)")
    base = SHM if SHM.is_dir() and os.access(SHM, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="qi2-orthanc-", dir=base) as tmp:
        server = OrthancServer(Path(tmp)).start()
        try:
            server.upload_folder(sts_dir)
            yield server
        finally:
            server.stop()


def layer_albums(sts_studies: dict[str, str]) -> list[LayerAlbum]:
    """The layer's albums: all STS, a small one, a private one and a query-defined one."""
    return [
        LayerAlbum("sts", "STS sarcoma", sorted(sts_studies.values()), users={BOB, ALICE}),
        LayerAlbum(
            "sts-small",
            "STS small",
            [sts_studies[p] for p in SMALL_PATIENTS],
            users={BOB, CAROL},
            admins={CAROL},
        ),
        LayerAlbum(
            "private",
            "Alice's album",
            [sts_studies[p] for p in PRIVATE_PATIENTS],
            users={ALICE},
        ),
        LayerAlbum("sts-query", "STS_01x", users={BOB}, query={"PatientID": "STS_01*"}),
    ]


@pytest.fixture(scope="session")
def kheops_layer(
    orthanc: OrthancServer, issuer: LocalIssuer, sts_studies: dict[str, str]
) -> Iterator[KheopsLayer]:
    """The Kheops layer over Orthanc, trusting the session issuer's tokens."""
    jwks = f"{issuer.issuer}/protocol/openid-connect/certs"
    layer = KheopsLayer(orthanc.dicomweb_url, jwks, layer_albums(sts_studies), timeout=10)
    layer.start()
    yield layer
    layer.stop()


@pytest.fixture(scope="session")
def synthetic_cohort(tmp_path_factory: pytest.TempPathFactory) -> Cohort:
    """Six synthetic patients with RTSTRUCT and SEG (read-only for tests: copy to change)."""
    root = tmp_path_factory.mktemp("synthetic") / "cohort"
    return Cohort(root, write_cohort(root, 6, seed=7, with_seg=True))
