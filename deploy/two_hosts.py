"""`./qi2 two-hosts`: the platform on two "hosts" that share nothing but a network (issue #17).

Two Linux network namespaces joined by a veth pair (10.77.0.1 and 10.77.0.2). Host A runs
MariaDB (its own data folder), Redis with a password, Orthanc behind the Kheops layer, the
issuer, the API, the `sockets` service, one extraction worker and a prediction worker. Host B
runs one extraction worker and the training worker in its own network and mount namespace
(private /tmp, own data folder); it reaches A only over 10.77.0.1. This script (as root)
builds the namespaces, runs itself again inside host A (`--inside`), and removes them after.

Inside, it: extracts an album of 14 studies (both hosts take studies: the task rows say
which worker ran each); trains a model (on B), predicts with it and downloads its export from
A; counts every `feature-status`, `extraction-status` and `training-status` event a Socket.IO
client on A receives; SIGKILLs everything in B during a slower extraction and a training (the
extraction ends on A, every vector once; the training fails readably and runs again on a new
B); starts B workers with a wrong Redis password and a wrong database password (they exit at
start-up with one line). It ends with one line: `two_hosts: studies_a=N studies_b=N
events_missing=N training_host=B host_loss=ok duplicates=0 seconds=N` (on one line).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support.orthanc: the Orthanc the tests use

import httpx  # noqa: E402
import pydicom  # noqa: E402
import socketio  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from devkit import platform  # noqa: E402
from devkit.kheops_layer import KheopsLayer, LayerAlbum  # noqa: E402
from devkit.oidc_issuer import LocalIssuer, User  # noqa: E402
from devkit.synthetic import PatientTruth, write_cohort  # noqa: E402
from tests.support.orthanc import OrthancServer, available  # noqa: E402

ADDR_A, ADDR_B = "10.77.0.1", "10.77.0.2"
# Ports of host A (its own network namespace: nothing else listens there).
SOCKETS_PORT, API_PORT, MARIADB_PORT, REDIS_PORT = 6900, 6901, 6903, 6904
ORTHANC_PORT, ISSUER_PORT, KHEOPS_PORT = 6910, 6911, 6912
DB_NAME, DB_USER = "quantimage2", "qi2worker"
OWNER = "alice"
ALBUM = "two-hosts"
STUDIES = 14
ROI = "GTV"
EVENT_KINDS = ("feature-status", "extraction-status", "training-status")
NODE_A, NODE_B, TRAINING_B = "extraction@host-a", "extraction@host-b", "training@host-b"
PREDICTION_A = "prediction@host-a"
# Sweeps shortened from minutes to seconds so host loss resolves during the run.
FAST_RECOVERY = {
    "EXTRACTION_ORPHAN_SWEEP_SECONDS": "5",
    "LOST_MESSAGE_SWEEP_SECONDS": "2",
    # A running training is lost after 15 s without a heartbeat (one every ~2 s).
    "LOST_MESSAGE_AFTER_SECONDS": "15",
}
CT_FEATURES = {"firstorder": None, "glcm": None, "glszm": None}


def preset(wavelet: bool = False) -> dict[str, Any]:
    """A CT preset for the synthetic studies; with wavelets, each study takes several seconds."""
    image_types: dict[str, Any] = {"Original": {}, "Wavelet": {}} if wavelet else {"Original": {}}
    return {
        "general": {"padding": 10, "combine_segmentation": True, "result_format": "long"},
        "volume_preprocessing": {
            "common": {"bspline_resampler": {"resampling_spacing": [1.0, 1.0, 1.0], "order": 3}}
        },
        "mask_preprocessing": {"default": {"binary_bspline_resampler": {"order": 3}}},
        "feature_extraction": {
            "CT": {
                "pyradiomics": {
                    "original": {
                        "imageType": image_types,
                        "featureClass": CT_FEATURES,
                        "setting": {"binWidth": 20, "voxelArrayShift": 1000, "label": 1},
                    }
                }
            }
        },
    }


# --- outside: the namespaces ------------------------------------------------------------------


@dataclass(frozen=True)
class Namespaces:
    """The two network namespaces, the veth pair and host B's persistent mount namespace."""

    tag: str
    folder: Path  # holds host B's mount namespace file (a private bind mount)

    @property
    def net_a(self) -> str:
        return f"qi2-{self.tag}-a"

    @property
    def net_b(self) -> str:
        return f"qi2-{self.tag}-b"

    @property
    def mount_b(self) -> Path:
        return self.folder / "mnt-b"

    def create(self) -> None:
        """Build both namespaces, join them with a veth pair, give B a private /tmp."""
        veth_a, veth_b = f"v{self.tag}a", f"v{self.tag}b"
        for command in (
            ["ip", "netns", "add", self.net_a],
            ["ip", "netns", "add", self.net_b],
            ["ip", "link", "add", veth_a, "type", "veth", "peer", "name", veth_b],
            ["ip", "link", "set", veth_a, "netns", self.net_a],
            ["ip", "link", "set", veth_b, "netns", self.net_b],
            ["ip", "-n", self.net_a, "addr", "add", f"{ADDR_A}/24", "dev", veth_a],
            ["ip", "-n", self.net_b, "addr", "add", f"{ADDR_B}/24", "dev", veth_b],
            ["ip", "-n", self.net_a, "link", "set", veth_a, "up"],
            ["ip", "-n", self.net_b, "link", "set", veth_b, "up"],
            ["ip", "-n", self.net_a, "link", "set", "lo", "up"],
            ["ip", "-n", self.net_b, "link", "set", "lo", "up"],
        ):
            subprocess.run(command, check=True)
        self.new_mount_b()

    def new_mount_b(self) -> None:
        """(Re)create host B's mount namespace: the machine's mounts with a fresh tmpfs /tmp."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if not _is_mountpoint(self.folder):
            subprocess.run(["mount", "--bind", str(self.folder), str(self.folder)], check=True)
            subprocess.run(["mount", "--make-private", str(self.folder)], check=True)
        if _is_mountpoint(self.mount_b):
            subprocess.run(["umount", str(self.mount_b)], check=True)
        self.mount_b.touch()
        subprocess.run(
            ["unshare", f"--mount={self.mount_b}", "--propagation", "private",
             "sh", "-euc", _PRIVATE_TMP, "private-tmp", str(ROOT), hold_dir(self.net_b)],
            check=True,
        )  # fmt: skip

    def remove(self) -> None:
        """Kill what is left in the namespaces and delete them (best effort)."""
        for net in (self.net_b, self.net_a):
            kill_netns(net)
            subprocess.run(["ip", "netns", "del", net], capture_output=True)
        for path in (self.mount_b, self.folder):
            if _is_mountpoint(path):
                subprocess.run(["umount", "-l", str(path)], capture_output=True)
        with contextlib.suppress(OSError):
            Path(hold_dir(self.net_b)).rmdir()  # the empty hold of _PRIVATE_TMP


# Host B's /tmp: a fresh tmpfs. A checkout that itself lives under /tmp (a CI clone) is bound
# back into it at the same path, or B could not run this checkout's programs.
_PRIVATE_TMP = """
root="$1"; hold="$2"
case "$root" in /tmp/*) mkdir -p "$hold"; mount --bind "$root" "$hold";; esac
mount -t tmpfs -o size=2g qi2-host-b-tmp /tmp
case "$root" in /tmp/*) mkdir -p "$root"; mount --bind "$hold" "$root"; umount "$hold";; esac
"""


def hold_dir(net_b: str) -> str:
    """Where _PRIVATE_TMP holds the checkout while it mounts B's tmpfs (outside /tmp)."""
    return f"/run/qi2-hold-{net_b}"


def _is_mountpoint(path: Path) -> bool:
    """Tell whether a path is a mount point (mountpoint -q)."""
    return subprocess.run(["mountpoint", "-q", str(path)], capture_output=True).returncode == 0


def netns_pids(net: str) -> list[int]:
    """Return the processes living in a network namespace."""
    out = subprocess.run(["ip", "netns", "pids", net], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def kill_netns(net: str) -> list[int]:
    """SIGKILL every process of a network namespace (a host that loses power)."""
    pids = netns_pids(net)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def outside(args: argparse.Namespace) -> int:
    """As root: build the namespaces, run the scenario inside host A, always clean up."""
    if os.geteuid() != 0:
        print(
            "two_hosts: needs root (it creates network and mount namespaces); "
            "run `sudo ./qi2 two-hosts`",
            file=sys.stderr,
        )
        return 2
    missing = [
        tool
        for tool in ("ip", "unshare", "nsenter", "mariadbd", "redis-server")
        if not shutil.which(tool)
    ]
    if missing or not available():
        print(f"two_hosts: missing {missing or 'Orthanc + DICOMweb'}", file=sys.stderr)
        return 2
    work = Path(args.work_dir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    spaces = Namespaces(tag=f"{os.getpid() % 10000}", folder=work / "ns")
    try:
        spaces.create()
        # nsenter (not `ip netns exec`, which makes a mount namespace of its own: a copy of the
        # mounts leaves out B's mount-namespace file, so host A could not start B's processes).
        command = [
            "nsenter",
            f"--net=/run/netns/{spaces.net_a}",
            "--",
            sys.executable,
            __file__,
            "--inside",
            "--work-dir",
            str(work),
            "--net-b",
            spaces.net_b,
            "--mount-b",
            str(spaces.mount_b),
        ]
        return subprocess.run(command, cwd=ROOT).returncode
    finally:
        spaces.remove()


# --- inside host A ---------------------------------------------------------------------------


@dataclass
class HostB:
    """How to start processes on host B: its network and mount namespaces, its data folder."""

    net: str
    mount: Path
    data: Path

    def command(self, *command: str) -> list[str]:
        """Wrap a command so it runs on host B."""
        return [
            "nsenter",
            f"--net=/run/netns/{self.net}",
            f"--mount={self.mount}",
            f"--wd={ROOT}",
            "--",
            *command,
        ]

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """Host B's environment: its own data folder and temp dir."""
        return {**base, "QI2_DATA_DIR": str(self.data), "TMPDIR": "/tmp"}


class Events:
    """A Socket.IO client on host A counting every status event by kind."""

    def __init__(self, url: str, token: str) -> None:
        self.received: list[tuple[str, dict]] = []
        self._lock = threading.Lock()
        self.client = socketio.Client(reconnection=True)
        for kind in EVENT_KINDS:
            self.client.on(kind, self._handler(kind))
        self.client.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=30)

    def _handler(self, kind: str) -> Callable[[dict], None]:
        def handle(payload: dict) -> None:
            with self._lock:
                self.received.append((kind, payload))

        return handle

    def of(self, kind: str) -> list[dict]:
        """Return the payloads of one kind received so far."""
        with self._lock:
            return [payload for name, payload in self.received if name == kind]

    def counts(self) -> Counter:
        """Return the number of events per kind."""
        with self._lock:
            return Counter(name for name, _ in self.received)

    def close(self) -> None:
        self.client.disconnect()


@dataclass
class HostA:
    """Host A's services, its HTTP client to the API and the bookkeeping of the run."""

    work: Path
    host_b: HostB
    env: dict[str, str]
    issuer: LocalIssuer
    layer: KheopsLayer
    orthanc: OrthancServer
    engine: sa.Engine
    api: str
    token: str
    truths: list[PatientTruth]
    passwords: dict[str, str]  # "redis", "db": to build wrong ones for the credential checks
    first_extraction: int = 0
    children: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        """Start a long-running child (platform.start: log under the work folder)."""
        self.children[name] = platform.start(env or self.env, self.work / "log", name, *command)

    def start_on_b(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        """Start a child on host B."""
        self.start(name, self.host_b.command(*command), self.host_b.env(env or self.env))

    def wait_worker(self, name: str, timeout: float = 300) -> None:
        """Wait for a worker's 'ready.' line; fail if it exits first."""
        log = self.work / "log" / f"{name}.log"
        wait(
            lambda: log.is_file() and b" ready." in log.read_bytes(),
            timeout,
            f"{name} ready",
            self.children[name],
        )

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        response = httpx.get(f"{self.api}{path}", headers=self.headers, timeout=120, **kwargs)
        response.raise_for_status()
        return response

    def post(self, path: str, body: Any, **kwargs: Any) -> httpx.Response:
        response = httpx.post(
            f"{self.api}{path}", json=body, headers=self.headers, timeout=120, **kwargs
        )
        if response.status_code >= 400:
            raise RuntimeError(f"POST {path}: {response.status_code} {response.text[:500]}")
        return response

    def sql(self, query: str, **params: Any) -> list[Any]:
        with self.engine.connect() as connection:
            return list(connection.execute(sa.text(query), params))

    def restart_b(self) -> None:
        """Bring host B back as after a reboot: an empty /tmp, its two workers started anew."""
        # A fresh tmpfs, not a delete: a checkout under /tmp is bound inside B's /tmp.
        reset = "cd /; umount -R /tmp\n" + _PRIVATE_TMP
        hold = hold_dir(self.host_b.net)
        subprocess.run(
            self.host_b.command("sh", "-euc", reset, "private-tmp", str(ROOT), hold), check=True
        )
        start_b_workers(self, suffix="-2")
        for name in ("b-extraction-2", "b-training-2"):
            self.wait_worker(name)

    def stop(self) -> None:
        platform.stop_all(list(self.children.values()))


def wait(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    child: subprocess.Popen | None = None,
    interval: float = 0.5,
) -> Any:
    """Poll until the predicate returns something truthy; fail loudly after the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if child is not None and child.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {child.returncode}")
        time.sleep(interval)
    raise TimeoutError(f"{what}: not after {timeout:.0f} s")


def run_checked(command: list[str], env: dict[str, str], log: Path) -> None:
    """Run a set-up command to completion, its output in a log."""
    with log.open("ab") as out:
        subprocess.run(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=True)


def start_mariadb(work: Path, password: str) -> subprocess.Popen:
    """A MariaDB with its own data folder on A's veth address; the workers' user over TCP."""
    data, sock = work / "mariadb", work / "mariadb.sock"
    run_checked(
        ["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
         "--auth-root-authentication-method=socket", "--skip-test-db"],
        os.environ.copy(), work / "log" / "mariadb-install.log",
    )  # fmt: skip
    process = subprocess.Popen(
        ["mariadbd", "--no-defaults", f"--datadir={data}", "--user=root",
         f"--bind-address={ADDR_A}", f"--port={MARIADB_PORT}", f"--socket={sock}",
         f"--pid-file={work / 'mariadb.pid'}", f"--log-error={work / 'log' / 'mariadb.log'}",
         "--skip-name-resolve", "--skip-log-bin", "--performance-schema=OFF",
         "--innodb-buffer-pool-size=128M", "--character-set-server=utf8mb4",
         "--collation-server=utf8mb4_bin"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    ping = ["mariadb-admin", f"--socket={sock}", "-uroot", "ping"]
    wait(lambda: subprocess.run(ping, capture_output=True).returncode == 0, 120, "mariadb", process)
    # Hosts A and B both reach it over the veth subnet, as a worker machine reaches the VM.
    statements = (
        f"CREATE DATABASE {DB_NAME} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin; "
        f"CREATE USER '{DB_USER}'@'10.77.0.%' IDENTIFIED BY '{password}'; "
        f"GRANT ALL PRIVILEGES ON {DB_NAME}.* TO '{DB_USER}'@'10.77.0.%';"
    )
    subprocess.run(["mariadb", f"--socket={sock}", "-uroot", "-e", statements], check=True)
    return process


def start_redis(work: Path, password: str) -> subprocess.Popen:
    """Redis on A's veth address, with a password (`requirepass`)."""
    folder = work / "redis"
    folder.mkdir()
    conf = folder / "redis.conf"
    # The password in a file only root reads, never on a command line (`ps` shows those).
    conf.write_text(
        f'bind {ADDR_A}\nport {REDIS_PORT}\nrequirepass {password}\nsave ""\n'
        f"appendonly yes\ndir {folder}\nlogfile {work / 'log' / 'redis.log'}\n"
    )
    conf.chmod(0o600)
    process = subprocess.Popen(["redis-server", str(conf)], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    return process


def study_album(work: Path, orthanc: OrthancServer) -> tuple[list[PatientTruth], list[str]]:
    """Write 14 synthetic studies (CT + RTSTRUCT), load them into Orthanc; return truths, UIDs."""
    folder = work / "cohort"
    truths = write_cohort(folder, STUDIES, seed=17)
    orthanc.upload_folder(folder)
    uids = []
    for patient in sorted(p for p in folder.iterdir() if p.is_dir()):
        first = next(patient.rglob("*.dcm"))
        dataset = pydicom.dcmread(first, stop_before_pixels=True)
        uids.append(str(dataset.StudyInstanceUID))
    shutil.rmtree(folder)  # the workers must fetch the studies from A, not read a folder
    return truths, uids


def bring_up(args: argparse.Namespace, stack: contextlib.ExitStack) -> HostA:
    """Start every service of host A and both workers of host B; return host A."""
    work = Path(args.work_dir)
    (work / "log").mkdir(parents=True, exist_ok=True)
    redis_pw, db_pw = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    mariadb = start_mariadb(work, db_pw)
    stack.callback(platform.stop_all, [mariadb])
    redis_server = start_redis(work, redis_pw)
    stack.callback(platform.stop_all, [redis_server])
    orthanc = OrthancServer(work / "orthanc", port=ORTHANC_PORT).start()
    stack.callback(orthanc.stop)
    issuer = LocalIssuer(users=[User(OWNER, "alice-pw", sub="user-alice", client_roles=["admin"])])
    issuer.start(port=ISSUER_PORT)
    stack.callback(issuer.stop)
    truths, uids = study_album(work, orthanc)
    layer = KheopsLayer(
        orthanc.dicomweb_url,
        f"{issuer.issuer}/protocol/openid-connect/certs",
        [LayerAlbum(ALBUM, "Two hosts", uids, users={"user-alice"})],
        timeout=30,
    )
    layer.start(host=ADDR_A, port=KHEOPS_PORT)  # B fetches the studies here, over the veth
    stack.callback(layer.stop)
    redis_url = f"redis://:{redis_pw}@{ADDR_A}:{REDIS_PORT}"
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": (
            f"mysql+pymysql://{DB_USER}:{db_pw}@{ADDR_A}:{MARIADB_PORT}/{DB_NAME}?charset=utf8mb4"
        ),
        "CELERY_BROKER_URL": f"{redis_url}/0",
        "CELERY_RESULT_BACKEND": f"{redis_url}/1",
        "SOCKET_MESSAGE_QUEUE": f"{redis_url}/2",
        "IMAGE_SOURCE": "kheops",
        "KHEOPS_BASE_URL": f"http://{ADDR_A}:{KHEOPS_PORT}",
        "KEYCLOAK_BASE_URL": issuer.base_url + "/",
        "QI2_DATA_DIR": str(work / "host-a"),
        "GRID_SEARCH_CONCURRENCY": "1",
        "LOG_LEVEL": "INFO",
        **FAST_RECOVERY,
    }
    cli = str(platform.VENV_BIN / "quantimage2")
    run_checked([cli, "db-upgrade"], env, work / "log" / "migrate.log")
    run_checked([cli, "seed-presets"], env, work / "log" / "migrate.log")
    host_b = HostB(args.net_b, Path(args.mount_b), work / "host-b")
    host_b.data.mkdir()
    engine = sa.create_engine(env["DATABASE_URL"], pool_pre_ping=True)
    stack.callback(engine.dispose)
    host = HostA(
        work=work,
        host_b=host_b,
        env=env,
        issuer=issuer,
        layer=layer,
        orthanc=orthanc,
        engine=engine,
        api=f"http://127.0.0.1:{SOCKETS_PORT}",
        token=issuer.mint(OWNER, ttl=4 * 3600),
        truths=truths,
        passwords={"redis": redis_pw, "db": db_pw},
    )
    stack.callback(host.stop)
    upstream = f"http://127.0.0.1:{API_PORT}"
    host.start("api", platform.api_command("127.0.0.1", API_PORT))
    host.start("sockets", platform.socket_command("127.0.0.1", SOCKETS_PORT, upstream))
    host.start("a-extraction", platform.worker_command("extraction", NODE_A, 1))
    host.start("a-prediction", platform.worker_command("prediction", PREDICTION_A, 1))
    start_b_workers(host)
    dead = platform.wait_ready(f"{host.api}/health/ready", list(host.children.values()))
    if dead is not None:
        raise RuntimeError(f"host A did not start: {dead.args} exited; see {work}/log")
    for name in ("a-extraction", "a-prediction", "b-extraction", "b-training"):
        host.wait_worker(name)
    return host


def start_b_workers(host: HostA, suffix: str = "") -> None:
    """Start host B's extraction worker and its training worker (threads pool, as deployed)."""
    host.start_on_b(f"b-extraction{suffix}", platform.worker_command("extraction", NODE_B, 1))
    host.start_on_b(
        f"b-training{suffix}", platform.worker_command("training", TRAINING_B, 1, "threads")
    )


# --- the scenario ------------------------------------------------------------------------------


def extract(host: HostA, wavelet: bool = False) -> int:
    """Start an extraction of the album; return its id."""
    body = {"config": preset(wavelet), "rois": [ROI]}
    return int(host.post(f"/extract/album/{ALBUM}", body).json()["id"])


def extraction_done(host: HostA, extraction_id: int, timeout: float) -> dict:
    """Wait until the extraction ended; return its status."""

    def ended() -> dict | None:
        status = host.get(f"/extractions/{extraction_id}/status").json()
        return status if status.get("ready") else None

    return wait(ended, timeout, f"extraction {extraction_id}", interval=1.0)


def study_rows(host: HostA, extraction_id: int) -> list[Any]:
    """Return (id, status, worker, attempts) of each study of an extraction."""
    return host.sql(
        "SELECT id, status, worker, attempts, error FROM feature_extraction_task "
        "WHERE feature_extraction_id = :e ORDER BY id",
        e=extraction_id,
    )


def vector_counts(host: HostA, extraction_id: int) -> tuple[int, int]:
    """Return the extraction's vectors and its distinct (study, modality, ROI) keys."""
    ((rows, keys),) = host.sql(
        "SELECT COUNT(*), COUNT(DISTINCT feature_extraction_task_id, modality, roi) "
        "FROM feature_vector WHERE feature_extraction_id = :e",
        e=extraction_id,
    )
    return int(rows), int(keys)


def outcome_labels(host: HostA) -> int:
    """Create a classification outcome from the synthetic truths; return its id."""
    category = host.post(
        f"/label-categories/{ALBUM}", {"label_type": "Classification", "name": "Response"}
    ).json()
    labels = {t.patient_id: {"Outcome": "yes" if t.outcome else "no"} for t in host.truths}
    host.post(f"/labels/{category['id']}", {"label_map": labels, "pos_label": "yes"})
    httpx.patch(
        f"{host.api}/albums/{ALBUM}/current-outcome/{category['id']}", headers=host.headers
    ).raise_for_status()
    return int(category["id"])


def train(host: HostA, extraction_id: int, category_id: int, algorithms: list[str] | None) -> str:
    """Request a training on the whole album; return its training id."""
    patients = [t.patient_id for t in host.truths]
    body = {
        "extraction-id": extraction_id,
        "collection-id": None,
        "label-category-id": category_id,
        "studies": [],
        "album": {"album_id": ALBUM, "name": ALBUM},
        "labels": [],
        "data-splitting-type": "traintest",
        "train-test-split-type": "automatic",
        "training-patients": patients[:10],
        "test-patients": patients[10:],
        "algorithms": algorithms,
    }
    return str(host.post(f"/models/{ALBUM}", body).json()["training-id"])


def run_row(host: HostA, training_id: str) -> Any:
    """Return (status, worker, error, model_id, current_step, total_steps) of a training run."""
    (row,) = host.sql(
        "SELECT status, worker, error, model_id, current_step, total_steps FROM training_run "
        "WHERE training_id = :t",
        t=training_id,
    )
    return row


def training_ended(host: HostA, training_id: str, timeout: float) -> Any:
    """Wait until a training run ended; return its row."""
    return wait(
        lambda: (row := run_row(host, training_id)).status in ("SUCCESS", "FAILURE") and row,
        timeout,
        f"training {training_id}",
        interval=1.0,
    )


def missing_events(
    host: HostA, listener: Events, extraction_ids: list[int], training_ids: list[str]
) -> dict[str, int]:
    """Count the events the client should have received and did not, per kind.

    Per study: its 'Processing data' step and its final state (published by whichever host
    ran it); per extraction: a final `extraction-status`; per training: its final event and
    one `training` event per step its row recorded.
    """
    feature = listener.of("feature-status")
    missing: Counter = Counter()
    for extraction_id in extraction_ids:
        for task_id, status, *_ in study_rows(host, extraction_id):
            mine = [p for p in feature if p.get("feature_extraction_task_id") == task_id]
            if not any(p.get("status") == status for p in mine):
                missing["feature-status"] += 1
            if not any("Processing data" in str(p.get("status_message")) for p in mine):
                missing["feature-status"] += 1
        if not any(_is_final(p, extraction_id) for p in listener.of("extraction-status")):
            missing["extraction-status"] += 1
    for training_id in training_ids:
        row = run_row(host, training_id)
        mine = [p for p in listener.of("training-status") if p.get("training-id") == training_id]
        if not any(p.get("complete") or p.get("failed") for p in mine):
            missing["training-status"] += 1
        steps = sum(p.get("phase") == "training" for p in mine)
        missing["training-status"] += max(0, row.current_step - steps)
    return {kind: count for kind, count in missing.items() if count}


def _is_final(payload: dict, extraction_id: int) -> bool:
    """Tell whether an `extraction-status` payload says an extraction ended."""
    ids = {payload.get("feature_extraction_id"), payload.get("id")}
    return extraction_id in ids and bool((payload.get("status") or {}).get("ready"))


def wrong_credentials(host: HostA) -> list[str]:
    """Start B workers with a wrong Redis password, then a wrong DB password; return what
    each printed (its start-up check line), with its exit status and time."""
    lines = []
    wrong = "not-the-password"
    redis_pw, db_pw = host.passwords["redis"], host.passwords["db"]
    redis_keys = ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "SOCKET_MESSAGE_QUEUE")
    cases = {
        "wrong Redis password": {k: host.env[k].replace(redis_pw, wrong) for k in redis_keys},
        "wrong database password": {"DATABASE_URL": host.env["DATABASE_URL"].replace(db_pw, wrong)},
    }
    for what, change in cases.items():
        env = host.host_b.env({**host.env, **change})
        command = host.host_b.command(
            *platform.worker_command("extraction", "extraction-badpw@host-b", 1)
        )
        started = time.monotonic()
        done = subprocess.run(
            command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180
        )
        seconds = time.monotonic() - started
        said = [
            line
            for line in (done.stdout + done.stderr).splitlines()
            if line.startswith("worker start-up check failed")
        ]
        leaked = wrong in done.stdout + done.stderr
        lines.append(
            f"{what}: exit {done.returncode} after {seconds:.1f} s; "
            f"{said[0] if said else 'NO START-UP MESSAGE'}; password shown: {leaked}"
        )
    return lines


def b_loopback_is_empty(host: HostA) -> bool:
    """Tell whether host B's 127.0.0.1 has none of A's services (B may only use the veth)."""
    probe = (
        "import socket, sys\n"
        f"ports = {[SOCKETS_PORT, API_PORT, MARIADB_PORT, REDIS_PORT, KHEOPS_PORT]}\n"
        "sys.exit(any(socket.socket().connect_ex(('127.0.0.1', p)) == 0 for p in ports))"
    )
    command = host.host_b.command(sys.executable, "-c", probe)
    return subprocess.run(command, cwd=ROOT, capture_output=True).returncode == 0


def scenario(args: argparse.Namespace) -> int:
    """Run the whole proof inside host A; print the summary lines."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the layer's request log
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        host = bring_up(args, stack)
        print(
            f"two_hosts: platform up on A ({ADDR_A}) and B ({ADDR_B}) in "
            f"{time.monotonic() - started:.0f} s",
            flush=True,
        )
        listener = Events(host.api, host.token)
        stack.callback(listener.close)
        isolated = b_loopback_is_empty(host)
        print(f"two_hosts: host B's 127.0.0.1 has none of A's services: {isolated}", flush=True)

        # 1. An album across both hosts.
        first = host.first_extraction = extract(host)
        status = extraction_done(host, first, 900)
        rows = study_rows(host, first)
        per_host = Counter(row.worker for row in rows if row.status == "SUCCESS")
        vectors, keys = vector_counts(host, first)
        print(
            f"two_hosts: extraction {first}: {status['completed_tasks']}/{status['total_tasks']}"
            f" studies; per worker {dict(per_host)}; vectors {vectors}",
            flush=True,
        )

        # 2. A model trained on B, a prediction and the export from A.
        category = outcome_labels(host)
        training_id = train(host, first, category, ["LogisticRegression"])
        run = training_ended(host, training_id, 900)
        print(
            f"two_hosts: training {training_id}: {run.status} on {run.worker}, model "
            f"{run.model_id} {run.error or ''}",
            flush=True,
        )
        training_host = "B" if run.worker == TRAINING_B and run.status == "SUCCESS" else "?"
        predicted = host.post(f"/models/{run.model_id}/predict", {"extraction-id": first}).json()
        prediction = wait(
            lambda: (
                (body := host.get(predicted["url"]).json())["status"] in ("SUCCESS", "FAILURE")
                and body
            ),
            300,
            "prediction",
        )
        export = zipfile.ZipFile(BytesIO(host.get(f"/models/{run.model_id}/export").content))
        print(
            f"two_hosts: prediction {prediction['status']}: {len(prediction['predictions'])} "
            f"patients; export {sorted(export.namelist())}",
            flush=True,
        )

        # 3. Host loss during a slower extraction and a training.
        host_loss, duplicates, loss_training = host_loss_case(host, category)
        trainings = [training_id, *loss_training]
        extractions = [first, host_loss["extraction"]]

        # 4. Wrong credentials on B.
        messages = wrong_credentials(host)
        time.sleep(2)  # late events
        missing = missing_events(host, listener, extractions, trainings)
        counts = listener.counts()
        b_first = {row.id for row in rows if row.worker == NODE_B}
        b_events = sum(
            1
            for p in listener.of("feature-status")
            if p.get("feature_extraction_task_id") in b_first
        )
        print(
            f"two_hosts: events received on A {dict(counts)}; of them published on B: "
            f"feature-status of B's {len(b_first)} studies {b_events}, training-status "
            f"{counts['training-status']} (every training ran on B); missing {missing or 0}",
            flush=True,
        )
        for line in messages:
            print(f"two_hosts: {line}", flush=True)
        ok_messages = all("exit 3" in m and "password shown: False" in m for m in messages)
        seconds = time.monotonic() - started
        studies_a = per_host.get(NODE_A, 0)
        studies_b = per_host.get(NODE_B, 0)
        loss = "inconclusive" if host_loss["inconclusive"] else "FAILED"
        loss = "ok" if host_loss["ok"] else loss
        print(
            f"two_hosts: studies_a={studies_a} studies_b={studies_b} "
            f"events_missing={sum(missing.values())} training_host={training_host} "
            f"host_loss={loss} duplicates={duplicates} seconds={seconds:.0f}",
            flush=True,
        )
        rest = (
            isolated
            and studies_a > 0
            and studies_b > 0
            and not missing
            and training_host == "B"
            and duplicates == 0
            and ok_messages
            and status["completed_tasks"] == STUDIES
            and vectors == keys == STUDIES
        )
        if rest and host_loss["inconclusive"]:
            return INCONCLUSIVE  # the caller runs the scenario again (.ci/run)
        return 0 if rest and host_loss["ok"] else 1


# Exit status when the loss caught B holding no study: nothing failed, nothing was proven.
INCONCLUSIVE = 75


def host_loss_case(host: HostA, category: int) -> tuple[dict, int, list[str]]:
    """SIGKILL everything on B while it extracts and trains; check the ends; train again."""
    second = extract(host, wavelet=True)
    # Hold B's training worker busy with the full grid while B's extraction worker computes.
    loss_training = train(host, host.first_extraction, category, None)

    def b_busy() -> bool:
        studying = [
            r
            for r in study_rows(host, second)
            if r.worker == NODE_B and r.status in ("STARTED", "PROGRESS")
        ]
        training = run_row(host, loss_training)
        return bool(studying) and training.status in ("STARTED", "PROGRESS")

    wait(b_busy, 900, "host B extracting and training", interval=0.2)
    killed = kill_netns(host.host_b.net)
    lost_at = time.monotonic()
    # Read after the kill: a study B finished between the last look and the SIGKILL is B's.
    held = {
        r.id
        for r in study_rows(host, second)
        if r.worker == NODE_B and r.status in ("STARTED", "PROGRESS")
    }
    print(
        f"two_hosts: host B lost: SIGKILL of {len(killed)} processes while it held studies "
        f"{sorted(held)} and training {loss_training}",
        flush=True,
    )
    status = extraction_done(host, second, 1800)
    rows = study_rows(host, second)
    vectors, keys = vector_counts(host, second)
    expected = STUDIES * 1 * 1  # studies x ROIs x modalities
    duplicates = vectors - keys
    redone = {r.id: f"{r.worker} (attempt {r.attempts})" for r in rows if r.id in held}
    print(
        f"two_hosts: after the loss, extraction {second}: {status['completed_tasks']}/"
        f"{status['total_tasks']} studies in {time.monotonic() - lost_at:.0f} s; B's held "
        f"studies finished by {redone}; vectors {vectors} (expected {expected}, "
        f"duplicates {duplicates})",
        flush=True,
    )
    lost_run = training_ended(host, loss_training, 300)
    print(f"two_hosts: training at the loss: {lost_run.status}: {lost_run.error}", flush=True)

    # A new host B (fresh /tmp), and the same training requested again.
    host.restart_b()
    again = train(host, host.first_extraction, category, ["LogisticRegression"])
    rerun = training_ended(host, again, 900)
    print(f"two_hosts: the training started again: {rerun.status} on {rerun.worker}", flush=True)
    ok = (
        status["completed_tasks"] == STUDIES
        and bool(held)
        and all(r.status == "SUCCESS" for r in rows)
        and all(worker.startswith(f"{NODE_A} ") for worker in redone.values())
        and vectors == expected
        and lost_run.status == "FAILURE"
        and "stopped unexpectedly" in (lost_run.error or "")
        and rerun.status == "SUCCESS"
        and rerun.worker == TRAINING_B
    )
    # B finished its studies between the last look and the SIGKILL: the loss never happened
    # mid-study, so the case proves nothing either way (studies of a second take on a fast host).
    inconclusive = not held and ok_but_held(status, rows, vectors, expected, lost_run, rerun)
    return (
        {"ok": ok, "inconclusive": inconclusive, "extraction": second},
        duplicates,
        [
            loss_training,
            again,
        ],
    )


def ok_but_held(
    status: dict, rows: list, vectors: int, expected: int, lost_run: Any, rerun: Any
) -> bool:
    """Tell whether every check of the host-loss case but "B held studies" passed."""
    return (
        status["completed_tasks"] == STUDIES
        and all(r.status == "SUCCESS" for r in rows)
        and vectors == expected
        and lost_run.status == "FAILURE"
        and "stopped unexpectedly" in (lost_run.error or "")
        and rerun.status == "SUCCESS"
        and rerun.worker == TRAINING_B
    )


def main() -> int:
    """Parse the options; outside: namespaces; inside: the scenario."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--work-dir", default=str(ROOT / "var" / "two-hosts"))
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--net-b", help=argparse.SUPPRESS)
    parser.add_argument("--mount-b", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.inside:
        return outside(args)
    return scenario(args)


if __name__ == "__main__":
    sys.exit(main())
