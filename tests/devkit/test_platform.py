"""`./qi2 run`'s launcher: readiness, the issuer it announces, the environment it gives."""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from devkit import platform
from devkit.oidc_issuer import LocalIssuer, dev_users
from shared.config import Settings


class Ready(BaseHTTPRequestHandler):
    """Answers 200 to everything."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


def free_port() -> int:
    server = HTTPServer(("127.0.0.1", 0), Ready)
    port = server.server_port
    server.server_close()
    return port


def test_wait_ready_reports_the_child_that_exited():
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    started = time.monotonic()
    dead = platform.wait_ready(f"http://127.0.0.1:{free_port()}/health/ready", [child])
    assert dead is child and dead.returncode == 3
    assert time.monotonic() - started < 30


def test_wait_ready_waits_for_a_slow_api_while_processes_live(monkeypatch, capsys):
    monkeypatch.setattr(platform, "READY_NOTICE_SECONDS", 1.0)
    port = free_port()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    servers = []

    def serve_late() -> None:  # nothing listens on the port before this
        servers.append(HTTPServer(("127.0.0.1", port), Ready))
        servers[0].serve_forever()

    threading.Timer(2.5, serve_late).start()
    try:
        assert platform.wait_ready(f"http://127.0.0.1:{port}/health/ready", [child]) is None
    finally:
        servers[0].shutdown()
        servers[0].server_close()
        child.kill()
        child.wait()
    assert "still waiting" in capsys.readouterr().out


def test_an_issuer_of_the_callers_is_announced_and_no_dev_token_written(monkeypatch, tmp_path):
    monkeypatch.delenv("KEYCLOAK_BASE_URL", raising=False)
    assert platform.external_issuer(Settings(_env_file=None), 8180) is None
    ours = Settings(_env_file=None, KEYCLOAK_BASE_URL="http://127.0.0.1:8180/")
    assert platform.external_issuer(ours, 8180) is None
    other = Settings(_env_file=None, KEYCLOAK_BASE_URL="https://sso.example.org/auth/")
    assert platform.external_issuer(other, 8180) == "https://sso.example.org/auth"
    stale = tmp_path / "dev-token.txt"
    stale.write_text("a token of the local issuer\n")
    args = argparse.Namespace(data_dir=str(tmp_path), port=5000, api_port=5001)
    args.flower_port, args.flower_auth, args.frontend_port = 5555, "admin:admin", 3000
    values = {"REACT_APP_KHEOPS_URL": "http://127.0.0.1:8280"}
    printed = []
    monkeypatch.setattr("builtins.print", lambda *a, **k: printed.append(" ".join(map(str, a))))
    platform.announce(args, None, other.realm_url, values, legacy=False)
    text = "\n".join(printed)
    assert "https://sso.example.org/auth/realms/QuantImage-v2" in text
    assert "127.0.0.1:8180" not in text and "Dev token" not in text
    assert "dev-researcher" not in text  # the local issuer's users mean nothing there
    assert not stale.exists()


def test_announce_with_our_issuer_writes_a_token_it_trusts(monkeypatch, tmp_path):
    issuer = LocalIssuer(users=dev_users())
    args = argparse.Namespace(data_dir=str(tmp_path), port=5000, api_port=5001)
    args.flower_port, args.flower_auth, args.frontend_port = 5555, "admin:admin", 3000
    monkeypatch.setattr("builtins.print", lambda *a, **k: None)
    platform.announce(args, issuer, issuer.issuer, {"REACT_APP_KHEOPS_URL": "x"}, legacy=True)
    token = (tmp_path / "dev-token.txt").read_text().strip()
    assert issuer.verify(token)["preferred_username"] == "admin"


@pytest.mark.parametrize(
    ("mine", "expected"), [({}, "true"), ({"SOCKETIO_LEGACY_ANONYMOUS": "false"}, "false")]
)
def test_legacy_sockets_default_on_unless_the_caller_says_otherwise(
    monkeypatch, tmp_path, mine, expected
):
    for key in ("SOCKETIO_LEGACY_ANONYMOUS", "CORS_ALLOWED_ORIGINS", "KEYCLOAK_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    for key, value in mine.items():
        monkeypatch.setenv(key, value)
    args = argparse.Namespace(data_dir=str(tmp_path))
    env = platform.platform_env(args, "http://127.0.0.1:8180/", Settings(_env_file=None))
    assert env["SOCKETIO_LEGACY_ANONYMOUS"] == expected
    assert Settings(_env_file=None, **env).socketio_legacy_anonymous is (expected == "true")
    assert env["KEYCLOAK_BASE_URL"] == "http://127.0.0.1:8180/"
