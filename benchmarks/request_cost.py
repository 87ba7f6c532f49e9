"""Benchmark: CPU milliseconds per request of the frontend's common GETs, in-process.

Seeds the data of api_load.py (benchmarks/seeding.py) into a MariaDB database of its own, builds
the Flask app with real settings, calls it through Flask's test client with real tokens from the
local issuer, and measures the process CPU time of each request (the API's side only: no HTTP
server, no network; MariaDB's own work is in its server process and not counted). Run from the
repository root:

    .venv/bin/python benchmarks/request_cost.py [--redis-db N] [--repeat 60] [--profile E1]

`--profile ROUTE` also prints the top of a cProfile run of that route (by own time).

The last line is `request_cost: presets_ms=<a> e1_ms=<b> labels_ms=<c> models_ms=<d>
feature_details_ms=<e>` (one line): the median CPU ms per request.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import os
import pstats
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from seeding import ALBUM, seed  # noqa: E402  (benchmarks/seeding.py)

OWNER = "owner"
ROUTES = ("presets", "E1", "labels", "models", "feature_details")


def paths(extraction_id: int) -> dict[str, str]:
    """The GETs of api_load.py, by name."""
    return {
        "presets": "/feature-presets",
        "E1": f"/extractions/album/{ALBUM}",
        "labels": f"/label-categories/{ALBUM}",
        "models": f"/models/{ALBUM}",
        "feature_details": f"/extractions/{extraction_id}/feature-details",
    }


def cost(client: Any, path: str, headers: dict[str, str], repeat: int) -> tuple[float, float]:
    """Median CPU ms and wall ms of `repeat` requests (after three warm-up requests)."""
    for _ in range(3):
        assert client.get(path, headers=headers).status_code == 200, path
    cpu, wall = [], []
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        response = client.get(path, headers=headers)
        response.get_data()
        cpu.append((time.process_time() - c0) * 1000)
        wall.append((time.perf_counter() - w0) * 1000)
        assert response.status_code == 200, path
    return statistics.median(cpu), statistics.median(wall)


def profile(client: Any, path: str, headers: dict[str, str], repeat: int, top: int) -> str:
    """cProfile `repeat` requests; return the top functions by own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeat):
        client.get(path, headers=headers).get_data()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def run(args: argparse.Namespace) -> None:
    """Set up the database, the issuer and the app; measure each route; clean up."""
    database = f"qi2_bench_cost_{uuid.uuid4().hex[:8]}"
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    os.environ.update(
        {
            "DATABASE_URL": f"mysql+pymysql://root@127.0.0.1:3306/{database}?charset=utf8mb4",
            "CELERY_BROKER_URL": redis_url,
            "CELERY_RESULT_BACKEND": redis_url,
            "SOCKET_MESSAGE_QUEUE": redis_url,
            "LOG_LEVEL": "WARNING",
        }
    )
    from devkit.oidc_issuer import LocalIssuer, User
    from shared.config import get_settings
    from shared.db import migrate
    from shared.db import session as db_session
    from tests.support.mariadb import admin

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the issuer's access log
    issuer = LocalIssuer(users=[User(OWNER, "pw", sub="user-owner")])
    os.environ["KEYCLOAK_BASE_URL"] = issuer.start()
    get_settings.cache_clear()
    admin(f"CREATE DATABASE {database} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    try:
        url = os.environ["DATABASE_URL"]
        migrate.upgrade(url)
        engine = db_session.make_engine(url)
        extraction_id = seed(engine, "user-owner")
        engine.dispose()
        measure(args, issuer, extraction_id)
    finally:
        issuer.stop()
        admin(f"DROP DATABASE IF EXISTS {database}")


def measure(args: argparse.Namespace, issuer: Any, extraction_id: int) -> None:
    """Print one line per route, the optional profile, and the machine-readable last line."""
    from webapp import create_app

    app = create_app()
    client = app.test_client()
    headers = {"Authorization": f"Bearer {issuer.mint(OWNER, ttl=3600)}"}
    results = {}
    for name, path in paths(extraction_id).items():
        repeat = max(args.repeat // 5, 5) if name == "feature_details" else args.repeat
        cpu_ms, wall_ms = cost(client, path, headers, repeat)
        size = len(client.get(path, headers=headers).get_data())
        results[name] = cpu_ms
        print(f"{name:16} cpu {cpu_ms:6.2f} ms  wall {wall_ms:6.2f} ms  ({size} bytes, n={repeat})")
    if args.profile:
        path = paths(extraction_id)[args.profile]
        print(profile(client, path, headers, args.repeat, args.top))
    print("request_cost: " + " ".join(f"{name.lower()}_ms={results[name]:.1f}" for name in ROUTES))


def main() -> None:
    """Parse options and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=60, help="requests per light route")
    parser.add_argument("--redis-db", type=int, default=7)
    parser.add_argument("--profile", choices=ROUTES, help="cProfile this route")
    parser.add_argument("--top", type=int, default=25, help="functions shown by --profile")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
