"""The command lines of the two web processes, in one place (ADR 0001).

The REST API runs under gunicorn's threaded worker in several processes; it holds no WebSocket,
so its threads only ever serve requests. Socket.IO runs in its own asyncio process
(webapp/socket_service.py). `./qi2 run`, the end-to-end tests and benchmarks/api_load.py start
exactly these commands; the compose files and webapp/Dockerfile spell the same ones.
"""

from __future__ import annotations

import sys
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
# Two processes use both cores for CPU-bound serialising; the threads cover requests that wait
# on MariaDB or Kheops (benchmarks/api_load.py measured the choice).
API_WORKERS = 2
API_THREADS = 8
# Idle keep-alive connections cost a file descriptor, no thread. Longer than the idle timeout
# of what reuses them (Traefik 90 s, the dev front's pool 5 s): a server that closes first
# races the next request on that connection, which then fails with a reset.
API_KEEP_ALIVE_SECONDS = 100


def api_command(
    host: str, port: int, *, workers: int = API_WORKERS, threads: int = API_THREADS
) -> list[str]:
    """Return the gunicorn command of the REST API (other shapes only for benchmarks)."""
    return [
        str(VENV_BIN / "gunicorn"),
        "-k",
        "gthread",
        "-w",
        str(workers),
        "--threads",
        str(threads),
        "--keep-alive",
        str(API_KEEP_ALIVE_SECONDS),
        "-b",
        f"{host}:{port}",
        "webapp.wsgi:app",
    ]


def socket_command(host: str, port: int, rest_upstream: str | None = None) -> list[str]:
    """Return the command of the Socket.IO service (the front when rest_upstream is given)."""
    command = [sys.executable, "-m", "webapp.socket_service", "--host", host, "--port", str(port)]
    if rest_upstream:
        command += ["--rest-upstream", rest_upstream]
    return command
