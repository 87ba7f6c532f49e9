"""A worker checks its services at start-up: a refused password stops it at once, readably.

Real services only: a throwaway redis-server with `requirepass` on a port of our own, a
throwaway MariaDB user with a password on the machine's MariaDB, and real `celery worker`
processes that must exit non-zero within seconds (not retry the broker for ever).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from shared import preflight
from shared.config import Settings
from tests.support.faults import REDIS_SERVER, free_port
from tests.support.live import wait_until
from tests.support.mariadb import admin

ROOT = Path(__file__).resolve().parents[2]
REDIS_PASSWORD = "right-redis-" + uuid.uuid4().hex[:8]
DB_PASSWORD = "right-db-" + uuid.uuid4().hex[:8]
WRONG = "wrong-" + uuid.uuid4().hex[:8]
# A worker that fails its checks must be gone well within this (no broker retry loop).
EXIT_WITHIN = 45.0


@pytest.fixture(scope="module")
def locked_redis(tmp_path_factory) -> Iterator[int]:
    """A redis-server that requires a password; yields its port."""
    folder = tmp_path_factory.mktemp("redis-pw")
    port = free_port()
    process = subprocess.Popen(
        [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", str(folder), "--requirepass", REDIS_PASSWORD],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port, password=REDIS_PASSWORD, socket_connect_timeout=1)
    wait_until(lambda: _pings(client), 20, interval=0.1)
    client.close()
    yield port
    process.terminate()
    process.wait(timeout=10)


def _pings(client: redis.Redis) -> bool:
    """Tell whether the server answers a PING."""
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="module")
def db_user(engine: sa.Engine) -> Iterator[str]:
    """A MariaDB user with a password and every right on the test database; yields its name."""
    name = f"qi2w_{uuid.uuid4().hex[:8]}"
    database = engine.url.database
    admin(f"CREATE USER '{name}'@'%' IDENTIFIED BY '{DB_PASSWORD}'")
    admin(f"CREATE USER '{name}'@'localhost' IDENTIFIED BY '{DB_PASSWORD}'")
    for host in ("%", "localhost"):
        admin(f"GRANT ALL ON `{database}`.* TO '{name}'@'{host}'")
    yield name
    for host in ("%", "localhost"):
        admin(f"DROP USER IF EXISTS '{name}'@'{host}'")


def db_url(engine: sa.Engine, user: str, password: str, database: str | None = None) -> str:
    """Return a URL of the test MariaDB server with these credentials."""
    name = database or engine.url.database
    return f"mysql+pymysql://{user}:{password}@127.0.0.1:3306/{name}?charset=utf8mb4"


def test_redis_wrong_password_is_refused_readably(locked_redis):
    with pytest.raises(preflight.CheckFailed) as failed:
        preflight.check_redis(f"redis://:{WRONG}@127.0.0.1:{locked_redis}/0")
    message = str(failed.value)
    assert "refused the credentials" in message and f":{locked_redis}/0" in message
    assert WRONG not in message and "***" in message
    assert not isinstance(failed.value, preflight.Unreachable)  # no retry of a refusal


def test_redis_without_password_is_refused_and_right_password_passes(locked_redis):
    with pytest.raises(preflight.CheckFailed, match="refused the credentials"):
        preflight.check_redis(f"redis://127.0.0.1:{locked_redis}/0")
    preflight.check_redis(f"redis://:{REDIS_PASSWORD}@127.0.0.1:{locked_redis}/0")


def test_redis_nobody_listening_is_unreachable():
    with pytest.raises(preflight.Unreachable, match="unreachable"):
        preflight.check_redis(f"redis://127.0.0.1:{free_port()}/0")


def test_database_wrong_password_is_refused_readably(engine, db_user):
    with pytest.raises(preflight.CheckFailed) as failed:
        preflight.check_database(db_url(engine, db_user, WRONG))
    message = str(failed.value)
    assert "refused the connection" in message and "Access denied" in message
    assert WRONG not in message and DB_PASSWORD not in message
    assert not isinstance(failed.value, preflight.Unreachable)


def test_database_at_head_passes_and_unmigrated_is_named(engine, db_user):
    preflight.check_database(db_url(engine, db_user, DB_PASSWORD))  # the test DB is at head
    empty = f"qi2_empty_{uuid.uuid4().hex[:8]}"
    admin(f"CREATE DATABASE {empty}")
    try:
        with pytest.raises(preflight.CheckFailed, match=r"has no schema.*db-upgrade"):
            preflight.check_database(db_url(engine, "root", "", empty).replace("root:@", "root@"))
        admin(f"CREATE TABLE {empty}.alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        admin(f"INSERT INTO {empty}.alembic_version VALUES ('0001_initial')")
        with pytest.raises(preflight.CheckFailed, match="at schema revision 0001_initial"):
            preflight.check_database(db_url(engine, "root", "", empty).replace("root:@", "root@"))
    finally:
        admin(f"DROP DATABASE IF EXISTS {empty}")


def test_missing_local_album_folder_is_named(tmp_path):
    missing = tmp_path / "not-mounted"
    settings = Settings(IMAGE_SOURCE="local", LOCAL_ALBUMS_DIR=str(missing))
    with pytest.raises(preflight.CheckFailed, match=r"album folder .*not-mounted.* does not exist"):
        preflight.check_albums_folder(settings)
    missing.mkdir()
    preflight.check_albums_folder(settings)
    preflight.check_albums_folder(Settings(IMAGE_SOURCE="kheops", LOCAL_ALBUMS_DIR=str(tmp_path)))


def worker_command(queue: str = "extraction") -> list[str]:
    """Return the command line of a real worker of one queue."""
    return [str(Path(sys.executable).parent / "celery"), "-A", "workers.celery_app", "worker",
            "-Q", queue, "-c", "1", "-n", f"check-{uuid.uuid4().hex[:6]}@%h",
            "--without-mingle", "--without-gossip", "-l", "INFO"]  # fmt: skip


def run_worker(tmp_path: Path, **env: str) -> tuple[int, str, float]:
    """Start a real extraction worker; return its exit status, output and seconds to exit."""
    full = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    started = time.monotonic()
    process = subprocess.run(
        worker_command(), cwd=ROOT, env=full, capture_output=True, text=True,
        timeout=EXIT_WITHIN * 2,
    )  # fmt: skip
    return process.returncode, process.stdout + process.stderr, time.monotonic() - started


def test_worker_with_wrong_redis_password_exits_at_start(tmp_path, locked_redis, settings):
    url = f"redis://:{WRONG}@127.0.0.1:{locked_redis}"
    code, output, seconds = run_worker(
        tmp_path,
        CELERY_BROKER_URL=f"{url}/0",
        CELERY_RESULT_BACKEND=f"{url}/1",
        SOCKET_MESSAGE_QUEUE=f"{url}/2",
        LOCAL_ALBUMS_DIR=str(tmp_path),
    )
    assert code == 3 and seconds < EXIT_WITHIN, output
    assert "worker start-up check failed: Redis at redis://:***@127.0.0.1" in output
    assert "refused the credentials" in output
    assert WRONG not in output
    assert "ready." not in output


def test_worker_with_wrong_database_password_exits_at_start(tmp_path, engine, db_user, settings):
    code, output, seconds = run_worker(
        tmp_path, DATABASE_URL=db_url(engine, db_user, WRONG), LOCAL_ALBUMS_DIR=str(tmp_path)
    )
    assert code == 3 and seconds < EXIT_WITHIN, output
    assert "worker start-up check failed: the database at mysql+pymysql://" in output
    assert "Access denied" in output
    assert WRONG not in output
    assert "ready." not in output


def test_worker_without_its_album_folder_exits_at_start(tmp_path, settings):
    code, output, _ = run_worker(
        tmp_path, IMAGE_SOURCE="local", LOCAL_ALBUMS_DIR=str(tmp_path / "absent")
    )
    assert code == 3, output
    assert "album folder" in output and "absent" in output


def test_a_training_worker_needs_no_album_folder(tmp_path, settings):
    log = tmp_path / "training.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "IMAGE_SOURCE": "local"}
    env["LOCAL_ALBUMS_DIR"] = str(tmp_path / "absent")
    with log.open("wb") as out:
        process = subprocess.Popen(
            worker_command("training"), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: b" ready." in log.read_bytes() or process.poll() is not None, 90)
        assert process.poll() is None, log.read_text()
    finally:
        process.terminate()
        process.wait(timeout=30)
