"""Socket.IO: authenticated connections, private rooms, events published through Redis."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest
import socketio
from werkzeug.serving import make_server

from shared import events


@pytest.fixture(scope="module")
def live_url(app) -> Iterator[str]:
    """Serve the app (REST + Socket.IO) on a loopback port for real clients."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


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


def test_legacy_mode_accepts_anonymous_clients(app, live_url, auth):
    settings = app.config["SETTINGS"]
    settings.socketio_legacy_anonymous = True
    anonymous = Listener()
    try:
        anonymous.connect(live_url, transports=["polling"])
        time.sleep(0.3)
        events.publish(events.EXTRACTION_STATUS, {"feature_extraction_id": 1}, user_id="user-x")
        assert wait_for(lambda: len(anonymous.received) == 1)
    finally:
        settings.socketio_legacy_anonymous = False
        anonymous.close()
