"""Socket.IO: authenticated connections, private rooms, events published through Redis.

The clients talk to the Socket.IO service (its own process, webapp/socket_service.py) through
the one origin that `live_url` presents, as the frontend does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import socketio

from shared import events
from tests.support.live import serve_in_thread, start_socket_service


class Listener:
    """A real Socket.IO client that records the events it receives."""

    def __init__(self) -> None:
        self.client = socketio.Client(reconnection=False)
        self.received: list[tuple[str, dict]] = []
        for name in (events.FEATURE_STATUS, events.EXTRACTION_STATUS, events.TRAINING_STATUS):
            self.client.on(name, self._recorder(name))

    def _recorder(self, name: str):
        return lambda payload: self.received.append((name, payload))

    def connect(self, url: str, **kwargs) -> None:
        self.client.connect(url, wait_timeout=5, **kwargs)

    def close(self) -> None:
        if self.client.connected:
            self.client.disconnect()


def wait_for(predicate, timeout: float = 5.0) -> bool:
    """Poll until the predicate holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture(scope="module")
def legacy_url(app, engine, tmp_path_factory) -> Iterator[str]:
    """A Socket.IO service started with SOCKETIO_LEGACY_ANONYMOUS=true."""
    api_url, stop_api = serve_in_thread(app)
    log = tmp_path_factory.mktemp("legacy") / "socket-service.log"
    url, service = start_socket_service(log, api_url, SOCKETIO_LEGACY_ANONYMOUS="true")
    yield url
    service.stop()
    stop_api()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_events_reach_only_the_owner(live_url, auth, transport):
    alice, bob = Listener(), Listener()
    try:
        alice.connect(live_url, auth={"token": auth.token("alice")}, transports=[transport])
        # The token may also come as a query parameter.
        bob.connect(f"{live_url}?token={auth.token('bob')}", transports=[transport])
        time.sleep(0.3)  # let the server process the room joins
        events.publish(events.TRAINING_STATUS, {"training-id": "train_1"}, user_id="user-alice")
        events.publish(events.FEATURE_STATUS, {"status": "PROGRESS"}, user_id="user-bob")
        assert wait_for(lambda: len(alice.received) == 1 and len(bob.received) == 1)
        time.sleep(0.3)
        assert alice.received == [(events.TRAINING_STATUS, {"training-id": "train_1"})]
        assert bob.received == [(events.FEATURE_STATUS, {"status": "PROGRESS"})]
    finally:
        alice.close()
        bob.close()


def test_connection_without_token_is_refused(live_url):
    listener = Listener()
    with pytest.raises(socketio.exceptions.ConnectionError):
        listener.connect(live_url, transports=["polling"])
    assert not listener.client.connected


def test_connection_with_bad_token_is_refused(live_url, issuer):
    claims = issuer.claims_for(issuer.users["bob"], ttl=-100)
    listener = Listener()
    with pytest.raises(socketio.exceptions.ConnectionError):
        listener.connect(live_url, auth={"token": issuer.sign(claims)}, transports=["polling"])


def test_forged_token_is_refused(live_url, auth):
    listener = Listener()
    token = auth.token("alice")
    forged = token[:-8] + ("A" * 8 if not token.endswith("A" * 8) else "B" * 8)
    with pytest.raises(socketio.exceptions.ConnectionError):
        listener.connect(live_url, auth={"token": forged}, transports=["websocket"])


def test_rest_paths_pass_through_the_front(live_url, auth):
    assert httpx.get(f"{live_url}/", timeout=10).status_code == 200
    refused = httpx.get(f"{live_url}/feature-presets", timeout=10)
    assert refused.status_code == 401 and "error" in refused.json()
    answered = httpx.get(f"{live_url}/feature-presets", headers=auth.headers(), timeout=10)
    assert answered.status_code == 200 and isinstance(answered.json(), list)


def test_legacy_mode_accepts_anonymous_clients(legacy_url, settings):
    settings.socketio_legacy_anonymous = True  # publishers (workers) also copy to the legacy room
    anonymous = Listener()
    try:
        anonymous.connect(legacy_url, transports=["polling"])
        time.sleep(0.3)
        events.publish(events.EXTRACTION_STATUS, {"feature_extraction_id": 1}, user_id="user-x")
        assert wait_for(lambda: len(anonymous.received) == 1)
    finally:
        settings.socketio_legacy_anonymous = False
        anonymous.close()
