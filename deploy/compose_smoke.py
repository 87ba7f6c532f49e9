"""Compose smoke: the README's deployment, on a clean clone, under a real Docker engine.

`./qi2 compose-smoke` runs this with the project's venv. Not part of the test suite: on the vfs
storage driver the first build takes about half an hour. Steps (docs/runbooks/deploy.md):

1. a Docker engine: the one that answers, or `dockerd --iptables=false --bridge=none
   --storage-driver=vfs` started here (docker.io, docker-compose and debootstrap are
   apt-installed when missing);
2. the base images: pulled, or stand-ins built by deploy/standin-bases.sh;
3. a `git clone` of the current commit in a temporary folder, `.env` from `.env.example`,
   generated secrets (mode 644 in a 700 folder, as the runbook says), a synthetic album;
4. the local overlay with the `dev-issuer` profile on free host ports (the port variables),
   plus deploy/compose-smoke.build.yml when the engine has no default bridge;
5. waits until every service that has a health check is healthy and `migrate` exited 0;
6. a token from the project's issuer (the `oidc-issuer` service);
7. one extraction and one training through the HTTP API, with a Socket.IO client on the same
   origin (/socket.io/) that must receive the progress events;
8. Flower without credentials (401) and with them (the three workers listed);
9. `docker-compose down -v`, the clone removed (and the engine stopped if started here);
10. one line: compose_smoke: services_healthy=<n>/<m> extraction=<ok|fail> training=<ok|fail>
    flower=<ok|fail> seconds=<t>, and after a failure `failed_step=<step> log=<file>`: the first
    step that failed and the log that tells why. A check that never ran shows `not-run`
    (services_healthy=not-run when compose never got the stack up), never a bare 0/0.

Compose v1 gives every Docker API call 60 s by default; creating or removing a container on a
busy host (vfs copies the whole image per container) takes longer, so compose runs here with
COMPOSE_HTTP_TIMEOUT=300 (the value .env.example sets for operators).

Exit status 0 only when every check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import socketio
import yaml

ROOT = Path(__file__).resolve().parents[1]
FILES = ["docker-compose.yml", "docker-compose.local.yml"]
BUILD_OVERLAY = "deploy/compose-smoke.build.yml"  # the clone's own copy
PROJECT = "qi2smoke"
ALBUM = "smoke"
PATIENTS = 10  # 5 per outcome: enough for a stratified cross-validation
USER = "researcher"
DOCKERD = ["dockerd", "--iptables=false", "--bridge=none", "--storage-driver=vfs"]
TOOLS = {"dockerd": "docker.io", "docker-compose": "docker-compose", "debootstrap": "debootstrap"}
# Seconds compose v1 waits for one Docker API answer (its default, 60, is too short on a busy host).
COMPOSE_HTTP_TIMEOUT = "300"


def log(message: str) -> None:
    """Progress on stderr; stdout keeps the result line."""
    print(f"compose-smoke {time.strftime('%H:%M:%S')}: {message}", file=sys.stderr, flush=True)


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a command, failing loudly."""
    return subprocess.run(command, check=True, text=True, **kwargs)


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 2.0) -> object:
    """Poll until the predicate returns something truthy; None after the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


# --- 1, 2: engine and base images ----------------------------------------------------------------


def engine_answers() -> bool:
    """Whether a Docker engine answers on the default socket."""
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


def ensure_tools() -> None:
    """apt-install the engine, compose v1 and debootstrap when missing."""
    missing = [package for binary, package in TOOLS.items() if shutil.which(binary) is None]
    if missing:
        log(f"installing {' '.join(missing)}")
        env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL)
        run(["apt-get", "install", "-y", "-qq", *missing], env=env, stdout=subprocess.DEVNULL)


def start_engine(workdir: Path) -> subprocess.Popen | None:
    """Start dockerd unless an engine answers; return the process started here."""
    if engine_answers():
        return None
    log(f"starting {' '.join(DOCKERD)}")
    with (workdir / "dockerd.log").open("w") as out:
        process = subprocess.Popen(DOCKERD, stdout=out, stderr=subprocess.STDOUT)
    if not wait_until(engine_answers, 60, 1):
        process.terminate()
        raise SystemExit(f"dockerd did not answer; see {workdir / 'dockerd.log'}")
    return process


def stop_engine(process: subprocess.Popen | None) -> None:
    """Stop the dockerd started here (images stay on disk for the next run)."""
    if process is not None:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def engine_has_bridge() -> bool:
    """Whether the engine has its default bridge (builds then reach the network without help)."""
    result = subprocess.run(
        ["docker", "network", "inspect", "bridge"], capture_output=True, check=False
    )
    return result.returncode == 0


# --- 3: a clean copy, configured like the README says --------------------------------------------


def free_port() -> int:
    """A TCP port free on the loopback right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def clean_clone(dest: Path) -> str:
    """Clone the current commit into dest; return its id."""
    commit = run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).stdout.strip()
    dirty = run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True).stdout
    if dirty.strip():
        log("the worktree has uncommitted changes: they are NOT part of the smoke")
    run(["git", "clone", "-q", str(ROOT), str(dest)])
    run(["git", "-C", str(dest), "checkout", "-q", commit])
    return commit


def set_env(env_file: Path, values: dict[str, str]) -> None:
    """Set NAME=value lines in an env file, replacing earlier assignments."""
    lines = env_file.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.split("=", 1)[0].strip() not in values]
    kept += [f"{name}={value}" for name, value in values.items()]
    env_file.write_text("\n".join(kept) + "\n", encoding="utf-8")


def write_secrets(copy: Path) -> tuple[str, str]:
    """The runbook's secret files: generated, 644 files in a 700 folder; return Flower's login."""
    folder = copy / "secrets"
    folder.mkdir(mode=0o700)
    flower_user, flower_password = "ops", secrets.token_urlsafe(18)
    contents = {
        "db-user-password": secrets.token_urlsafe(24),
        "db-root-password": secrets.token_urlsafe(24),
        "flower-basic-auth": f"{flower_user}:{flower_password}",
    }
    for name, value in contents.items():
        (folder / name).write_text(value + "\n", encoding="utf-8")
        (folder / name).chmod(0o644)
    return flower_user, flower_password


def write_album(copy: Path) -> list:
    """A small synthetic CT + RTSTRUCT album, readable by the containers' uid 10001."""
    from devkit.synthetic import write_cohort

    albums = copy / "var" / "albums"
    truths = write_cohort(albums / ALBUM, n_patients=PATIENTS, seed=7)
    for path in [albums.parent, *albums.rglob("*"), albums]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return truths


# --- 4, 5: up and health -------------------------------------------------------------------------


class Stack:
    """docker-compose on the clone, with the smoke's project name and overlays."""

    def __init__(self, copy: Path, host_network_builds: bool, workdir: Path) -> None:
        self.copy = copy
        self.log_path = workdir / "compose.log"
        files = [*FILES]
        if host_network_builds:
            files.append(BUILD_OVERLAY)
        self.base = ["docker-compose", "-p", PROJECT, "--profile", "dev-issuer"]
        for name in files:
            self.base += ["-f", name]
        # Only the clone's .env feeds the interpolation, as on a fresh host.
        self.env = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "DOCKER_HOST"}}
        self.env["COMPOSE_HTTP_TIMEOUT"] = os.environ.get(
            "COMPOSE_HTTP_TIMEOUT", COMPOSE_HTTP_TIMEOUT
        )

    def __call__(
        self, *args: str, timeout: float = 600, check: bool = True, capture: bool = False
    ) -> str:
        """Run one docker-compose command; its output goes to the log (or is returned)."""
        with self.log_path.open("a") as out:
            out.write(f"$ docker-compose {' '.join(args)}\n")
            out.flush()
            # Straight to the log, so that a long build can be followed with tail -f.
            result = subprocess.run(
                [*self.base, *args],
                cwd=self.copy,
                env=self.env,
                stdout=subprocess.PIPE if capture else out,
                stderr=out,
                text=True,
                timeout=timeout,
                check=False,
            )
        if check and result.returncode != 0:
            raise RuntimeError(f"docker-compose {args[0]} failed (see {self.log_path})")
        return result.stdout or ""

    def containers(self) -> list[dict]:
        """State of every container of the project (running or not), from `docker-compose ps`."""
        ids = self("ps", "-a", "-q", check=False, capture=True).split()
        if not ids:
            return []
        out = run(["docker", "inspect", *ids], capture_output=True).stdout
        return [
            {
                "service": c["Config"]["Labels"].get("com.docker.compose.service", "?"),
                "status": c["State"]["Status"],
                "exit": c["State"]["ExitCode"],
                "health": (c["State"].get("Health") or {}).get("Status"),
            }
            for c in json.loads(out)
        ]


def describe(state: dict) -> str:
    """service=health, or service=running / exited(<code>) for those without a health check."""
    if state["health"]:
        return f"{state['service']}={state['health']}"
    if state["status"] == "running":
        return f"{state['service']}=running"
    return f"{state['service']}={state['status']}({state['exit']})"


def wait_healthy(stack: Stack, timeout: float) -> tuple[int, int]:
    """Wait until every health-checked service is healthy and migrate exited 0; return n/m.

    m counts the containers `docker-compose ps` lists with a health check, whatever services
    the files define; one that exits (other than migrate with 0) ends the wait early.
    """
    last = ""
    deadline = time.monotonic() + timeout
    while True:
        states = stack.containers()
        checked = [s for s in states if s["health"] is not None]
        healthy = sum(s["health"] == "healthy" for s in checked)
        migrated = any(
            s["service"] == "migrate" and s["status"] == "exited" and s["exit"] == 0 for s in states
        )
        broken = [
            s
            for s in states
            if s["status"] == "exited" and not (s["service"] == "migrate" and s["exit"] == 0)
        ]
        summary = " ".join(describe(s) for s in sorted(states, key=lambda s: s["service"]))
        if summary != last:
            log(summary)
            last = summary
        done = checked and healthy == len(checked) and migrated
        if done or broken or time.monotonic() > deadline:
            return healthy, len(checked)
        time.sleep(5)


# --- 6, 7: token, extraction, training, events ---------------------------------------------------


def get_token(oidc_port: int, user: str) -> str:
    """A password-grant access token from the issuer service."""
    response = httpx.post(
        f"http://127.0.0.1:{oidc_port}/realms/QuantImage-v2/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": "quantimage2-frontend",
            "username": user,
            "password": user,
        },
        timeout=30,
    )
    response.raise_for_status()
    return response.json()["access_token"]


class Events:
    """A Socket.IO client on the API's origin (/socket.io/), recording the progress events."""

    NAMES = ("feature-status", "extraction-status", "training-status")

    def __init__(self, api: str, token: str) -> None:
        self.received: list[tuple[str, dict]] = []
        self.client = socketio.Client(reconnection=False)
        for name in self.NAMES:
            self.client.on(name, lambda payload, name=name: self.received.append((name, payload)))
        self.client.connect(
            api,
            auth={"token": token},
            socketio_path="socket.io",
            transports=["websocket"],
            wait_timeout=20,
        )

    def of(self, name: str) -> list[dict]:
        """Payloads received for one event name."""
        return [payload for event, payload in self.received if event == name]

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()


def extraction(api: str, headers: dict, events: Events, copy: Path) -> tuple[bool, int | None]:
    """Extract the album with a default preset; ok when every study succeeded and was announced."""
    config = yaml.safe_load((copy / "shared/presets/defaults/PETCT_all.yaml").read_text())
    response = httpx.post(
        f"{api}/extract/album/{ALBUM}",
        json={"config": config, "rois": ["GTV"]},
        headers=headers,
        timeout=60,
    )
    log(f"POST /extract/album/{ALBUM}: HTTP {response.status_code}")
    if response.status_code != 200:
        log(response.text[:500])
        return False, None
    extraction_id = response.json()["id"]

    def ready() -> dict | None:
        body = httpx.get(
            f"{api}/extractions/{extraction_id}/status", headers=headers, timeout=30
        ).json()
        return body if body.get("ready") else None

    status = wait_until(ready, 1800, 5)
    time.sleep(2)  # let the last events arrive
    log(f"extraction {extraction_id}: {status}")
    if not status:
        return False, extraction_id
    done = [p for p in events.of("feature-status") if p.get("status") == "SUCCESS"]
    final = [p for p in events.of("extraction-status") if p.get("id") == extraction_id]
    log(f"events: {len(done)} feature-status SUCCESS, {len(final)} extraction-status")
    ok = (
        status["completed_tasks"] == status["total_tasks"] == PATIENTS
        and len(done) == PATIENTS
        and bool(final)
    )
    return ok, extraction_id


def training(api: str, headers: dict, events: Events, extraction_id: int, truths: list) -> bool:
    """Label the patients, then train through M2; ok when `training-status` says complete."""
    category = httpx.post(
        f"{api}/label-categories/{ALBUM}",
        headers=headers,
        timeout=30,
        json={"label_type": "Classification", "name": "smoke-outcome"},
    )
    if category.status_code != 200:
        log(f"POST /label-categories/{ALBUM}: HTTP {category.status_code} {category.text[:300]}")
        return False
    category_id = category.json()["id"]
    label_map = {t.patient_id: {"Outcome": str(t.outcome)} for t in truths}
    httpx.post(
        f"{api}/labels/{category_id}", headers=headers, json={"label_map": label_map}, timeout=30
    ).raise_for_status()
    httpx.patch(
        f"{api}/albums/{ALBUM}/current-outcome/{category_id}", headers=headers, timeout=30
    ).raise_for_status()
    body = {
        "extraction-id": extraction_id,
        "collection-id": None,
        "label-category-id": category_id,
        "studies": [
            {
                "0020000D": {"vr": "UI", "Value": [t.study_uid]},
                "00100020": {"vr": "LO", "Value": [t.patient_id]},
            }
            for t in truths
        ],
        "album": {"album_id": ALBUM, "name": ALBUM},
        "labels": [[t.patient_id, str(t.outcome)] for t in truths],
        "data-splitting-type": "fulldataset",
        "train-test-split-type": "automatic",
        "training-patients": [t.patient_id for t in truths],
        "test-patients": None,
        "modalities": ["CT"],
        "rois": ["GTV"],
    }
    response = httpx.post(f"{api}/models/{ALBUM}", headers=headers, json=body, timeout=120)
    log(f"POST /models/{ALBUM} (M2): HTTP {response.status_code} {response.text[:300]}")
    if response.status_code != 200:
        return False
    training_id = response.json()["training-id"]

    def ended() -> dict | None:
        mine = [p for p in events.of("training-status") if p.get("training-id") == training_id]
        return next((p for p in mine if p.get("complete") or p.get("failed")), None)

    outcome = wait_until(ended, 1800, 5)
    log(f"training {training_id}: {'no end event' if not outcome else list(outcome)}")
    return bool(outcome and outcome.get("complete"))


# --- 8: Flower -----------------------------------------------------------------------------------


def flower(port: int, user: str, password: str) -> bool:
    """Flower refuses anonymous requests and lists the three workers to the operator."""
    url = f"http://127.0.0.1:{port}"
    anonymous = httpx.get(f"{url}/api/workers", timeout=30)
    # refresh=1: Flower asks the workers (celery inspect) instead of answering from its cache.
    authed = httpx.get(f"{url}/api/workers?refresh=1", auth=(user, password), timeout=60)
    workers = sorted(authed.json()) if authed.status_code == 200 else []
    log(
        f"flower: anonymous HTTP {anonymous.status_code}, with auth HTTP {authed.status_code}, "
        f"workers {workers}"
    )
    prefixes = {name.split("@")[0] for name in workers}
    return anonymous.status_code == 401 and {"extraction", "training", "prediction"} <= prefixes


# --- the run -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What each check gave; the first step that failed and the log that says why."""

    healthy: int | None = None  # None: the health wait never ran
    checked: int = 0
    extraction: bool | None = None
    training: bool | None = None
    flower: bool | None = None
    failed_step: str | None = None
    failed_log: Path | None = None

    def fail(self, step: str, log_path: Path) -> None:
        """Note a failed step (only the first one: later failures follow from it)."""
        if self.failed_step is None:
            self.failed_step, self.failed_log = step, log_path

    def passed(self) -> bool:
        """Whether every check ran and passed."""
        healthy = self.healthy is not None and self.checked > 0 and self.healthy == self.checked
        return healthy and bool(self.extraction and self.training and self.flower)


def _mark(value: bool | None) -> str:
    """ok, fail, or not-run for a check that never ran."""
    return "not-run" if value is None else ("ok" if value else "fail")


def result_line(outcome: Outcome, seconds: int) -> str:
    """The one summary line; a failure names its step and log."""
    if outcome.healthy is None or outcome.checked == 0:
        services = "not-run" if outcome.healthy is None else "none-with-health-check"
    else:
        services = f"{outcome.healthy}/{outcome.checked}"
    line = (
        f"compose_smoke: services_healthy={services} extraction={_mark(outcome.extraction)} "
        f"training={_mark(outcome.training)} flower={_mark(outcome.flower)}"
    )
    if outcome.failed_step is not None:
        line += f" failed_step={outcome.failed_step} log={outcome.failed_log}"
    return f"{line} seconds={seconds}"


def smoke(args: argparse.Namespace, workdir: Path) -> int:
    """Steps 2 to 9; returns the exit status and prints the result line."""
    started = time.monotonic()
    outcome = Outcome()
    compose_log = workdir / "compose.log"
    step, step_log = "base-images", workdir / "standin-bases.log"
    stack: Stack | None = None
    copy = workdir / "quantimage2"
    try:
        with step_log.open("w") as out:
            run([str(ROOT / "deploy" / "standin-bases.sh")], stdout=out, stderr=subprocess.STDOUT)
        step, step_log = "clone", workdir / "smoke.log"
        commit = clean_clone(copy)
        log(f"clean clone of {commit[:12]} in {copy}")
        ports, flower_login, truths = configure(copy)
        stack = Stack(copy, host_network_builds=not engine_has_bridge(), workdir=workdir)
        step, step_log = "up", compose_log
        log(f"up --build (ports {ports}); the first build on vfs takes about 30 minutes")
        stack("up", "-d", "--build", timeout=args.build_timeout)
        step = "health"
        outcome.healthy, outcome.checked = wait_healthy(stack, args.health_timeout)
        if not outcome.checked or outcome.healthy != outcome.checked:
            outcome.fail(step, compose_log)
        step = "token"
        api = f"http://127.0.0.1:{ports['QI2_API_PORT']}"
        token = get_token(ports["QI2_OIDC_PORT"], USER)
        headers = {"Authorization": f"Bearer {token}"}
        try:
            step = "socketio"
            events = Events(api, token)
            try:
                step = "extraction"
                outcome.extraction, extraction_id = extraction(api, headers, events, copy)
                if not outcome.extraction:
                    outcome.fail(step, compose_log)
                if extraction_id is not None:
                    step = "training"
                    outcome.training = training(api, headers, events, extraction_id, truths)
                    if not outcome.training:
                        outcome.fail(step, compose_log)
            finally:
                events.close()
        except Exception as error:  # still check Flower
            log(f"error in step {step}: {type(error).__name__}: {error!r}")
            outcome.fail(step, compose_log)
        step = "flower"
        outcome.flower = flower(ports["QI2_FLOWER_PORT"], *flower_login)
        if not outcome.flower:
            outcome.fail(step, compose_log)
    except Exception as error:  # the line must still be printed and the stack torn down
        log(f"error in step {step}: {type(error).__name__}: {error!r}")
        outcome.fail(step, step_log)
    finally:
        if stack is not None:
            tear_down(args, stack, copy, outcome)
    print(result_line(outcome, round(time.monotonic() - started)), flush=True)
    return 0 if outcome.passed() and outcome.failed_step is None else 1


def configure(copy: Path) -> tuple[dict[str, int], tuple[str, str], list]:
    """The clone's .env, secrets and album; return the host ports, Flower's login, the truths."""
    shutil.copy(copy / ".env.example", copy / ".env")
    ports = {name: free_port() for name in ("QI2_API_PORT", "QI2_FLOWER_PORT", "QI2_OIDC_PORT")}
    set_env(
        copy / ".env",
        {
            "COMPOSE_PROJECT_NAME": PROJECT,
            "QI2_IMAGE_TAG": "smoke",
            **{name: str(port) for name, port in ports.items()},
            "KEYCLOAK_BASE_URL": "http://oidc-issuer:8180/",
            # The Socket.IO client sends its own origin, as a browser does: allow it.
            "CORS_ALLOWED_ORIGINS": f"http://localhost:3000,http://127.0.0.1:{ports['QI2_API_PORT']}",
        },
    )
    flower_login = write_secrets(copy)
    return ports, flower_login, write_album(copy)


def tear_down(args: argparse.Namespace, stack: Stack, copy: Path, outcome: Outcome) -> None:
    """Keep the services' last logs, then stop and remove the stack (unless --keep)."""
    stack("logs", "--no-color", "--tail", "200", check=False, timeout=120)
    if args.keep:
        log(f"--keep: the stack stays up in {copy} (docker-compose -p {PROJECT} ... down -v)")
        return
    try:
        stack("down", "-v", "--remove-orphans", "--timeout", "30", timeout=900)
    except Exception as error:  # noted in the line; the clone goes anyway
        log(f"error in step down: {type(error).__name__}: {error!r}")
        outcome.fail("down", stack.log_path)
    shutil.rmtree(copy, ignore_errors=True)


def main() -> None:
    """Parse options, make sure an engine runs, smoke, clean up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the stack and the clone up")
    parser.add_argument("--build-timeout", type=float, default=5400, help="seconds for up --build")
    parser.add_argument("--health-timeout", type=float, default=900, help="seconds to get healthy")
    parser.add_argument("--workdir", type=Path, help="where the clone and logs go (kept)")
    args = parser.parse_args()
    ensure_tools()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="qi2-compose-smoke-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"logs in {workdir}")
    engine = start_engine(workdir)
    try:
        status = smoke(args, workdir)
    finally:
        stop_engine(engine)
    sys.exit(status)


if __name__ == "__main__":
    main()
