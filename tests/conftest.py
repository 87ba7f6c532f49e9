"""Test services: the machine's real MariaDB and Redis, and a local Keycloak-style issuer.

One throwaway MariaDB database per run (built by the Alembic migrations), one rollback per test,
separate Redis DB numbers, and an OIDC issuer on loopback that mints tokens for test users.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

pytest_plugins = [
    "tests.support.live",
    "tests.support.fixtures",
    "tests.support.faults",
    "tests.support.broker",
]

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
REDIS_BASE = "redis://127.0.0.1:6379"
RUN_ID = uuid.uuid4().hex[:8]
TEST_DB = f"qi2_test_{RUN_ID}"
# Redis DB numbers of the broker, results and Socket.IO queue. QI2_TEST_REDIS_DB=N puts all three
# on DB N, so several test runs on one machine never consume each other's Celery tasks (the
# Socket.IO channel is already per run: pub/sub ignores DB numbers).
_ONE_DB = os.environ.get("QI2_TEST_REDIS_DB")
BROKER_DB, RESULT_DB, SOCKET_DB = (int(_ONE_DB),) * 3 if _ONE_DB else (10, 11, 12)

# The environment is the settings' only input, so tests configure the app through it, once,
# before anything reads the settings.
os.environ.update(
    {
        "DATABASE_URL": f"mysql+pymysql://root@127.0.0.1:3306/{TEST_DB}?charset=utf8mb4",
        "CELERY_BROKER_URL": f"{REDIS_BASE}/{BROKER_DB}",
        "CELERY_RESULT_BACKEND": f"{REDIS_BASE}/{RESULT_DB}",
        "SOCKET_MESSAGE_QUEUE": f"{REDIS_BASE}/{SOCKET_DB}",
        "SOCKETIO_CHANNEL": f"qi2-test-{RUN_ID}",
        "QI2_DATA_DIR": f"/tmp/qi2-test-{RUN_ID}",
        "KEYCLOAK_REALM_NAME": "QuantImage-v2",
        "KEYCLOAK_QUANTIMAGE2_FRONTEND_CLIENT_ID": "quantimage2-frontend",
        "LOG_LEVEL": "WARNING",
        # Every response is checked against its declared schema in tests (off in production).
        "QI2_VALIDATE_RESPONSES": "true",
    }
)

from devkit.oidc_issuer import LocalIssuer, User  # noqa: E402
from shared import bootstrap, runtime  # noqa: E402
from shared.config import Settings, get_settings  # noqa: E402
from shared.db import migrate  # noqa: E402
from shared.db import session as db_session  # noqa: E402
from tests.support import sql_log  # noqa: E402
from tests.support.mariadb import admin  # noqa: E402

# MySQL 8.4's default sql_mode (the compose default server), stricter than MariaDB 10.11's: a
# GROUP BY that MySQL refuses fails here too (docs/decisions/0004-mysql-vs-mariadb.md).
MYSQL_84_SQL_MODE = (
    "ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,"
    "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"
)


def _mysql_84_sql_mode(dbapi_connection: object, _record: object) -> None:
    """Give each new test connection MySQL 8.4's default sql_mode."""
    with dbapi_connection.cursor() as cursor:  # type: ignore[attr-defined]
        cursor.execute(f"SET SESSION sql_mode = '{MYSQL_84_SQL_MODE}'")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the modules that set RUN_LAST = True after everything else (the SQL dialect audit)."""
    items.sort(key=lambda item: bool(getattr(getattr(item, "module", None), "RUN_LAST", False)))


@pytest.fixture(scope="session")
def issuer() -> Iterator[LocalIssuer]:
    """A Keycloak-style issuer on loopback with an admin (alice) and a researcher (bob)."""
    local = LocalIssuer(
        users=[
            User(
                "alice",
                "alice-pw",
                sub="user-alice",
                email="alice@example.org",
                client_roles=["admin"],
            ),
            User("bob", "bob-pw", sub="user-bob", email="bob@example.org"),
            User("carol", "carol-pw", sub="user-carol", realm_roles=["admin"]),
        ]
    )
    base_url = local.start()
    os.environ["KEYCLOAK_BASE_URL"] = base_url
    get_settings.cache_clear()
    yield local
    local.stop()


@pytest.fixture(scope="session")
def settings(issuer: LocalIssuer) -> Settings:
    """The settings every test runs with."""
    return get_settings()


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[sa.Engine]:
    """A fresh MariaDB database for this run, built by `alembic upgrade head`.

    The test process's runtime (sessions, task client, publisher) is built from the settings
    on this engine and installed, as a worker does at start-up; the app shares it.
    """
    admin(f"CREATE DATABASE {TEST_DB} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    try:
        migrate.upgrade(settings.sqlalchemy_url)
        eng = db_session.make_engine(settings.sqlalchemy_url, pool_size=settings.db_pool_size)
        sa.event.listen(eng, "connect", _mysql_84_sql_mode)
        sql_log.attach(eng)
        runtime.install(bootstrap.build(settings, engine=eng))
        yield eng
        runtime.install(None)
        eng.dispose()
    finally:
        admin(f"DROP DATABASE IF EXISTS {TEST_DB}")


@pytest.fixture
def db(engine: sa.Engine) -> Iterator[so.Session]:
    """A session whose work is rolled back after the test (routes' commits become savepoints)."""
    connection = engine.connect()
    outer = connection.begin()
    db_session.configure(
        engine=connection,  # type: ignore[arg-type]
        join_transaction_mode="create_savepoint",
    )
    session = db_session.new_session()
    try:
        yield session
    finally:
        session.close()
        outer.rollback()
        connection.close()
        db_session.configure(engine=engine)


@pytest.fixture(scope="session")
def app(settings: Settings, engine: sa.Engine):
    """The Flask app, built once."""
    from webapp import create_app

    application = create_app(settings, runtime=runtime.current())
    application.config["TESTING"] = True
    application.extensions["qi2_verifier"].min_refresh_interval = 0
    return application


@pytest.fixture
def client(app, db):
    """A test client whose requests share the test's rolled-back transaction."""
    return app.test_client()


class Auth:
    """Mint Authorization headers for the test users (flaskr's AuthActions idea)."""

    def __init__(self, issuer: LocalIssuer) -> None:
        self.issuer = issuer

    def token(self, username: str = "bob", **overrides: object) -> str:
        """Return a valid access token for a user."""
        return self.issuer.mint(username, **overrides)

    def headers(self, username: str = "bob", **overrides: object) -> dict[str, str]:
        """Return the Authorization header for a user."""
        return {"Authorization": f"Bearer {self.token(username, **overrides)}"}


@pytest.fixture(scope="session")
def auth(issuer: LocalIssuer) -> Auth:
    """Token helper."""
    return Auth(issuer)
