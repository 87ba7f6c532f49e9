"""Start-up checks of a worker: the services it needs answer, with the credentials it was given.

A worker on another machine meets a wrong Redis password, a wrong database password, a database
not migrated yet or a missing album folder only when its first task runs, and Celery's broker
retry would otherwise loop on a refused password for ever. Checked once at start-up instead,
each problem stops the worker with one readable line (never a password) and a non-zero exit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import redis
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from shared.config import Settings
from shared.db import migrate
from shared.imaging.factory import local_albums_root

# Seconds each connection attempt may wait for an answer: a worker must fail fast, not hang.
CONNECT_TIMEOUT = 5.0
# Seconds a service that does not answer at all is waited for (it may be starting, e.g. in
# compose); a refused password or an old schema fails at once.
UNREACHABLE_WAIT = 60.0


class CheckFailed(Exception):
    """One start-up check failed; the message says which service and why, without secrets."""


class Unreachable(CheckFailed):
    """A service did not answer (it may still be starting): worth another try."""


def retry_unreachable(check: Callable[[], None], wait_seconds: float) -> None:
    """Run a check, again every 2 s while its service is unreachable, for up to wait_seconds."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return check()
        except Unreachable:
            if time.monotonic() >= deadline:
                raise
            time.sleep(2.0)


def redacted_redis_url(url: str) -> str:
    """Return a Redis URL with its password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def redis_urls(settings: Settings) -> list[str]:
    """Return the distinct Redis URLs a worker uses: broker, results, Socket.IO events."""
    urls = [settings.celery_broker_url, settings.celery_result_backend]
    urls.append(settings.socket_message_queue)
    return [url for url in dict.fromkeys(urls) if url.startswith(("redis://", "rediss://"))]


def check_redis(url: str) -> None:
    """Ping one Redis with the URL's credentials."""
    where = redacted_redis_url(url)
    client = redis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=CONNECT_TIMEOUT
    )
    try:
        client.ping()
    except (redis.AuthenticationError, redis.ResponseError) as exc:
        # A wrong password, or none where the server wants one (NOAUTH, or HELLO refused).
        raise CheckFailed(f"Redis at {where} refused the credentials ({exc})") from None
    except redis.RedisError as exc:
        raise Unreachable(f"Redis at {where} is unreachable ({exc})") from None
    finally:
        client.close()


def check_database(url: str) -> None:
    """Connect with the given credentials and require the schema at the Alembic head."""
    where = make_url(url).render_as_string(hide_password=True)
    args = {"connect_timeout": int(CONNECT_TIMEOUT)} if url.startswith("mysql") else {}
    engine = sa.create_engine(url, poolclass=NullPool, connect_args=args)
    try:
        with engine.connect() as connection:
            version = _schema_version(connection)
    except sa.exc.DBAPIError as exc:
        raise _database_error(where, exc) from None
    finally:
        engine.dispose()
    head = ", ".join(migrate.heads())
    if version is None:
        raise CheckFailed(
            f"the database at {where} has no schema; run `quantimage2 db-upgrade` first"
        )
    if version != head:
        raise CheckFailed(
            f"the database at {where} is at schema revision {version}, this worker needs "
            f"{head}; run `quantimage2 db-upgrade` (or deploy the matching worker version)"
        )


# MySQL client errors of a server that never answered (as opposed to one that said no).
MYSQL_UNREACHABLE = {2002, 2003, 2005, 2006, 2013}


def _database_error(where: str, exc: sa.exc.DBAPIError) -> CheckFailed:
    """Turn a driver error into a readable check failure (the drivers never echo passwords)."""
    args = exc.orig.args if exc.orig is not None else ()
    reason = args[-1] if args else str(exc)
    if args and args[0] in MYSQL_UNREACHABLE:
        return Unreachable(f"the database at {where} is unreachable ({reason})")
    return CheckFailed(f"the database at {where} refused the connection ({reason})")


def _schema_version(connection: sa.Connection) -> str | None:
    """Return the database's Alembic revision(s), None without an alembic_version table."""
    if not sa.inspect(connection).has_table("alembic_version"):
        return None
    rows = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars()
    return ", ".join(sorted(rows)) or None


def check_albums_folder(settings: Settings) -> None:
    """With the local-folder image source, require its folder on this machine."""
    if settings.image_source != "local":
        return
    root = local_albums_root(settings)
    if not root.is_dir():
        raise CheckFailed(
            f"IMAGE_SOURCE=local but the album folder {root} does not exist on this machine; "
            "every worker host needs the same folder (or use the Kheops or DICOMweb source)"
        )


def check_worker(
    settings: Settings, *, reads_images: bool = True, wait_seconds: float = UNREACHABLE_WAIT
) -> None:
    """Run every start-up check of a worker; raise CheckFailed at the first that fails.

    Only a worker that reads images (the extraction queue) needs the album folder.
    """
    for url in redis_urls(settings):
        retry_unreachable(lambda url=url: check_redis(url), wait_seconds)
    retry_unreachable(lambda: check_database(settings.sqlalchemy_url), wait_seconds)
    if reads_images:
        check_albums_folder(settings)
