"""Run Orthanc (Debian package + DICOMweb plugin) on loopback for tests and the dev platform.

A private config folder and storage in a temporary directory; remote access, the DICOM port,
WebDAV and the explorer are off. Orthanc 1.10 cannot choose its listen address (it binds all
interfaces), so `RemoteAccessAllowed: false` is what keeps other hosts out.

Run alone: `python -m tests.support.orthanc --port 8042 --load ../shared/data/sts`.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import signal
import socket
import subprocess
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import httpx

log = logging.getLogger(__name__)

ORTHANC_BIN = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
BATCH_FILES = 64  # files per ZIP upload; Orthanc unpacks ZIPs posted to /instances
UPLOAD_WORKERS = 4


def available() -> bool:
    """Tell whether Orthanc and its DICOMweb plugin are installed."""
    return ORTHANC_BIN.is_file() and DICOMWEB_PLUGIN.is_file()


def free_port() -> int:
    """Return a TCP port that is free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OrthancServer:
    """One Orthanc process with its own config and storage."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._client = httpx.Client(timeout=60)

    @property
    def url(self) -> str:
        """Return Orthanc's REST root."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        """Return the DICOMweb root (QIDO/WADO/STOW)."""
        return f"{self.url}/dicom-web"

    @property
    def log_file(self) -> Path:
        """Return Orthanc's log file."""
        return self.workdir / "orthanc.log"

    def write_config(self) -> Path:
        """Write the private config folder; return it."""
        config_dir = self.workdir / "config"
        storage = self.workdir / "db"
        config_dir.mkdir(parents=True, exist_ok=True)
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "QuantImageTestOrthanc",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "HttpPort": self.port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": False,
            "WebDavEnabled": False,
            "OrthancExplorerEnabled": False,
            "ConcurrentJobs": 1,
            "SyncStorageArea": False,  # throwaway storage: no fsync per instance
            "DicomWeb": {
                "Enable": True,
                "Root": "/dicom-web/",
                "EnableWado": True,
                "WadoRoot": "/wado",
                "Host": f"127.0.0.1:{self.port}",
                "Ssl": False,
            },
        }
        (config_dir / "orthanc.json").write_text(json.dumps(config, indent=2))
        return config_dir

    def start(self, timeout: float = 30.0) -> OrthancServer:
        """Start Orthanc and wait until `/system` answers."""
        config_dir = self.write_config()
        self.process = subprocess.Popen(
            [str(ORTHANC_BIN), str(config_dir), f"--logfile={self.log_file}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready(timeout)
        log.info("Orthanc %d listening on port %d", self.process.pid, self.port)
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Poll `/system` until Orthanc answers, failing with its log if it exits."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited early:\n{self.log_tail()}")
            try:
                if self._client.get(f"{self.url}/system", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        """Return the end of Orthanc's log."""
        if not self.log_file.is_file():
            return "(no log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def upload_folder(self, folder: Path) -> int:
        """Upload every file under a folder (POST /instances, ZIP batches); return the count."""
        files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
        return self.upload_files(files)

    def upload_files(self, files: list[Path]) -> int:
        """Upload files in parallel ZIP batches; return how many instances Orthanc holds now."""
        batches = [files[i : i + BATCH_FILES] for i in range(0, len(files), BATCH_FILES)]
        with ThreadPoolExecutor(UPLOAD_WORKERS) as pool:
            stored = sum(pool.map(self._upload_batch, batches))
        log.info("uploaded %d instances to Orthanc", stored)
        return stored

    def _upload_batch(self, files: list[Path]) -> int:
        """POST one ZIP of files; return the number stored (or already stored)."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for number, path in enumerate(files):
                archive.write(path, f"{number:05d}.dcm")
        response = self._client.post(f"{self.url}/instances", content=buffer.getvalue())
        response.raise_for_status()
        answer = response.json()
        items = answer if isinstance(answer, list) else [answer]
        return sum(1 for item in items if item.get("Status") in ("Success", "AlreadyStored"))

    def statistics(self) -> dict[str, object]:
        """Return Orthanc's `/statistics`."""
        return dict(self._client.get(f"{self.url}/statistics").json())

    def stop(self, timeout: float = 15.0) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL if it hangs)."""
        self._client.close()
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def __enter__(self) -> OrthancServer:
        return self.start() if self.process is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main() -> None:
    """Run Orthanc in the foreground, optionally loading a folder of DICOM files."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, default=8042)
    parser.add_argument("--workdir", type=Path, help="config + storage (default: a temp dir)")
    parser.add_argument("--load", type=Path, action="append", default=[])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    signal.signal(signal.SIGTERM, _interrupt)
    with tempfile.TemporaryDirectory(prefix="qi2-orthanc-") as tmp:
        server = OrthancServer(args.workdir or Path(tmp), args.port).start()
        try:
            for folder in args.load:
                server.upload_folder(folder)
            log.info("DICOMweb root: %s (Ctrl-C stops)", server.dicomweb_url)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()


def _interrupt(signum: int, frame: object) -> None:
    """Turn SIGTERM into KeyboardInterrupt so that Orthanc is stopped on the way out."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
