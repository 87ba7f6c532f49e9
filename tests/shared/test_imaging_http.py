"""The HTTP helper against a small misbehaving loopback server: stalls, flakes, errors."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.errors import Forbidden, NotFound, UpstreamError
from shared.imaging.http import HttpClient, path_only, query_string
from tests.support.orthanc import free_port

TOKEN = "s3cret-token-value"


class Misbehaving(ThreadingHTTPServer):
    """A server whose answers depend on the path; it counts the calls per path."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.calls: Counter[str] = Counter()
        self.release = threading.Event()  # set at teardown so that stalled handlers end

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    """Path → behaviour (see each branch)."""

    server: Misbehaving

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self._answer()

    def _answer(self) -> None:
        path = self.path.split("?", 1)[0]
        self.server.calls[path] += 1
        count = self.server.calls[path]
        if path == "/stall":  # never answers in time
            self.server.release.wait(10)
            return
        if path == "/stall-body":  # headers, then the body stops
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            self.server.release.wait(10)
            return
        if path.startswith("/flaky") and count <= 2:  # two 503s, then fine
            self._send(503, {"error": "busy"})
        elif path == "/rate-limited" and count == 1:
            self._send(429, {"error": "slow down"}, {"Retry-After": "0"})
        elif path.startswith("/status/"):
            self._send(int(path.rsplit("/", 1)[1]), {"error": "nope"})
        elif path == "/echo":
            self._send(200, {"query": self.path.partition("?")[2]})
        else:
            self._send(200, {"ok": True, "call": count})

    def _send(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server() -> Iterator[Misbehaving]:
    srv = Misbehaving()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def client(url: str, *, timeout: float = 0.5, retries: int = 2) -> HttpClient:
    """A client with short timeouts and quick backoff, carrying a bearer token."""
    return HttpClient(
        "Test service",
        url,
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=timeout,
        retries=retries,
        backoff=0.01,
    )


def test_a_stall_becomes_a_readable_timeout_within_the_configured_time(server):
    started = time.monotonic()
    with pytest.raises(UpstreamError) as caught:
        client(server.url, timeout=0.5, retries=0).get_json("/stall")
    elapsed = time.monotonic() - started
    assert elapsed < 1.5
    assert "Test service did not answer within 0.5 s" in caught.value.message
    assert "GET /stall" in caught.value.message


def test_a_stall_is_retried_a_bounded_number_of_times(server):
    started = time.monotonic()
    with pytest.raises(UpstreamError):
        client(server.url, timeout=0.3, retries=2).get_json("/stall")
    assert server.calls["/stall"] == 3
    assert time.monotonic() - started < 3 * 0.3 + 1.5


def test_a_body_that_stops_midway_times_out(server):
    with pytest.raises(UpstreamError, match="did not answer within"):
        client(server.url, timeout=0.3, retries=1).request("GET", "/stall-body")
    assert server.calls["/stall-body"] == 2


def test_503_then_200_succeeds(server):
    assert client(server.url).get_json("/flaky") == {"ok": True, "call": 3}
    assert server.calls["/flaky"] == 3


def test_retries_run_out(server):
    with pytest.raises(UpstreamError, match="HTTP 503"):
        client(server.url, retries=1).get_json("/flaky-twice")
    assert server.calls["/flaky-twice"] == 2


def test_429_honours_retry_after(server):
    assert client(server.url).get_json("/rate-limited")["call"] == 2


def test_404_is_not_found_without_retry(server):
    with pytest.raises(NotFound, match="not found"):
        client(server.url).get_json("/status/404")
    assert server.calls["/status/404"] == 1


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_are_forbidden_and_never_show_the_token(server, status, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(Forbidden) as caught:
        client(server.url).get_json(f"/status/{status}")
    assert "access denied" in caught.value.message
    assert f"HTTP {status}" in caught.value.message
    assert TOKEN not in str(caught.value) and TOKEN not in repr(client(server.url))
    assert TOKEN not in caplog.text


def test_other_errors_name_the_service_and_status(server):
    with pytest.raises(UpstreamError) as caught:
        client(server.url).get_json("/status/500")
    assert caught.value.message == "Test service answered HTTP 500 for GET /status/500"
    assert server.calls["/status/500"] == 1


def test_502_is_retried_for_get_but_not_for_post(server):
    with pytest.raises(UpstreamError, match="HTTP 502"):
        client(server.url, retries=2).get_json("/status/502")
    assert server.calls["/status/502"] == 3
    server.calls.clear()
    with pytest.raises(UpstreamError, match="HTTP 502"):
        client(server.url, retries=2).request("POST", "/status/502", data={"a": "b"})
    assert server.calls["/status/502"] == 1


def test_post_is_retried_on_503(server):
    response = client(server.url).request("POST", "/flaky-post", data={"a": "b"})
    assert response.json()["call"] == 3


def test_connection_refused_is_retried_then_reported(caplog):
    url = f"http://127.0.0.1:{free_port()}"
    caplog.set_level(logging.WARNING)
    with pytest.raises(UpstreamError, match="Test service is unreachable"):
        client(url, retries=2).get_json("/anything")
    assert caplog.text.count("retry") == 2


def test_query_values_keep_dicom_wildcards_and_uid_lists(server):
    params = [("PatientID", "STS_0*"), ("StudyInstanceUID", "1.2,1.3"), ("x", "a b&c")]
    answer = client(server.url).get_json("/echo", params=params)
    assert answer["query"] == "PatientID=STS_0*&StudyInstanceUID=1.2,1.3&x=a%20b%26c"
    assert query_string({"a": ["1", "2"]}) == "a=1&a=2"


def test_messages_show_paths_not_hosts_or_queries():
    assert path_only("http://host:1/api/studies?album=x") == "/api/studies"
    assert path_only("studies/1.2/series") == "studies/1.2/series"
