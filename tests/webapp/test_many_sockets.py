"""Issue #8 §1: open Socket.IO clients must not take the REST API down.

The platform is served as in production: the REST API under the gunicorn command of
webapp/servers.py and the Socket.IO service in front of it (one origin). With the old design
(Socket.IO inside the API, gunicorn gthread with 50 threads) every WebSocket held a thread:
client 51 could not connect and `GET /` timed out. Here 80 clients stay connected while the
API answers, one more client connects, and events still reach only their owner's clients.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import socketio

from shared import events
from tests.support.live import ServedProcess, free_port, start_socket_service
from webapp.servers import API_THREADS, API_WORKERS, api_command

CLIENTS = 80  # more than the 50 threads of the old design
assert CLIENTS > API_WORKERS * API_THREADS


@pytest.fixture(scope="module")
def served(engine, issuer, tmp_path_factory) -> Iterator[tuple[str, str]]:
    """Start gunicorn (the API) and the Socket.IO front; return (front URL, API URL)."""
    logs = tmp_path_factory.mktemp("served")
    port = free_port()
    api = ServedProcess(api_command("127.0.0.1", port), logs / "api.log", "/health/ready")
    api_url = f"http://127.0.0.1:{port}"
    try:
        api.wait_ready(api_url)
        front_url, front = start_socket_service(logs / "sockets.log", api_url)
    except BaseException:
        api.stop()
        raise
    yield front_url, api_url
    front.stop()
    api.stop()


def connect(url: str, token: str, received: list) -> socketio.Client:
    """Open one authenticated WebSocket client that records what it receives."""
    client = socketio.Client(reconnection=False)
    client.on(events.EXTRACTION_STATUS, lambda payload: received.append(payload))
    client.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=10)
    return client


def test_many_sockets_leave_the_api_answering(served, auth):
    front_url, api_url = served
    tokens = {"alice": auth.token("alice"), "bob": auth.token("bob")}
    inbox: dict[str, list] = {"alice": [], "bob": []}
    owners = ["alice" if i % 2 else "bob" for i in range(CLIENTS)]
    clients: list[socketio.Client] = []
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            clients = list(
                pool.map(lambda who: connect(front_url, tokens[who], inbox[who]), owners)
            )
        assert all(client.connected for client in clients)
        headers = auth.headers("bob")
        for base in (front_url, api_url):
            assert httpx.get(f"{base}/", timeout=10).status_code == 200
            presets = httpx.get(f"{base}/feature-presets", headers=headers, timeout=10)
            assert presets.status_code == 200, presets.text
        clients.append(connect(front_url, tokens["alice"], inbox["alice"]))
        health = httpx.get(f"{front_url}/health/sockets", timeout=10).json()
        assert health["connections"] == CLIENTS + 1

        time.sleep(0.3)  # the last client's room join
        events.publish(events.EXTRACTION_STATUS, {"id": 1}, user_id="user-alice")
        alice_clients = owners.count("alice") + 1
        deadline = time.monotonic() + 15
        while len(inbox["alice"]) < alice_clients and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert inbox["alice"] == [{"id": 1}] * alice_clients
        assert inbox["bob"] == []
    finally:
        for client in clients:
            client.disconnect()
