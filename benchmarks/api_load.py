"""Benchmark: the REST API under load while hundreds of Socket.IO clients stay connected.

Starts the platform in its production shape on loopback (the gunicorn API and the Socket.IO
service of webapp/servers.py, a MariaDB database of its own, Redis, the local issuer, one
extraction worker), seeds a 300-patient extraction, connects the Socket.IO clients (raw
Engine.IO v4 over WebSocket, in a child process), runs the HTTP clients for a fixed time and,
meanwhile, a small extraction whose events must reach its owner's clients only. Run from the
repository root:

    .venv/bin/python benchmarks/api_load.py [--redis-db N]

`--design threading --source DIR` measures the old design instead: DIR holds a checkout of the
code before ADR 0001's revision, whose API (Flask-SocketIO in threading mode, gunicorn gthread,
one process, 50 threads) also serves /socket.io/.

The last line is `api_load: sockets=<n> requests=<r> errors=<e> p50_ms=<a> p95_ms=<b>
p99_ms=<c> event_lag_p95_ms=<d>` (one line), with the percentiles of the light GETs; feature-details
is reported on the line before.

`--ceiling` measures one `sockets` process alone (no API, no database): it connects more and more
clients (`--ceiling-steps`), publishes events through Redis as the workers do, at
`--event-rate` per second into the users' rooms, and stops at the first step whose event lag p95
passes 1 s (or that loses connections or events). Its last line is `sockets_ceiling:
clients=<largest step under 1 s> lag_p95_ms=<its p95> over_at=<first step over> ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from live_platform import free_port, wait_http  # noqa: E402  (benchmarks/live_platform.py)
from seeding import ALBUM, N_PATIENTS, ROI, seed  # noqa: E402  (benchmarks/seeding.py)

from webapp.servers import API_THREADS, API_WORKERS  # noqa: E402

SMALL_ALBUM = "bench-small"
OWNER = "owner"
LIGHT = ("presets", "E1", "labels", "models")


# --- the Socket.IO clients (child process) ------------------------------------------------------


@dataclass
class SocketStats:
    """What the socket clients saw."""

    connected: int = 0
    refused: int = 0
    timed_out: int = 0
    closed_early: int = 0
    events: list[tuple[int, str, str, float]] = field(default_factory=list)  # client, event, key, t


def event_key(name: str, payload: Any) -> str:
    """Identify an event by its name and payload."""
    return name + json.dumps(payload, sort_keys=True)


async def socket_client(
    url: str,
    token: str,
    index: int,
    stats: SocketStats,
    stop: asyncio.Event,
    timeout: float,
    gate: asyncio.Semaphore,
) -> None:
    """One Engine.IO v4 / Socket.IO client: connect with the token, answer pings, record events."""
    import websockets

    ws_url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    try:
        async with gate, asyncio.timeout(timeout):
            ws = await websockets.connect(ws_url, max_size=None, ping_interval=None)
            await ws.recv()  # the Engine.IO open packet
            await ws.send("40" + json.dumps({"token": token}))
            while True:
                message = await ws.recv()
                if message == "2":
                    await ws.send("3")
                elif message.startswith("40"):
                    break
                elif message.startswith("44"):
                    stats.refused += 1
                    await ws.close()
                    return
    except (TimeoutError, OSError, websockets.WebSocketException):
        stats.timed_out += 1
        return
    stats.connected += 1
    reader = asyncio.ensure_future(read_events(ws, index, stats))
    await asyncio.wait([reader, asyncio.ensure_future(stop.wait())], return_when="FIRST_COMPLETED")
    if reader.done():
        stats.closed_early += 1
    else:
        reader.cancel()
    await ws.close()


async def read_events(ws: Any, index: int, stats: SocketStats) -> None:
    """Answer pings and record every event until the server closes the connection."""
    import websockets

    try:
        async for message in ws:
            received = time.time()
            if message == "2":
                await ws.send("3")
            elif message.startswith("42"):
                name, payload = json.loads(message[2:])
                stats.events.append((index, name, event_key(name, payload), received))
    except websockets.WebSocketException:
        return


async def run_sockets(url: str, tokens: list[str], timeout: float, ramp_limit: int) -> None:
    """Connect every client (ramped), report, hold until 'stop' on stdin, then report events."""
    stats = SocketStats()
    stop = asyncio.Event()
    gate = asyncio.Semaphore(ramp_limit)

    started = time.monotonic()
    tasks = [
        asyncio.ensure_future(socket_client(url, token, i, stats, stop, timeout, gate))
        for i, token in enumerate(tokens)
    ]
    while stats.connected + stats.refused + stats.timed_out < len(tokens):
        await asyncio.sleep(0.1)
    print(
        f"CONNECTED {stats.connected} refused={stats.refused} timed_out={stats.timed_out} "
        f"in {time.monotonic() - started:.1f}s",
        flush=True,
    )
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    still = stats.connected - stats.closed_early
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    result = {"connected": stats.connected, "still_connected": still, "events": stats.events}
    result["closed_early"] = stats.closed_early
    print("RESULT " + json.dumps(result), flush=True)


def socket_child(args: argparse.Namespace) -> None:
    """Entry point of the child process that holds the Socket.IO clients."""
    tokens = json.loads(Path(args.tokens_file).read_text())
    asyncio.run(run_sockets(args.url, tokens, args.connect_timeout, args.ramp))


# --- services and data (parent process) -------------------------------------------------------


@dataclass
class Platform:
    """The processes of one run."""

    api_url: str  # where the HTTP clients go
    socket_url: str
    processes: list[subprocess.Popen]
    logs: Path
    names: list[str]

    def named(self) -> dict[str, subprocess.Popen]:
        """Return the processes by name."""
        return dict(zip(self.names, self.processes, strict=True))


def start_platform(
    args: argparse.Namespace, env: dict[str, str], logs: Path, processes: list[subprocess.Popen]
) -> Platform:
    """Start the API (and, in the new design, the Socket.IO service) and an extraction worker."""
    from webapp.servers import api_command, socket_command

    def spawn(name: str, command: list[str], cwd: Path, extra: dict[str, str]) -> subprocess.Popen:
        out = (logs / f"{name}.log").open("wb")
        return subprocess.Popen(
            command, cwd=cwd, env={**env, **extra}, stdout=out, stderr=subprocess.STDOUT
        )

    api_port = free_port()
    names = ["api"]
    if args.design == "threading":
        source = Path(args.source).resolve()
        venv = Path(sys.executable).parent
        command = [str(venv / "gunicorn"), "-k", "gthread", "-w", "1", "--threads", "50"]
        command += ["-b", f"127.0.0.1:{api_port}", "webapp.wsgi:app"]
        processes.append(spawn("api", command, source, {"PYTHONPATH": str(source)}))
        api_url = socket_url = f"http://127.0.0.1:{api_port}"
    else:
        socket_port = free_port()
        workers, threads = (int(n) for n in args.api_shape.split("x"))
        command = api_command("127.0.0.1", api_port, workers=workers, threads=threads)
        processes.append(spawn("api", command, ROOT, {}))
        upstream = f"http://127.0.0.1:{api_port}" if args.via_front else None
        command = socket_command("127.0.0.1", socket_port, upstream)
        processes.append(spawn("sockets", command, ROOT, {}))
        names.append("sockets")
        api_url, socket_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{socket_port}"
    worker = [str(Path(sys.executable).parent / "celery"), "-A", "workers.celery_app", "worker"]
    worker += ["-Q", "extraction", "-c", "1", "-n", f"bench-{uuid.uuid4().hex[:6]}@%h"]
    worker += ["--without-mingle", "--without-gossip", "-l", "WARNING"]
    processes.append(spawn("worker", worker, ROOT, {}))
    wait_http(f"{api_url}/health/ready")
    if socket_url != api_url:
        wait_http(f"{socket_url}/health/sockets")
    if args.via_front:
        api_url = socket_url  # the dev/local shape: REST through the Socket.IO front
    platform = Platform(api_url, socket_url, processes, logs, [*names, "worker"])
    return platform


def stop_processes(processes: list[subprocess.Popen]) -> None:
    """Terminate every child we started, then kill the stragglers."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of a process and its live children, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


# --- the Redis tap: when each event was published ---------------------------------------------


class Tap:
    """Subscribe to the Socket.IO channel and note when each event is published."""

    def __init__(self, url: str, channel: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub()
        self.pubsub.subscribe(channel)
        self.published: list[tuple[str, str, float]] = []  # key, room, t
        self.running = True
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        while self.running:
            message = self.pubsub.get_message(timeout=0.2)
            if message and message["type"] == "message":
                data = json.loads(message["data"])
                if data.get("method") == "emit":
                    args = data["data"]  # the emit's arguments: [payload] here
                    key = event_key(data["event"], args[0] if len(args) == 1 else args)
                    self.published.append((key, str(data.get("room")), time.time()))

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.pubsub.close()
        self.client.close()


# --- the HTTP clients --------------------------------------------------------------------------


@dataclass
class HttpStats:
    """Latencies (ms) per kind of request and the errors."""

    light: list[float] = field(default_factory=list)
    details: list[float] = field(default_factory=list)
    by_kind: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


class RawConnection:
    """One keep-alive HTTP/1.1 connection that only sends GETs.

    The clients share the 2-core machine with the API they measure: httpx spent about as much
    CPU per request as the API itself (~6 ms), so it measured itself as much as the server.
    Browsers run elsewhere; this client costs a few tenths of a millisecond per request.
    """

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        host_port = url.split("://", 1)[1].rstrip("/")
        self.host, _, port = host_port.partition(":")
        self.port = int(port or 80)
        lines = [f"Host: {host_port}", *(f"{k}: {v}" for k, v in headers.items())]
        self.head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        """GET a path and read the whole body; return the status code."""
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"GET {path} HTTP/1.1\r\n".encode() + self.head)
        head = (await self.reader.readuntil(b"\r\n\r\n")).lower()
        status = int(head[9:12])
        marker = head.find(b"\r\ncontent-length:")
        if marker >= 0:
            end = head.index(b"\r\n", marker + 2)
            await self.reader.readexactly(int(head[marker + 17 : end]))
        elif b"transfer-encoding: chunked" in head:
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await self.reader.readexactly(size + 2)
            await self.reader.readuntil(b"\r\n")
        else:
            raise ConnectionError("response without a length")
        if b"\r\nconnection: close" in head:
            self.close()
        return status

    def close(self) -> None:
        """Drop the connection (the next GET opens a new one)."""
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def http_load(
    api_url: str,
    token: str,
    extraction_id: int,
    clients: int,
    seconds: float,
    details_every: int,
    client_kind: str = "raw",
) -> HttpStats:
    """Run `clients` closed-loop clients over the frontend's common GETs for `seconds`."""
    import httpx

    paths = {
        "presets": "/feature-presets",
        "E1": f"/extractions/album/{ALBUM}",
        "labels": f"/label-categories/{ALBUM}",
        "models": f"/models/{ALBUM}",
        "details": f"/extractions/{extraction_id}/feature-details",
    }
    stats = HttpStats()
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients + 10)
    deadline = time.monotonic() + seconds

    async def client(index: int, session: httpx.AsyncClient) -> None:
        raw = RawConnection(api_url, headers)
        cycle = index  # clients start at different points of the cycle
        while time.monotonic() < deadline:
            kinds = list(LIGHT)
            if details_every and cycle % details_every == 0:
                kinds.append("details")
            cycle += 1
            for kind in kinds:
                started = time.perf_counter()
                try:
                    if client_kind == "raw":
                        async with asyncio.timeout(10):
                            status = await raw.get(paths[kind])
                    else:
                        response = await session.get(paths[kind], headers=headers)
                        await response.aread()
                        status = response.status_code
                except (
                    httpx.HTTPError,
                    OSError,
                    TimeoutError,
                    ValueError,
                    asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError,
                ) as exc:
                    raw.close()
                    stats.error(f"{kind}: {type(exc).__name__}")
                    continue
                elapsed = (time.perf_counter() - started) * 1000
                if status != 200:
                    stats.error(f"{kind}: HTTP {status}")
                    continue
                (stats.details if kind == "details" else stats.light).append(elapsed)
                stats.by_kind.setdefault(kind, []).append(elapsed)
        raw.close()

    timeout = httpx.Timeout(10.0)
    async with httpx.AsyncClient(base_url=api_url, timeout=timeout, limits=limits) as session:
        await asyncio.gather(*(client(i, session) for i in range(clients)))
    return stats


def start_small_extraction(api_url: str, token: str) -> int | None:
    """POST the small album's extraction; return its id (None when the API refused)."""
    import httpx
    import yaml

    from shared.presets.service import DEFAULTS_DIR

    config = yaml.safe_load((DEFAULTS_DIR / "PETCT_all.yaml").read_text())
    try:
        response = httpx.post(
            f"{api_url}/extract/album/{SMALL_ALBUM}",
            json={"config": config, "rois": [ROI]},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
    except httpx.HTTPError as exc:
        print(f"  small extraction not started: {type(exc).__name__}")
        return None
    if response.status_code != 200:
        print(f"  small extraction not started: HTTP {response.status_code}")
        return None
    return response.json()["id"]


def extraction_done(api_url: str, token: str, extraction_id: int, timeout: float) -> bool:
    """Wait for the small extraction to end (bounded)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = httpx.get(
                f"{api_url}/extractions/{extraction_id}/status",
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            ).json()
            if status.get("ready"):
                return True
        except Exception:  # the probe is best effort; the deadline bounds it
            pass
        time.sleep(1)
    return False


def percentile(values: list[float], q: float) -> float:
    """Return the q-th percentile (nan for no values)."""
    return float(np.percentile(values, q)) if values else float("nan")


def event_figures(
    tap: Tap, result: dict[str, Any], owners: set[int], owner_room: str
) -> tuple[list[float], int, int]:
    """Lags (ms) of the owner's events, events at the owner's clients and at everybody else's."""
    published: dict[str, list[float]] = {}
    for key, room, t in tap.published:
        if room == owner_room:
            published.setdefault(key, []).append(t)
    lags, at_owner, at_others = [], 0, 0
    seen: dict[tuple[int, str], int] = {}
    for index, _name, key, received in result["events"]:
        if index not in owners:
            at_others += 1
            continue
        at_owner += 1
        # The n-th copy of an event at a client matches the n-th time it was published.
        nth = seen.get((index, key), 0)
        seen[(index, key)] = nth + 1
        times = published.get(key, [])
        if nth < len(times):
            lags.append((received - times[nth]) * 1000)
    return lags, at_owner, at_others


# --- the ceiling of one sockets process ----------------------------------------------------------

CEILING_LAG_MS = 1000.0


@dataclass
class Step:
    """What one client count gave."""

    clients: int
    connected: int
    expected: int
    received: int
    lags: list[float]
    load: float

    @property
    def lag_p95(self) -> float:
        """Return the lag p95 (ms), infinite when nothing arrived."""
        return percentile(self.lags, 95) if self.lags else float("inf")

    def over(self) -> bool:
        """Tell whether this step passed the ceiling: slow, refused clients or lost events."""
        lost = self.expected - self.received
        return (
            self.lag_p95 > CEILING_LAG_MS
            or self.connected < self.clients
            or lost > 0.01 * max(self.expected, 1)
        )


def ceiling_verdict(steps: list[Step]) -> str:
    """Return the summary line: the largest step under the ceiling and the first one over."""
    under = [s for s in steps if not s.over()]
    over = next((s for s in steps if s.over()), None)
    best = under[-1] if under and (over is None or under[-1].clients < over.clients) else None
    parts = [
        f"clients={best.clients if best else 0}",
        f"lag_p95_ms={best.lag_p95:.0f}" if best else "lag_p95_ms=nan",
        f"over_at={over.clients if over else 'none'}",
    ]
    if over is not None:
        p95 = "inf" if over.lag_p95 == float("inf") else f"{over.lag_p95:.0f}"
        parts += [
            f"over_lag_p95_ms={p95}",
            f"over_connected={over.connected}/{over.clients}",
            f"over_received={over.received}/{over.expected}",
        ]
    return "sockets_ceiling: " + " ".join(parts)


def publish_events(
    redis_url: str, channel: str, rooms: list[str], rate: float, seconds: float
) -> int:
    """Emit feature-status events round-robin into the rooms, as a worker does; return the count."""
    import socketio

    manager = socketio.RedisManager(redis_url, channel=channel, write_only=True)
    sent = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        room = rooms[sent % len(rooms)]
        payload = {"seq": sent, "sent": time.time(), "status": "in progress"}
        manager.emit("feature-status", payload, room=room, namespace="/")
        sent += 1
        time.sleep(max(0.0, started + sent / rate - time.monotonic()))
    return sent


def ceiling_step(
    args: argparse.Namespace, socket_url: str, tokens: list[str], redis_url: str, channel: str
) -> Step:
    """Connect len(tokens) clients, publish for a while, collect the lags."""
    tokens_file = Path(tempfile.mkstemp(prefix="qi2-ceiling-", suffix=".json")[1])
    tokens_file.write_text(json.dumps(tokens))
    command = [sys.executable, __file__, "--child", "--url", socket_url]
    command += ["--tokens-file", str(tokens_file), "--connect-timeout", str(args.connect_timeout)]
    command += ["--ramp", str(args.ramp)]
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        print(f"  {len(tokens)} clients: {child.stdout.readline().strip()}", flush=True)
        time.sleep(2)  # let the last joins reach their rooms
        rooms = [f"user:user-u{i}" for i in range(args.users)]
        sent = publish_events(redis_url, channel, rooms, args.event_rate, args.ceiling_seconds)
        load = os.getloadavg()[0]
        time.sleep(3)  # the last events
        child.stdin.write("stop\n")
        child.stdin.flush()
        line = next((x for x in child.stdout if x.startswith("RESULT ")), "RESULT {}")
        child.wait(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        tokens_file.unlink(missing_ok=True)
    result = json.loads(line[len("RESULT ") :])
    return step_figures(tokens, args.users, sent, result, load)


def step_figures(
    tokens: list[str], users: int, sent: int, result: dict[str, Any], load: float
) -> Step:
    """Turn the clients' received events into lags and counts (client i belongs to user i % n)."""
    per_user = [sum(1 for i in range(len(tokens)) if i % users == u) for u in range(users)]
    expected = sum(per_user[seq % users] for seq in range(sent))
    lags = []
    for _index, name, key, received in result.get("events", []):
        payload = json.loads(key[len(name) :])
        lags.append((received - payload["sent"]) * 1000)
    connected = result.get("connected", 0)
    return Step(len(tokens), connected, expected, len(lags), lags, load)


def run_ceiling(args: argparse.Namespace) -> None:
    """Raise the client count of one sockets process until the event lag p95 passes 1 s."""
    import redis

    from devkit.oidc_issuer import LocalIssuer, User
    from webapp.servers import socket_command

    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    channel = f"qi2-ceiling-{uuid.uuid4().hex[:8]}"
    users = [User(f"u{i}", "pw", sub=f"user-u{i}") for i in range(args.users)]
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    issuer = LocalIssuer(users=users)
    issuer_url = issuer.start()
    env = {
        **os.environ,
        "SOCKET_MESSAGE_QUEUE": redis_url,
        "SOCKETIO_CHANNEL": channel,
        "KEYCLOAK_BASE_URL": issuer_url,
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="qi2-ceiling-sockets-", suffix=".log")[1])
    server = subprocess.Popen(
        socket_command("127.0.0.1", port),
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    steps: list[Step] = []
    try:
        socket_url = f"http://127.0.0.1:{port}"
        wait_http(f"{socket_url}/health/sockets")
        tokens_by_user = [issuer.mint(user.username, ttl=7200) for user in users]
        for clients in (int(n) for n in args.ceiling_steps.split(",")):
            tokens = [tokens_by_user[i % args.users] for i in range(clients)]
            step = ceiling_step(args, socket_url, tokens, redis_url, channel)
            steps.append(step)
            print(
                f"  {clients} clients: connected {step.connected}, events {step.received}/"
                f"{step.expected}, lag p50 {percentile(step.lags, 50):.0f} ms, p95 "
                f"{step.lag_p95:.0f} ms, load {step.load:.2f}",
                flush=True,
            )
            if step.over():
                break
    finally:
        stop_processes([server])
        issuer.stop()
        redis.Redis.from_url(redis_url).close()
        log.unlink(missing_ok=True)
    print(ceiling_verdict(steps))


# --- the run -----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    """Set everything up, measure, print the figures, clean up."""
    import redis
    import sqlalchemy as sa

    from devkit.oidc_issuer import LocalIssuer, User
    from devkit.synthetic import write_cohort
    from shared.db import migrate
    from tests.support.mariadb import admin

    database = f"qi2_bench_api_{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="qi2-api-load-"))
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    channel = f"qi2-bench-{uuid.uuid4().hex[:8]}"
    users = [User(OWNER, "pw", sub="user-owner")]
    users += [User(f"other{i}", "pw", sub=f"user-other{i}") for i in range(args.users - 1)]
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the issuer's access log
    issuer = LocalIssuer(users=users)
    issuer_url = issuer.start()
    env = {
        **os.environ,
        "DATABASE_URL": f"mysql+pymysql://root@127.0.0.1:3306/{database}?charset=utf8mb4",
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "SOCKET_MESSAGE_QUEUE": redis_url,
        "SOCKETIO_CHANNEL": channel,
        "KEYCLOAK_BASE_URL": issuer_url,
        "IMAGE_SOURCE": "local",
        "LOCAL_ALBUMS_DIR": str(work / "albums"),
        "QI2_DATA_DIR": str(work / "data"),
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    os.environ.update(env)
    broker = redis.Redis.from_url(redis_url)
    broker.flushdb()
    admin(f"CREATE DATABASE {database} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    processes: list[subprocess.Popen] = []
    logs = work / "logs"
    logs.mkdir()
    try:
        url = env["DATABASE_URL"]
        migrate.upgrade(url)
        engine = sa.create_engine(url)
        started = time.monotonic()
        extraction_id = seed(engine, "user-owner")
        engine.dispose()
        print(f"seeded {N_PATIENTS} patients in {time.monotonic() - started:.1f} s")
        write_cohort(work / "albums" / SMALL_ALBUM, n_patients=args.small_studies, seed=5)
        platform = start_platform(args, env, logs, processes)
        owner_token = issuer.mint(OWNER, ttl=3600)
        measure(args, issuer, users, platform, owner_token, extraction_id, redis_url, channel)
    finally:
        stop_processes(processes)
        issuer.stop()
        admin(f"DROP DATABASE IF EXISTS {database}")
        broker.flushdb()
        broker.close()
        if args.keep_logs:
            print(f"logs kept in {logs}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def measure(
    args: argparse.Namespace,
    issuer: Any,
    users: list[Any],
    platform: Platform,
    owner_token: str,
    extraction_id: int,
    redis_url: str,
    channel: str,
) -> None:
    """Connect the sockets, run the HTTP load and the small extraction, print the figures."""
    rng = random.Random(3)
    owners_share = max(1, args.sockets // args.users)
    names = [OWNER] * owners_share + [
        rng.choice(users[1:]).username for _ in range(args.sockets - owners_share)
    ]
    tokens = [issuer.mint(name, ttl=3600) for name in names]
    owners = {i for i, name in enumerate(names) if name == OWNER}
    tokens_file = platform.logs / "tokens.json"
    tokens_file.write_text(json.dumps(tokens))
    child = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--child",
            "--url",
            platform.socket_url,
            "--tokens-file",
            str(tokens_file),
            "--connect-timeout",
            str(args.connect_timeout),
            "--ramp",
            str(args.ramp),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        connected_line = child.stdout.readline().strip()
        print(f"sockets: {connected_line}   (load: {os.getloadavg()[0]:.2f})")
        tap = Tap(redis_url, channel)

        def small() -> None:
            time.sleep(5)
            small_id = start_small_extraction(platform.api_url, owner_token)
            holder["small_id"] = small_id

        holder: dict[str, int | None] = {}
        starter = threading.Thread(target=small)
        starter.start()
        started = time.monotonic()
        cpu_before = {name: cpu_seconds(p.pid) for name, p in platform.named().items()}
        client_before = time.process_time()
        stats = asyncio.run(
            http_load(
                platform.api_url,
                owner_token,
                extraction_id,
                args.http_clients,
                args.seconds,
                args.details_every,
                args.client,
            )
        )
        wall = time.monotonic() - started
        load = os.getloadavg()
        cpu = {n: cpu_seconds(p.pid) - cpu_before[n] for n, p in platform.named().items()}
        cpu["http clients"] = time.process_time() - client_before  # this process (and the tap)
        starter.join()
        small_id = holder.get("small_id")
        finished = small_id is not None and extraction_done(
            platform.api_url, owner_token, small_id, args.extraction_timeout
        )
        time.sleep(2)  # the last events
        child.stdin.write("stop\n")
        child.stdin.flush()
        result_line = ""
        for line in child.stdout:
            if line.startswith("RESULT "):
                result_line = line
                break
        child.wait(timeout=60)
        tap.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    result = json.loads(result_line[len("RESULT ") :]) if result_line else {}
    served = len(stats.light) + len(stats.details)
    print(
        "cpu seconds during the HTTP run: "
        + ", ".join(f"{name} {seconds:.1f}" for name, seconds in cpu.items())
        + f"; api cpu per answered request {1000 * cpu['api'] / max(served, 1):.1f} ms"
    )
    report(args, stats, wall, load, result, tap, owners, finished, small_id)


def report(
    args: argparse.Namespace,
    stats: HttpStats,
    wall: float,
    load: tuple[float, float, float],
    result: dict[str, Any],
    tap: Tap,
    owners: set[int],
    finished: bool,
    small_id: int | None,
) -> None:
    """Print the figures and the machine-readable last line."""
    lags, at_owner, at_others = event_figures(
        tap, result or {"events": []}, owners, "user:user-owner"
    )
    owner_events = sum(1 for _key, room, _t in tap.published if room == "user:user-owner")
    errors = sum(stats.errors.values())
    requests = len(stats.light) + len(stats.details) + errors
    sockets = result.get("still_connected", 0)
    shape = " (REST through the Socket.IO front)" if args.via_front else ""
    print(
        f"design: {args.design}{shape}, api {args.api_shape}, {args.client} client   "
        f"load average during the run: {load[0]:.2f} {load[1]:.2f}"
    )
    print(
        f"http: {requests} requests in {wall:.1f} s ({requests / wall:.0f}/s) by "
        f"{args.http_clients} clients; errors {errors} {stats.errors or ''}"
    )
    print(
        f"light GETs ({len(stats.light)}): p50 {percentile(stats.light, 50):.0f} ms, "
        f"p95 {percentile(stats.light, 95):.0f} ms, p99 {percentile(stats.light, 99):.0f} ms"
    )
    print(
        f"feature-details of {N_PATIENTS} patients ({len(stats.details)}): "
        f"p50 {percentile(stats.details, 50):.0f} ms, p95 {percentile(stats.details, 95):.0f} ms, "
        f"p99 {percentile(stats.details, 99):.0f} ms"
    )
    for kind, values in stats.by_kind.items():
        p50, p95 = percentile(values, 50), percentile(values, 95)
        print(f"  {kind:8} n={len(values):5}  p50 {p50:5.0f} ms  p95 {p95:5.0f} ms")
    print(
        f"sockets: {result.get('connected', 0)} connected, {sockets} still connected at the end; "
        f"small extraction {small_id} finished: {finished}"
    )
    print(
        f"events: {owner_events} published to the owner; received {at_owner} by the owner's "
        f"{len(owners)} clients (expected {owner_events * len(owners)}), {at_others} by the "
        f"others' clients; lag p50 {percentile(lags, 50):.0f} ms, p95 {percentile(lags, 95):.0f} ms"
    )
    print(
        f"api_load: sockets={sockets} requests={requests} errors={errors} "
        f"p50_ms={percentile(stats.light, 50):.0f} p95_ms={percentile(stats.light, 95):.0f} "
        f"p99_ms={percentile(stats.light, 99):.0f} event_lag_p95_ms={percentile(lags, 95):.0f}"
    )


def main() -> None:
    """Parse options; run the benchmark or the socket child."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--design", choices=["service", "threading"], default="service")
    parser.add_argument("--source", help="checkout of the old code (with --design threading)")
    parser.add_argument("--sockets", type=int, default=500)
    parser.add_argument("--users", type=int, default=10, help="owners of the sockets")
    parser.add_argument("--http-clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--details-every", type=int, default=10, help="one feature-details per N cycles"
    )
    parser.add_argument("--small-studies", type=int, default=3)
    parser.add_argument("--extraction-timeout", type=float, default=180.0)
    parser.add_argument("--connect-timeout", type=float, default=10.0)
    parser.add_argument("--ramp", type=int, default=50, help="connections in flight at once")
    parser.add_argument("--redis-db", type=int, default=7)
    parser.add_argument(
        "--via-front",
        action="store_true",
        help="send the HTTP clients through the Socket.IO service's forwarder (dev/local shape)",
    )
    parser.add_argument(
        "--api-shape",
        default=f"{API_WORKERS}x{API_THREADS}",
        help="gunicorn processes x threads of the API (default: webapp/servers.py's)",
    )
    parser.add_argument(
        "--client",
        choices=["raw", "httpx"],
        default="raw",
        help="HTTP client of the load: a lean keep-alive HTTP/1.1 client or httpx (which "
        "costs about as much CPU per request as the API on the same cores)",
    )
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument(
        "--ceiling", action="store_true", help="raise the clients of one sockets process"
    )
    parser.add_argument("--ceiling-steps", default="500,1000,2000,3000,4000,6000,8000,12000")
    parser.add_argument("--ceiling-seconds", type=float, default=15.0, help="publishing per step")
    parser.add_argument("--event-rate", type=float, default=10.0, help="events per second")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--tokens-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        socket_child(args)
        return
    if args.ceiling:
        run_ceiling(args)
        return
    if args.design == "threading" and not args.source:
        parser.error("--design threading needs --source")
    run(args)


if __name__ == "__main__":
    main()
