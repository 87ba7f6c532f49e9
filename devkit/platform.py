"""Run the whole platform locally on embedded defaults (`./qi2 run`).

SQLite file and demo albums under `var/`, the machine's Redis (started by `./qi2` if absent), a
local Keycloak-style issuer (unless KEYCLOAK_BASE_URL names another), the Kheops album API the
browser asks for (over the local album folders), the API (gunicorn on an internal port), the
Socket.IO service on port 5000 in front of it (one origin: it serves /socket.io/ and forwards
every other path to the API), the Celery workers (extraction, training, prediction) and Flower.
Writes the frontend's five build settings to `<data-dir>/frontend.env` and prints a ready-to-use
dev token. Ctrl-C stops everything.
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

from devkit.demo_album import DEMO_ALBUMS
from devkit.kheops_layer import KheopsLayer, LayerAlbum, LocalStore
from devkit.oidc_issuer import LocalIssuer, dev_users
from shared.config import Settings
from shared.imaging.factory import local_albums_root
from webapp.servers import api_command, socket_command

ROOT = Path(__file__).resolve().parents[1]  # the repository (devkit is installed editable)
VENV_BIN = Path(sys.executable).parent
DEV_TOKEN_TTL = 12 * 3600
FRONTEND_ENV = "frontend.env"
READY_NOTICE_SECONDS = 30.0
LEGACY_WARNING = (
    "WARNING: Socket.IO legacy anonymous mode is on (SOCKETIO_LEGACY_ANONYMOUS=true): the "
    "unmodified frontend connects without a token, so every connected browser receives every "
    "user's progress events. Development only (docs/runbooks/deploy.md, 'The frontend')."
)


def port_free(port: int) -> bool:
    """Tell whether nothing listens on 127.0.0.1:port."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def configured(settings: Settings) -> set[str]:
    """Return the environment names the caller set (environment or .env)."""
    fields = type(settings).model_fields
    return {fields[name].alias or name for name in settings.model_fields_set}


def external_issuer(settings: Settings, own_port: int) -> str | None:
    """Return KEYCLOAK_BASE_URL when the caller points it at an issuer other than ours."""
    if "KEYCLOAK_BASE_URL" not in configured(settings):
        return None
    url = settings.keycloak_base_url.rstrip("/")
    ours = {f"http://127.0.0.1:{own_port}", f"http://localhost:{own_port}"}
    return None if url in ours else url


def platform_env(args: argparse.Namespace, issuer_url: str, settings: Settings) -> dict[str, str]:
    """Environment of every child process: embedded defaults unless the caller set them."""
    data_dir = Path(args.data_dir).resolve()
    env = dict(os.environ)
    defaults = {
        "QI2_DATA_DIR": str(data_dir),
        "IMAGE_SOURCE": "local",
        "LOCAL_ALBUMS_DIR": str(data_dir / "albums"),
        "KEYCLOAK_BASE_URL": issuer_url,
        "CORS_ALLOWED_ORIGINS": "*",
        # The unmodified frontend opens its socket without a token (announced at start-up).
        "SOCKETIO_LEGACY_ANONYMOUS": "true",
        "PYTHONUNBUFFERED": "1",
    }
    mine = configured(settings)  # a value of the caller's (even only in .env) wins
    for key, value in defaults.items():
        if key not in mine:
            env.setdefault(key, value)
    return env


def run_step(env: dict[str, str], *command: str) -> None:
    """Run a set-up command to completion, failing loudly."""
    subprocess.run(command, env=env, cwd=ROOT, check=True)


def start(env: dict[str, str], log_dir: Path, name: str, *command: str) -> subprocess.Popen:
    """Start a long-running child with its output in var/log/<name>.log."""
    log = (log_dir / f"{name}.log").open("ab")
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(url: str, children: list[subprocess.Popen]) -> subprocess.Popen | None:
    """Wait until `url` answers 200, however long, while every child lives.

    Return None when ready, or the first child that exited. A loaded machine may take minutes
    to start gunicorn and the workers: that is slow, not failed; a notice says it is waiting.
    """
    started = time.monotonic()
    notice = started + READY_NOTICE_SECONDS
    while True:
        dead = next((c for c in children if c.poll() is not None), None)
        if dead is not None:
            return dead
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return None
        except httpx.HTTPError:
            pass
        if time.monotonic() > notice:
            waited = time.monotonic() - started
            print(f"still waiting for {url} ({waited:.0f} s; processes alive)", flush=True)
            notice += READY_NOTICE_SECONDS
        time.sleep(0.5)


def prepare(env: dict[str, str]) -> None:
    """Migrate the embedded database, seed presets, write the demo albums."""
    Path(env["QI2_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    cli = str(VENV_BIN / "quantimage2")
    run_step(env, cli, "db-upgrade")
    run_step(env, cli, "seed-presets")
    run_step(env, sys.executable, "-m", "devkit.demo_album", env["LOCAL_ALBUMS_DIR"])


def worker_command(
    queue: str, node: str, concurrency: int, pool: str | None = None, *, loglevel: str = "INFO"
) -> list[str]:
    """Return the command line of one Celery worker reading one queue under a node name."""
    command = [str(VENV_BIN / "celery"), "-A", "workers.celery_app", "worker", "-Q", queue]
    command += ["-n", node]
    if pool:
        command += ["--pool", pool]
    return [*command, "--concurrency", str(concurrency), "-l", loglevel]


def launch(env: dict[str, str], args: argparse.Namespace) -> list[subprocess.Popen]:
    """Start the API, the Socket.IO front, the three workers and Flower."""
    log_dir = Path(env["QI2_DATA_DIR"]) / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    celery = str(VENV_BIN / "celery")
    api_upstream = f"http://127.0.0.1:{args.api_port}"
    return [
        start(env, log_dir, "api", *api_command("127.0.0.1", args.api_port)),
        start(env, log_dir, "sockets", *socket_command("127.0.0.1", args.port, api_upstream)),
        start(env, log_dir, "worker-extraction", *worker_command("extraction", "extraction@%h", 2)),
        # As in docker-compose.yml: joblib's loky processes need a non-daemonic task process.
        start(
            env,
            log_dir,
            "worker-training",
            *worker_command("training", "training@%h", 1, "threads"),
        ),
        # Predictions on their own queue: never behind a training (ADR 0005).
        start(env, log_dir, "worker-prediction", *worker_command("prediction", "prediction@%h", 1)),
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


def start_album_api(args: argparse.Namespace, settings: Settings, ours: bool) -> KheopsLayer:
    """Serve Kheops' album API over the local album folders.

    With our issuer the demo albums belong to its dev users; another issuer's users are unknown
    here, so there every album is every user's. It trusts the API's issuer and answers the
    API's CORS origins.
    """
    owners = [LayerAlbum(a.album_id, a.album_id, users=set(a.users)) for a in DEMO_ALBUMS]
    if not ours:
        owners = []
    layer = KheopsLayer(
        None,
        settings.jwks_url,
        owners,
        issuer=settings.expected_issuer,
        store=LocalStore(local_albums_root(settings)),
        cors_origins=settings.cors_allowed_origins,
    )
    layer.start(port=args.kheops_port)
    return layer


def frontend_values(
    args: argparse.Namespace, settings: Settings, kheops_url: str
) -> dict[str, str]:
    """The frontend's five build settings for this platform."""
    return {
        "REACT_APP_PYTHON_BACKEND_URL": f"http://127.0.0.1:{args.port}",
        "REACT_APP_KEYCLOAK_URL": settings.keycloak_base_url.rstrip("/"),
        "REACT_APP_KEYCLOAK_REALM": settings.keycloak_realm_name,
        "REACT_APP_KEYCLOAK_FRONTEND_CLIENT_ID": settings.keycloak_client_id,
        "REACT_APP_KHEOPS_URL": kheops_url.rstrip("/"),
    }


def write_frontend_env(path: Path, values: dict[str, str]) -> None:
    """Write NAME=value lines, the form `./qi2 frontend` and a CRA build read."""
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")


def announce(
    args: argparse.Namespace,
    issuer: LocalIssuer | None,
    issuer_realm: str,
    values: dict[str, str],
    legacy: bool,
) -> None:
    """Print where things run, the frontend's settings and (with our issuer) a dev token."""
    data = Path(args.data_dir)
    token_file = data / "dev-token.txt"
    api = f"http://127.0.0.1:{args.port}"
    if issuer is not None:
        who = "the local dev issuer; users admin/admin and researcher/researcher"
    else:
        who = "KEYCLOAK_BASE_URL: not ours, so the local dev issuer is not started"
    settings_lines = "\n".join(f"    {k}={v}" for k, v in values.items())
    albums = ", ".join(f"{a.album_id} ({' + '.join(a.users)})" for a in DEMO_ALBUMS)
    if issuer is None:
        albums = "every album visible to every user of that issuer"
    print(
        f"""
QuantImage v2 backend is running (Ctrl-C stops it)
  API + Socket.IO  {api}        docs: {api}/docs   OpenAPI: {api}/openapi.json
  OIDC issuer      {issuer_realm}
                   ({who})
  Kheops albums    {values["REACT_APP_KHEOPS_URL"]}/api/albums   ({albums})
  Flower           http://127.0.0.1:{args.flower_port}   ({args.flower_auth})
  Logs             {data}/log/  (api.log: REST on :{args.api_port}; sockets.log: this URL)

Frontend build settings (also in {data / FRONTEND_ENV}); `./qi2 frontend` builds and serves
the frontend with them at http://127.0.0.1:{args.frontend_port}:
{settings_lines}
""",
        flush=True,
    )
    if legacy:
        print(LEGACY_WARNING, flush=True)
    if issuer is None:
        token_file.unlink(missing_ok=True)  # a token of another issuer would be refused
        print(f"\nNo dev token: the API trusts {issuer_realm}; get tokens from it.\n", flush=True)
        return
    token = issuer.mint("admin", ttl=DEV_TOKEN_TTL)
    token_file.write_text(token + "\n")
    print(
        f"""
Dev token (user 'admin' with the admin role, valid 12 h; also in {token_file}):
{token}

Try:  curl -H "Authorization: Bearer $(cat {token_file})" {api}/feature-presets
""",
        flush=True,
    )


def stop_all(children: list[subprocess.Popen]) -> None:
    """Terminate the children, killing those that do not stop within 15 s."""
    for child in children:
        child.terminate()
    for child in children:
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()


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
    stop_all(children)
    return code


def parse_args() -> argparse.Namespace:
    """The launcher's options: ports, Flower's login and the data directory."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, default=5000, help="the one URL of API + Socket.IO")
    parser.add_argument("--api-port", type=int, default=5001, help="internal port of the REST API")
    parser.add_argument("--issuer-port", type=int, default=8180)
    parser.add_argument("--kheops-port", type=int, default=8280, help="the Kheops album API")
    parser.add_argument("--flower-port", type=int, default=5555)
    parser.add_argument(
        "--frontend-port",
        type=int,
        default=3000,
        help="where the frontend is served (`./qi2 frontend --port`): its login redirects",
    )
    parser.add_argument("--flower-auth", default="admin:admin")
    parser.add_argument("--data-dir", default=str(ROOT / "var"))
    return parser.parse_args()


def main() -> int:
    """Parse options, start everything, wait for readiness, supervise."""
    args = parse_args()
    settings = Settings()
    other = external_issuer(settings, args.issuer_port)
    ports = [args.port, args.api_port, args.kheops_port, args.flower_port]
    busy = [p for p in ports + ([] if other else [args.issuer_port]) if not port_free(p)]
    if busy:
        print(
            f"port {busy[0]} is in use; stop what runs there or pick another port", file=sys.stderr
        )
        return 2
    issuer_base = other or f"http://127.0.0.1:{args.issuer_port}"
    env = platform_env(args, issuer_base + "/", settings)
    effective = Settings(**env)  # what the children will read
    issuer = None
    if other is None:
        frontend = [f"http://{h}:{args.frontend_port}" for h in ("127.0.0.1", "localhost")]
        issuer = LocalIssuer(
            users=dev_users(),
            redirect_uris=[f"{o}/*" for o in frontend],
            web_origins=effective.cors_allowed_origins,
        )
        issuer.start(port=args.issuer_port)
    prepare(env)
    if effective.image_source == "local":
        kheops_url = start_album_api(args, effective, ours=issuer is not None).base_url
    else:
        kheops_url = effective.kheops_base_url  # the browser asks the real Kheops
    values = frontend_values(args, effective, kheops_url)
    write_frontend_env(Path(args.data_dir) / FRONTEND_ENV, values)
    children = launch(env, args)
    dead = wait_ready(f"http://127.0.0.1:{args.port}/health/ready", children)
    if dead is not None:
        print(
            f"the platform did not start: {dead.args[0]} exited with {dead.returncode}; "
            f"see {args.data_dir}/log/",
            file=sys.stderr,
        )
        stop_all(children)
        return 1
    announce(args, issuer, effective.realm_url, values, effective.socketio_legacy_anonymous)
    return supervise(children)


if __name__ == "__main__":
    sys.exit(main())
