"""A private platform for fault tests: its own MariaDB and Redis on free ports, the API under
gunicorn and real Celery workers, all subprocesses this module starts, stops and restarts.

The machine's shared MariaDB and Redis are never touched. MariaDB is installed and migrated once
per module into a template data folder; each test copies it and runs its own `mariadbd`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from shared.db import migrate
from tests.support.live import ServedProcess, WorkerProcess, wait_until
from webapp.servers import api_command, socket_command

DB_NAME, DB_USER, DB_PASSWORD = "qi2fault", "qi2", "qi2-fault-pw"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"


def free_port() -> int:
    """Return a loopback TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop(process: subprocess.Popen | None, timeout: float = 30.0) -> None:
    """Stop a child we started: SIGTERM (a clean shutdown), SIGKILL if it hangs."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class RedisServer:
    """A redis-server configured like the production broker (AOF, fsync every second)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def url(self, db: int) -> str:
        """Return the URL of one DB number."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        """Start the server and wait until it answers."""
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port), "--dir",
             str(self.folder), "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
             "--logfile", str(self.folder / "redis.log")],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        wait_until(lambda: _answers(client.ping), 20, interval=0.1)
        client.close()
        return self

    def stop(self) -> None:
        """Shut the server down (SIGTERM: it writes its append-only file and exits)."""
        _stop(self.process)

    def restart(self, down_seconds: float) -> None:
        """Stop, stay down for a while, start again on the same port and data."""
        self.stop()
        time.sleep(down_seconds)
        self.start()


def _answers(call: object) -> bool:
    """Tell whether a probe call succeeds."""
    try:
        return bool(call())  # type: ignore[operator]
    except Exception:  # not up yet
        return False


class MariaDBServer:
    """A mariadbd with its own data folder, socket and loopback port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def datadir(self) -> Path:
        return self.folder / "data"

    @property
    def socket_path(self) -> Path:
        return self.folder / "mysqld.sock"

    @property
    def url(self) -> str:
        """Return the SQLAlchemy URL the platform uses (TCP, a password user)."""
        return (
            f"mysql+pymysql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{self.port}/{DB_NAME}"
            "?charset=utf8mb4"
        )

    def install(self) -> MariaDBServer:
        """Create a fresh data folder (system tables only)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={self.datadir}", "--user=root",
             "--auth-root-authentication-method=socket", "--skip-test-db"],
            check=True, capture_output=True,
        )  # fmt: skip
        return self

    def start(self) -> MariaDBServer:
        """Start the server and wait until it accepts connections."""
        self.process = subprocess.Popen(
            [MARIADBD, "--no-defaults", f"--datadir={self.datadir}", "--user=root",
             "--bind-address=127.0.0.1", f"--port={self.port}", f"--socket={self.socket_path}",
             f"--pid-file={self.folder / 'mysqld.pid'}", f"--log-error={self.folder / 'err.log'}",
             "--skip-name-resolve", "--skip-log-bin", "--performance-schema=OFF",
             "--innodb-buffer-pool-size=64M", "--character-set-server=utf8mb4",
             "--collation-server=utf8mb4_bin"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(self._ping, 60, interval=0.2)
        return self

    def _ping(self) -> bool:
        """Tell whether the server answers on its socket."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError((self.folder / "err.log").read_text()[-2000:])
        ping = ["mariadb-admin", f"--socket={self.socket_path}", "-uroot", "ping"]
        return subprocess.run(ping, capture_output=True).returncode == 0

    def sql(self, statement: str) -> None:
        """Run SQL as root over the socket."""
        command = ["mariadb", f"--socket={self.socket_path}", "-uroot", "-e", statement]
        subprocess.run(command, check=True, capture_output=True)

    def create_database(self) -> None:
        """Create the platform's database and user, then build the schema with the migrations."""
        self.sql(
            f"CREATE DATABASE {DB_NAME} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin; "
            f"CREATE USER '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}'; "
            f"GRANT ALL PRIVILEGES ON {DB_NAME}.* TO '{DB_USER}'@'127.0.0.1';"
        )
        migrate.upgrade(self.url)

    def stop(self) -> None:
        """Shut the server down cleanly."""
        _stop(self.process, timeout=60)

    def restart(self, down_seconds: float) -> None:
        """Stop, stay down for a while, start again on the same port and data."""
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def copy(self, folder: Path) -> MariaDBServer:
        """Return a stopped server on a copy of this (stopped) server's data."""
        shutil.copytree(self.datadir, folder / "data", symlinks=True)
        return MariaDBServer(folder)


class ApiProcess:
    """The web tier as production runs it: gunicorn (REST) behind the Socket.IO front."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        api_port = free_port()
        api_url = f"http://127.0.0.1:{api_port}"
        self.rest = ServedProcess(api_command("127.0.0.1", api_port), log, "/", **env)
        self.rest.wait_ready(api_url)
        front_port = free_port()
        self.url = f"http://127.0.0.1:{front_port}"
        self.front = ServedProcess(
            socket_command("127.0.0.1", front_port, api_url),
            log.with_name(log.stem + "-sockets.log"),
            "/health/sockets",
            **env,
        )
        self.front.wait_ready(self.url)

    def stop(self) -> None:
        """Stop the front, then gunicorn."""
        self.front.stop()
        self.rest.stop()


def worker_pids(worker: WorkerProcess) -> list[int]:
    """Return the worker's main process and its pool processes."""
    return [worker.process.pid, *worker.child_pids()]


def kill_whole_worker(worker: WorkerProcess) -> list[int]:
    """SIGKILL the main process and every pool process at once (a host or container crash)."""
    pids = worker_pids(worker)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    worker.process.wait()
    worker.handle.close()
    return pids


@dataclass
class Platform:
    """One test's private platform; `env` is what every process of it runs with."""

    folder: Path
    mariadb: MariaDBServer
    redis: RedisServer
    env: dict[str, str]
    engine: sa.Engine
    api: ApiProcess | None = None
    workers: list[WorkerProcess] = field(default_factory=list)

    def start_api(self) -> ApiProcess:
        """Start the API."""
        self.api = ApiProcess(self.env, self.folder / "api.log")
        return self.api

    def start_worker(self, concurrency: int = 2, *, wait: bool = True) -> WorkerProcess:
        """Start one extraction worker; wait until it is ready unless told not to."""
        log = self.folder / f"worker-{len(self.workers)}.log"
        worker = WorkerProcess("extraction", concurrency, self.env, log)
        self.workers.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    def stop(self) -> None:
        """Stop everything this platform started."""
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.stop()
        if self.api is not None:
            self.api.stop()
        self.engine.dispose()
        self.redis.stop()
        self.mariadb.stop()


@pytest.fixture(scope="module")
def mariadb_template(tmp_path_factory: pytest.TempPathFactory) -> MariaDBServer:
    """A migrated MariaDB data folder, stopped, that each test copies."""
    needed = ("mariadb-install-db", MARIADBD, REDIS_SERVER)
    missing = [name for name in needed if not shutil.which(name)]
    if missing:
        pytest.fail(f"fault tests need {missing}: ./qi2 test installs mariadb-server, redis-server")
    server = MariaDBServer(tmp_path_factory.mktemp("mariadb-template")).install().start()
    try:
        server.create_database()
    finally:
        server.stop()
    return server


@pytest.fixture
def fault_platform(
    mariadb_template: MariaDBServer, settings, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Platform]:
    """A private MariaDB + Redis for one test and the environment of its processes.

    The broker's visibility timeout is cut to seconds so a message whose ack was lost comes
    back during the test, and the orphan sweep runs every 2 s (production: visibility timeout
    longer than any task, sweep every 60 s; docs/architecture.md, "Faults").
    """
    mariadb = mariadb_template.copy(tmp_path / "mariadb").start()
    broker = RedisServer(tmp_path / "redis").start()
    albums = tmp_path / "albums"
    albums.mkdir()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": mariadb.url,
        "DB_POOL_SIZE": "5",
        "CELERY_BROKER_URL": broker.url(0),
        "CELERY_RESULT_BACKEND": broker.url(1),
        "SOCKET_MESSAGE_QUEUE": broker.url(2),
        "SOCKETIO_CHANNEL": f"qi2-fault-{request.node.name}"[:60],
        "CELERY_VISIBILITY_TIMEOUT": "15",
        "EXTRACTION_ORPHAN_SWEEP_SECONDS": "2",
        "IMAGE_SOURCE": "local",
        "LOCAL_ALBUMS_DIR": str(albums),
        "QI2_DATA_DIR": str(tmp_path / "data"),
        "KEYCLOAK_BASE_URL": settings.keycloak_base_url,
        "LOG_LEVEL": "INFO",
    }
    engine = sa.create_engine(mariadb.url, pool_pre_ping=True, pool_size=2)
    stack = Platform(tmp_path, mariadb, broker, env, engine)
    try:
        yield stack
    finally:
        stack.stop()
