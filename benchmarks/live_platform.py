"""A live platform on loopback for the prediction benchmarks (predict_load.py, predict_queue.py).

Its own MariaDB database (migrated, dropped at the end), one Redis DB (flushed at start and
end), the local issuer in this process, and as subprocesses the commands of webapp/servers.py
(the gunicorn API behind the Socket.IO front) and real Celery workers of this repository. Seeds
benchmarks/seeding.py's 300-patient extraction and outcome, and trains a small model through
the API, so that predictions have something to apply.

`source` runs the API and the workers from another checkout of this repository instead (its
migrations build the database), to measure an older design with the same harness.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from seeding import ALBUM, N_PATIENTS, seed  # noqa: E402  (benchmarks/seeding.py)

VENV_BIN = Path(sys.executable).parent
OWNER, OWNER_SUB = "owner", "user-owner"
ENDED = ("SUCCESS", "FAILURE")


def free_port() -> int:
    """Return a free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_average() -> str:
    """Return the 1-minute load average, for the figures' context."""
    return f"{os.getloadavg()[0]:.1f}"


@dataclass
class Platform:
    """The services of one benchmark run; `url` is the one origin (the Socket.IO front)."""

    env: dict[str, str]
    work: Path
    database: str
    engine: Any
    issuer: Any
    source: Path = ROOT  # the checkout whose code the API and the workers run
    extraction_id: int = 0
    category_id: int = 0
    url: str = ""
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        """Start a child with its output in the run's log folder."""
        log = (self.work / "logs" / f"{name}.log").open("ab")
        env = {**self.env, "PYTHONPATH": str(self.source)}
        process = subprocess.Popen(
            command, cwd=self.source, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        self.processes[name] = process
        return process

    def start_web(self) -> None:
        """Start the gunicorn API and the Socket.IO front that forwards REST to it."""
        from webapp.servers import api_command, socket_command

        api_port, front_port = free_port(), free_port()
        self.spawn("api", api_command("127.0.0.1", api_port))
        front = socket_command("127.0.0.1", front_port, f"http://127.0.0.1:{api_port}")
        self.spawn("sockets", front)
        self.url = f"http://127.0.0.1:{front_port}"
        wait_http(f"http://127.0.0.1:{api_port}/health/ready")
        wait_http(f"{self.url}/health/sockets")
        self.headers = {"Authorization": f"Bearer {self.issuer.mint(OWNER, ttl=3600)}"}

    def start_worker(
        self, name: str, queues: str, *, pool: str = "prefork", concurrency: int = 1
    ) -> subprocess.Popen:
        """Start a Celery worker of this repository on some queues; wait until it is ready."""
        command = [str(VENV_BIN / "celery"), "-A", "workers.celery_app", "worker"]
        command += ["-Q", queues, "-P", pool, "-c", str(concurrency)]
        command += ["-n", f"{name}-{uuid.uuid4().hex[:6]}@%h", "--without-mingle"]
        command += ["--without-gossip", "-l", "INFO"]
        process = self.spawn(name, command)
        log = self.work / "logs" / f"{name}.log"
        deadline = time.monotonic() + 120
        while b" ready." not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        return process

    def stop(self, name: str) -> None:
        """Stop one child (SIGCONT first, in case it was stopped)."""
        process = self.processes.pop(name)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def train(self, **body: Any) -> int:
        """Send M2 for the seeded extraction; return the training run's row id."""
        request = {
            "extraction-id": self.extraction_id,
            "label-category-id": self.category_id,
            "data-splitting-type": "fulldataset",
            **body,
        }
        response = httpx.post(
            f"{self.url}/models/{ALBUM}", json=request, headers=self.headers, timeout=60
        )
        response.raise_for_status()
        training_id = response.json()["training-id"]
        return int(training_id.rsplit("_", 1)[1])

    def row(self, table: str, row_id: int) -> Any:
        """Read a training_run or prediction row."""
        import sqlalchemy as sa

        with self.engine.connect() as connection:
            return connection.execute(
                sa.text(f"SELECT * FROM {table} WHERE id = :id"), {"id": row_id}
            ).one()

    def wait_row(self, table: str, row_id: int, statuses: tuple[str, ...], timeout: float) -> Any:
        """Poll a row until its status is one of `statuses`; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.row(table, row_id)
            if row.status in statuses:
                return row
            time.sleep(0.1)
        raise TimeoutError(f"{table} {row_id} not in {statuses} within {timeout} s")

    def small_model(self) -> int:
        """Train a logistic regression on 200 of the 300 patients (100 left for the test);
        return the model id once stored."""
        patients = [f"P{p:04d}" for p in range(N_PATIENTS)]
        run_id = self.train(
            **{
                "data-splitting-type": "traintest",
                "training-patients": patients[:200],
                "test-patients": patients[200:],
                "algorithms": ["LogisticRegression"],
            }
        )
        row = self.wait_row("training_run", run_id, ENDED, 600)
        if row.status != "SUCCESS":
            raise RuntimeError(f"the small model failed: {row.error}")
        return int(row.model_id)

    def predict(
        self, model_id: int, client: httpx.Client | None = None, timeout: float = 60.0
    ) -> httpx.Response:
        """POST predict on the seeded extraction."""
        return (client or httpx).post(
            f"{self.url}/models/{model_id}/predict",
            json={"extraction-id": self.extraction_id},
            headers=self.headers,
            timeout=timeout,
        )


def wait_http(url: str, timeout: float = 90.0) -> None:
    """Wait until a URL answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=3).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer")


def open_platform(redis_db: int, name: str, source: Path = ROOT) -> Platform:
    """Create the database, seed it, configure this process; the web tier is not started yet."""
    import redis
    import sqlalchemy as sa

    from devkit.oidc_issuer import LocalIssuer, User
    from shared.db import migrate
    from tests.support.mariadb import admin

    database = f"qi2_bench_{name}_{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix=f"qi2-{name}-"))
    (work / "logs").mkdir()
    redis_url = f"redis://127.0.0.1:6379/{redis_db}"
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the issuer's access log
    issuer = LocalIssuer(users=[User(OWNER, "pw", sub=OWNER_SUB)])
    env = {
        **os.environ,
        "DATABASE_URL": f"mysql+pymysql://root@127.0.0.1:3306/{database}?charset=utf8mb4",
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "SOCKET_MESSAGE_QUEUE": redis_url,
        "SOCKETIO_CHANNEL": f"qi2-bench-{uuid.uuid4().hex[:8]}",
        "KEYCLOAK_BASE_URL": issuer.start(),
        "QI2_DATA_DIR": str(work / "data"),
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    os.environ.update(env)
    redis.Redis.from_url(redis_url).flushdb()
    admin(f"CREATE DATABASE {database} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    if source == ROOT:
        migrate.upgrade(env["DATABASE_URL"])
    else:  # the other checkout's own migrations
        upgrade = f"from shared.db import migrate; migrate.upgrade({env['DATABASE_URL']!r})"
        subprocess.run(
            [sys.executable, "-c", upgrade],
            cwd=source,
            env={**env, "PYTHONPATH": str(source)},
            check=True,
        )
    engine = sa.create_engine(env["DATABASE_URL"], pool_pre_ping=True)
    platform = Platform(env, work, database, engine, issuer, source=source)
    platform.extraction_id = seed(engine, OWNER_SUB)
    with engine.begin() as connection:
        platform.category_id = connection.execute(
            sa.text("SELECT id FROM label_category WHERE user_id = :u"), {"u": OWNER_SUB}
        ).scalar_one()
        connection.execute(
            sa.text(
                "INSERT INTO album_outcome (created_at, updated_at, user_id, album_id, "
                "outcome_id) VALUES (NOW(6), NOW(6), :u, :a, :c)"
            ),
            {"u": OWNER_SUB, "a": ALBUM, "c": platform.category_id},
        )
    return platform


def close_platform(platform: Platform, keep_logs: bool) -> None:
    """Stop every child, drop the database, flush the Redis DB, remove the work folder."""
    import redis

    from tests.support.mariadb import admin

    for name in list(platform.processes):
        platform.stop(name)
    platform.engine.dispose()
    platform.issuer.stop()
    admin(f"DROP DATABASE IF EXISTS {platform.database}")
    redis.Redis.from_url(platform.env["CELERY_BROKER_URL"]).flushdb()
    if keep_logs:
        print(f"logs kept in {platform.work / 'logs'}")
    else:
        shutil.rmtree(platform.work, ignore_errors=True)
