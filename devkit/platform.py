"""Run the whole platform locally on embedded defaults (`./qi2 run`).

SQLite file and demo album under `var/`, the machine's Redis (started by `./qi2` if absent), a
local Keycloak-style issuer, the API (gunicorn on an internal port), the Socket.IO service on port
5000 in front of it (one origin: it serves /socket.io/ and forwards every other path to the API),
the Celery workers (extraction, training, prediction) and Flower. Prints a ready-to-use dev
token. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from devkit.oidc_issuer import LocalIssuer, dev_users
from webapp.servers import api_command, socket_command

ROOT = Path(__file__).resolve().parents[1]  # the repository (devkit is installed editable)
VENV_BIN = Path(sys.executable).parent
DEV_TOKEN_TTL = 12 * 3600


def port_free(port: int) -> bool:
    """Tell whether nothing listens on 127.0.0.1:port."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def platform_env(args: argparse.Namespace, issuer_url: str) -> dict[str, str]:
    """Environment of every child process: embedded defaults unless the caller set them."""
    data_dir = Path(args.data_dir).resolve()
    env = dict(os.environ)
    defaults = {
        "QI2_DATA_DIR": str(data_dir),
        "IMAGE_SOURCE": "local",
        "LOCAL_ALBUMS_DIR": str(data_dir / "albums"),
        "KEYCLOAK_BASE_URL": issuer_url,
        "CORS_ALLOWED_ORIGINS": "*",
        "PYTHONUNBUFFERED": "1",
    }
    for key, value in defaults.items():
        env.setdefault(key, value)
    return env


def run_step(env: dict[str, str], *command: str) -> None:
    """Run a set-up command to completion, failing loudly."""
    subprocess.run(command, env=env, cwd=ROOT, check=True)


def start(env: dict[str, str], log_dir: Path, name: str, *command: str) -> subprocess.Popen:
    """Start a long-running child with its output in var/log/<name>.log."""
    log = (log_dir / f"{name}.log").open("ab")
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def wait_http(url: str, timeout: float = 60.0) -> bool:
    """Wait until a URL answers with a non-5xx status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


def prepare(env: dict[str, str]) -> None:
    """Migrate the embedded database, seed presets, write the demo album."""
    Path(env["QI2_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    cli = str(VENV_BIN / "quantimage2")
    run_step(env, cli, "db-upgrade")
    run_step(env, cli, "seed-presets")
    run_step(env, sys.executable, "-m", "devkit.demo_album", env["LOCAL_ALBUMS_DIR"])


def launch(env: dict[str, str], args: argparse.Namespace) -> list[subprocess.Popen]:
    """Start the API, the Socket.IO front, the three workers and Flower."""
    log_dir = Path(env["QI2_DATA_DIR"]) / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    celery = str(VENV_BIN / "celery")
    api_upstream = f"http://127.0.0.1:{args.api_port}"
    return [
        start(env, log_dir, "api", *api_command("127.0.0.1", args.api_port)),
        start(env, log_dir, "sockets", *socket_command("127.0.0.1", args.port, api_upstream)),
        start(
            env,
            log_dir,
            "worker-extraction",
            celery,
            "-A",
            "workers.celery_app",
            "worker",
            "-Q",
            "extraction",
            "-n",
            "extraction@%h",
            "--concurrency",
            "2",
            "-l",
            "INFO",
        ),
        start(
            env,
            log_dir,
            "worker-training",
            celery,
            "-A",
            "workers.celery_app",
            "worker",
            "-Q",
            "training",
            "-n",
            "training@%h",
            # As in docker-compose.yml: joblib's loky processes need a non-daemonic task process.
            "--pool",
            "threads",
            "--concurrency",
            "1",
            "-l",
            "INFO",
        ),
        # Predictions on their own queue: never behind a training (ADR 0005).
        start(
            env,
            log_dir,
            "worker-prediction",
            celery,
            "-A",
            "workers.celery_app",
            "worker",
            "-Q",
            "prediction",
            "-n",
            "prediction@%h",
            "--concurrency",
            "1",
            "-l",
            "INFO",
        ),
        start(
            env,
            log_dir,
            "flower",
            celery,
            "-A",
            "workers.celery_app",
            "flower",
            f"--port={args.flower_port}",
            "--address=127.0.0.1",
            f"--basic-auth={args.flower_auth}",
        ),
    ]


def announce(issuer: LocalIssuer, args: argparse.Namespace) -> None:
    """Print where things run and a ready-to-use token."""
    token = issuer.mint("admin", ttl=DEV_TOKEN_TTL)
    token_file = Path(args.data_dir) / "dev-token.txt"
    token_file.write_text(token + "\n")
    api = f"http://127.0.0.1:{args.port}"
    print(
        f"""
QuantImage v2 backend is running (Ctrl-C stops it)
  API + Socket.IO  {api}        docs: {api}/docs   OpenAPI: {api}/openapi.json
  OIDC issuer      {issuer.base_url}/realms/{issuer.realm}
                   users admin/admin and researcher/researcher
  Flower           http://127.0.0.1:{args.flower_port}   ({args.flower_auth})
  Demo album       'demo' (local folder {args.data_dir}/albums/demo)
  Logs             {args.data_dir}/log/  (api.log: REST on :{args.api_port}; sockets.log: this URL)

Dev token (user 'admin' with the admin role, valid 12 h; also in {token_file}):
{token}

Try:  curl -H "Authorization: Bearer $(cat {token_file})" {api}/feature-presets
""",
        flush=True,
    )


def supervise(children: list[subprocess.Popen]) -> int:
    """Wait until a child dies or we are interrupted; then stop them all."""
    stop = {"now": False}

    def request_stop(*_args: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    code = 0
    while not stop["now"]:
        for child in children:
            if child.poll() is not None:
                print(
                    f"process {child.args[0]} exited with {child.returncode}; stopping",
                    file=sys.stderr,
                )
                stop["now"], code = True, 1
        time.sleep(0.5)
    for child in children:
        child.terminate()
    for child in children:
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
    return code


def main() -> int:
    """Parse options, start everything, supervise."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5000, help="the one URL of API + Socket.IO")
    parser.add_argument("--api-port", type=int, default=5001, help="internal port of the REST API")
    parser.add_argument("--issuer-port", type=int, default=8180)
    parser.add_argument("--flower-port", type=int, default=5555)
    parser.add_argument("--flower-auth", default="admin:admin")
    parser.add_argument("--data-dir", default=str(ROOT / "var"))
    args = parser.parse_args()
    for port in (args.port, args.api_port, args.issuer_port, args.flower_port):
        if not port_free(port):
            print(
                f"port {port} is in use; stop what runs there or pick another port", file=sys.stderr
            )
            return 2
    issuer = LocalIssuer(users=dev_users())
    issuer_url = issuer.start(port=args.issuer_port)
    env = platform_env(args, issuer_url)
    prepare(env)
    children = launch(env, args)
    if not wait_http(f"http://127.0.0.1:{args.port}/health/ready"):
        print("the API did not become ready; see var/log/api.log, sockets.log", file=sys.stderr)
    announce(issuer, args)
    return supervise(children)


if __name__ == "__main__":
    sys.exit(main())
