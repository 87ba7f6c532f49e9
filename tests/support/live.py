"""Live services for end-to-end tests: the app on a real port, real Celery workers, committed data.

`live_url` is one origin, as the frontend sees it: the Socket.IO service (its own process, as in
production) serves /socket.io/ and forwards every other path to the Flask app, which werkzeug
serves in this process so that tests share its database configuration.

End-to-end tests cannot use the per-test rollback: workers are other processes and only see
committed rows. They use `live_db`, which commits for real and empties every table afterwards.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
import socketio
import sqlalchemy as sa
from werkzeug.serving import make_server

from shared import events
from shared.db import session as db_session
from shared.db.all_models import Base
from webapp.servers import api_command, socket_command

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def empty_all_tables(engine: sa.Engine) -> None:
    """Delete every row of every table (children first)."""
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())


@pytest.fixture(scope="module")
def live_db(engine: sa.Engine) -> Iterator[sa.Engine]:
    """Sessions that really commit (visible to worker processes); tables emptied afterwards."""
    db_session.configure(engine=engine)
    empty_all_tables(engine)
    yield engine
    empty_all_tables(engine)


def free_port() -> int:
    """Return a loopback port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServedProcess:
    """A server subprocess of this project (gunicorn API or Socket.IO service) on loopback."""

    def __init__(self, command: list[str], log: Path, ready_path: str, **env: str) -> None:
        self.log = log
        self.handle = log.open("wb")
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            stdout=self.handle,
            stderr=subprocess.STDOUT,
        )
        self.ready_path = ready_path

    def wait_ready(self, url: str, timeout: float = 60.0) -> None:
        """Wait until the ready path answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(url + self.ready_path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{url} did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        """SIGTERM, then kill if it hangs."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.handle.close()


def start_socket_service(
    log: Path, rest_upstream: str | None, **env: str
) -> tuple[str, ServedProcess]:
    """Start the Socket.IO service on a free port; return its URL and the process."""
    port = free_port()
    command = socket_command("127.0.0.1", port, rest_upstream)
    service = ServedProcess(command, log, "/health/sockets", **env)
    url = f"http://127.0.0.1:{port}"
    service.wait_ready(url)
    return url, service


def serve_in_thread(app) -> tuple[str, Callable[[], None]]:
    """Serve the Flask app with werkzeug in this process; return its URL and a stopper."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server.shutdown


@pytest.fixture(scope="module")
def live_url(app, live_db, tmp_path_factory) -> Iterator[str]:
    """One origin for REST + Socket.IO: the Socket.IO service in front of the Flask app."""
    api_url, stop_api = serve_in_thread(app)
    log = tmp_path_factory.mktemp("sockets") / "socket-service.log"
    url, service = start_socket_service(log, api_url)
    yield url
    service.stop()
    stop_api()


@dataclass(frozen=True)
class ServedShape:
    """The web tier as `./qi2 run` and the local/VM overlays serve it: the one origin (`url`,
    the Socket.IO front) forwarding to the API under gunicorn (`api_url`)."""

    url: str
    api_url: str


@pytest.fixture(scope="module")
def served_front(live_db, tmp_path_factory) -> Iterator[ServedShape]:
    """gunicorn (the API, as production runs it) behind the Socket.IO front, on loopback ports,
    sharing the test database (committed rows: `live_db`) and the test settings."""
    folder = tmp_path_factory.mktemp("served")
    api_port = free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    api = ServedProcess(api_command("127.0.0.1", api_port), folder / "api.log", "/")
    try:
        api.wait_ready(api_url)
        url, front = start_socket_service(folder / "front.log", api_url)
    except BaseException:
        api.stop()
        raise
    yield ServedShape(url=url, api_url=api_url)
    front.stop()
    api.stop()


class WorkerProcess:
    """A real `celery worker` subprocess of this project."""

    def __init__(
        self,
        queue: str,
        concurrency: int,
        env: dict[str, str],
        log: Path,
        pool: str = "prefork",
        name: str | None = None,
    ) -> None:
        self.log = log
        self.name = name or f"{queue}-{os.getpid()}-{time.monotonic_ns()}@%h"
        self.handle = log.open("wb")
        self.process = subprocess.Popen(
            [
                str(VENV_BIN / "celery"),
                "-A",
                "workers.celery_app",
                "worker",
                "-Q",
                queue,
                "-c",
                str(concurrency),
                "-P",
                pool,
                "-n",
                self.name,
                "--without-mingle",
                "--without-gossip",
                "-l",
                "INFO",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait for Celery's 'ready' line."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b"ready." in self.log.read_bytes():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"celery worker did not start:\n{self.log.read_text()[-3000:]}")

    def child_pids(self) -> list[int]:
        """Return the pool processes' pids."""
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True
        ).stdout
        return [int(pid) for pid in out.split()]

    def stop(self) -> None:
        """Warm shutdown, then kill if it hangs."""
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.handle.close()


@pytest.fixture(scope="module")
def start_worker(settings, tmp_path_factory) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory of real Celery workers sharing the test settings (stopped at module end)."""
    started: list[WorkerProcess] = []
    broker = redis.Redis.from_url(settings.celery_broker_url)
    broker.flushdb()

    def start(
        queue: str = "extraction",
        concurrency: int = 2,
        pool: str = "prefork",
        name: str | None = None,
        **env: str,
    ) -> WorkerProcess:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        # A worker of the local-folder source checks its album folder at start-up.
        albums = full_env.get("LOCAL_ALBUMS_DIR") or f"{full_env['QI2_DATA_DIR']}/albums"
        Path(albums).mkdir(parents=True, exist_ok=True)
        log = tmp_path_factory.mktemp("worker") / f"{queue}.log"
        worker = WorkerProcess(queue, concurrency, full_env, log, pool, name)
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.stop()
    broker.flushdb()
    broker.close()


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.3) -> object:
    """Poll until the predicate returns something truthy; fail after the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


class EventListener:
    """A real Socket.IO client (websocket) recording every event it receives."""

    def __init__(self, url: str, token: str) -> None:
        self.received: list[tuple[str, dict]] = []
        self.client = socketio.Client(reconnection=False)
        names = (
            events.FEATURE_STATUS,
            events.EXTRACTION_STATUS,
            events.TRAINING_STATUS,
            events.PREDICTION_STATUS,
        )
        for name in names:
            self.client.on(name, lambda payload, name=name: self.received.append((name, payload)))
        self.client.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=5)

    def of(self, event: str) -> list[dict]:
        """Return the payloads received for one event name."""
        return [payload for name, payload in self.received if name == event]

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()


def wait_extraction_ready(
    live_url: str, headers: dict[str, str], extraction_id: int, timeout: float
) -> dict:
    """Poll E9 until every study of the extraction ended; return the status."""

    def ready() -> dict | None:
        status = httpx.get(f"{live_url}/extractions/{extraction_id}/status", headers=headers)
        body = status.json()
        return body if body["ready"] else None

    return wait_until(ready, timeout, interval=0.5)  # type: ignore[return-value]
