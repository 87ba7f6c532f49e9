"""Two apps with different settings in one process (issue #14 section 2).

Each app builds its sessions, Celery client and event publisher from its own settings: requests
to one app write and read its own MariaDB database, and what it enqueues or publishes goes to
its own Redis database and Socket.IO channel, never to the other app's.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import redis
import sqlalchemy as sa

from shared import events, jobs
from shared.config import Settings
from shared.db import session as db_session
from shared.db.base import Base
from shared.navigation.models import NavigationEntry
from tests.conftest import BROKER_DB, REDIS_BASE, TEST_DB
from tests.support.mariadb import admin
from webapp import create_app

# The second app's broker: another Redis DB than the suite's. The test only creates and
# deletes its own uniquely named queue there, which no worker consumes.
OTHER_BROKER_DB = (BROKER_DB + 1) % 16


def url_of(database: str) -> str:
    """Return the MariaDB URL of one of this run's databases."""
    return f"mysql+pymysql://root@127.0.0.1:3306/{database}?charset=utf8mb4"


@pytest.fixture(scope="module")
def two_settings(settings: Settings) -> Iterator[list[Settings]]:
    """Two settings that differ in database, broker and Socket.IO channel; their schemas."""
    made: list[Settings] = []
    try:
        for name, broker_db in (("a", BROKER_DB), ("b", OTHER_BROKER_DB)):
            database = f"{TEST_DB}_{name}"
            admin(f"CREATE DATABASE {database} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            one = settings.model_copy(
                update={
                    "database_url": url_of(database),
                    "celery_broker_url": f"{REDIS_BASE}/{broker_db}",
                    "socketio_channel": f"{settings.socketio_channel}-{name}",
                }
            )
            made.append(one)
            engine = db_session.make_engine(one.sqlalchemy_url, pool_size=1)
            Base.metadata.create_all(engine)
            engine.dispose()
        yield made
    finally:
        for name in "ab"[: len(made)]:
            admin(f"DROP DATABASE IF EXISTS {TEST_DB}_{name}")


@pytest.fixture(scope="module")
def two_apps(two_settings):
    """One app per settings, both built by `create_app(settings)` alone."""
    apps = [create_app(one) for one in two_settings]
    yield apps
    for app in apps:
        runtime = app.extensions["qi2_runtime"]
        runtime.sessions.kw["bind"].dispose()


def stored_paths(app) -> list[str]:
    """Read the navigation paths through the app's own sessions (shared code's way)."""
    with app.app_context(), db_session.session_scope() as session:
        return list(session.scalars(sa.select(NavigationEntry.path).order_by(NavigationEntry.id)))


def test_each_app_writes_and_reads_its_own_database(two_apps, auth):
    app_a, app_b = two_apps
    for app, path in ((app_a, "/only-in-a"), (app_b, "/only-in-b")):
        response = app.test_client().post(
            "/navigation", json={"path": path}, headers=auth.headers()
        )
        assert response.status_code == 200, response.json
    assert stored_paths(app_a) == ["/only-in-a"]
    assert stored_paths(app_b) == ["/only-in-b"]
    for app, database in zip(two_apps, ("a", "b"), strict=True):
        bind = app.extensions["qi2_runtime"].sessions.kw["bind"]
        assert bind.url.database == f"{TEST_DB}_{database}"


def test_each_app_sends_to_its_own_broker(two_apps, two_settings):
    queue = f"two-apps-{uuid.uuid4().hex[:8]}"  # nobody consumes it
    brokers = [redis.Redis.from_url(one.celery_broker_url) for one in two_settings]
    try:
        sent = []
        for app in two_apps:
            with app.app_context():  # what shared code sees inside a request of this app
                assert jobs.client() is app.extensions["qi2_runtime"].celery
                sent.append(jobs.client().send_task("two-apps.probe", queue=queue).id)
        held = [[_task_id(raw) for raw in broker.lrange(queue, 0, -1)] for broker in brokers]
        assert held == [[sent[0]], [sent[1]]]
    finally:
        for broker in brokers:
            broker.delete(queue)
            broker.close()


def _task_id(raw: bytes) -> str:
    """Return the Celery id of a raw broker message."""
    return json.loads(raw)["headers"]["id"]


def test_each_app_publishes_on_its_own_channel(two_apps, two_settings):
    listener = redis.Redis.from_url(two_settings[0].socket_message_queue).pubsub()
    channels = [one.socketio_channel for one in two_settings]
    listener.subscribe(*channels)
    try:
        for _ in channels:  # the subscribe confirmations
            listener.get_message(timeout=5)
        for app, user in zip(two_apps, ("user-a", "user-b"), strict=True):
            with app.app_context():
                events.publish(events.TRAINING_STATUS, {"user": user}, user_id=user)
        received: dict[str, list[bytes]] = {}
        while (message := listener.get_message(timeout=2)) is not None:
            if message["type"] == "message":
                received.setdefault(message["channel"].decode(), []).append(message["data"])
        assert sorted(received) == sorted(channels)
        (to_a,), (to_b,) = received[channels[0]], received[channels[1]]
        assert b"user-a" in to_a and b"user-b" not in to_a
        assert b"user-b" in to_b and b"user-a" not in to_b
    finally:
        listener.close()
