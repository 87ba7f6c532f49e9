"""Load check: 20 predictions at once while the training worker is busy, and light GETs meanwhile
(issue #15 §8). Run from the repository root:

    .venv/bin/python benchmarks/predict_load.py [--redis-db N] [--predictions 20]

The platform as deployed, on loopback: the gunicorn API behind the Socket.IO front (one origin),
a training worker (threads pool) and the prediction worker (`-Q prediction`, prefork `-c 1`),
MariaDB, Redis. A small model is trained first; then a full-grid training starts and its worker
is stopped with SIGSTOP once the grid runs (as busy as during a long training, without using
the cores). Meanwhile `--light-clients` clients GET /feature-presets in a loop (0.05 s apart),
and `--predictions` POST /models/<id>/predict are sent at once. The light GETs go on until
every prediction's row has ended, and 2 s more.

Goals: every POST answered 202, every prediction finished (from its row) while the training
worker is still stopped, light GETs p95 and max under 1 s, no error. `--source DIR` runs the API
and the workers from another checkout (e.g. the commit before issue #15 §8, whose predict waits
on the training worker): there is no prediction worker and no prediction row, so a prediction
counts as finished when its POST answered 200 with a result. Last line:

    predict_load: predictions=<n> accepted=<n> finished=<n> failed=<n> post_max_ms=<x>
    all_done_s=<x> light_gets=<n> light_errors=<n> light_p95_ms=<x> light_max_ms=<x>
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from live_platform import (
    ENDED,
    Platform,
    close_platform,
    load_average,
    open_platform,
)

TIMEOUT_SECONDS = 30.0  # the client timeout of the check
THINK_SECONDS = 0.05


class LightLoad:
    """Clients that GET /feature-presets in a loop and record each answer's time and status."""

    def __init__(self, platform: Platform, clients: int) -> None:
        self.platform = platform
        self.stop = threading.Event()
        self.samples: list[tuple[float, int]] = []  # (seconds, status; 0 = error or timeout)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def start(self) -> None:
        """Start the clients."""
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        """Stop the clients and wait for their last request."""
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=TIMEOUT_SECONDS + 5)

    def _run(self) -> None:
        """One client's loop over one keep-alive connection."""
        url = f"{self.platform.url}/feature-presets"
        with httpx.Client(headers=self.platform.headers, timeout=TIMEOUT_SECONDS) as client:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    status = client.get(url).status_code
                except httpx.HTTPError:
                    status = 0
                with self.lock:
                    self.samples.append((time.monotonic() - started, status))
                time.sleep(THINK_SECONDS)


def send_all(platform: Platform, model_id: int, count: int) -> list[tuple[float, int, int | None]]:
    """POST `count` predictions at once; return (seconds, status, prediction id) of each."""
    barrier = threading.Barrier(count)
    results: list[tuple[float, int, int | None]] = [(0.0, 0, None)] * count

    def one(index: int) -> None:
        with httpx.Client(timeout=TIMEOUT_SECONDS) as client:
            barrier.wait()
            started = time.monotonic()
            try:
                response = platform.predict(model_id, client, TIMEOUT_SECONDS)
                body = response.json() if response.status_code == 202 else {}
                results[index] = (time.monotonic() - started, response.status_code, body.get("id"))
            except httpx.HTTPError:
                results[index] = (time.monotonic() - started, 0, None)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def old_outcomes(posts: list[tuple[float, int, int | None]]) -> list:
    """The old design's results: 200 with the result (finished), anything else (failed)."""
    return [SimpleNamespace(status="SUCCESS" if s == 200 else "FAILURE") for _, s, _ in posts]


def wait_predictions(platform: Platform, ids: list[int], timeout: float) -> list:
    """Wait until every prediction's row ended (or the timeout); return the rows."""
    deadline = time.monotonic() + timeout
    rows = []
    while time.monotonic() < deadline:
        rows = [platform.row("prediction", i) for i in ids]
        if all(row.status in ENDED for row in rows):
            break
        time.sleep(0.2)
    return rows


def main() -> None:
    """Set up, load, print the figures, clean up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-db", type=int, default=5)
    parser.add_argument("--predictions", type=int, default=20)
    parser.add_argument("--light-clients", type=int, default=4)
    parser.add_argument("--prediction-concurrency", type=int, default=1)
    parser.add_argument("--source", type=Path, help="another checkout to run (the old design)")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    old = args.source is not None
    platform = open_platform(args.redis_db, "predload", *([args.source.resolve()] if old else []))
    try:
        platform.start_web()
        training = platform.start_worker("worker-training", "training", pool="threads")
        if not old:
            platform.start_worker(
                "worker-prediction", "prediction", concurrency=args.prediction_concurrency
            )
        model_id = platform.small_model()
        run_id = platform.train(algorithms=None)
        platform.wait_row("training_run", run_id, ("PROGRESS",), 600)
        os.kill(training.pid, signal.SIGSTOP)  # busy, as during a long training
        print(f"model {model_id}; training worker stopped mid-grid; load {load_average()}")
        light = LightLoad(platform, args.light_clients)
        light.start()
        time.sleep(2)  # the light GETs' own baseline first
        started = time.monotonic()
        posts = send_all(platform, model_id, args.predictions)
        ids = [pid for _, status, pid in posts if status == 202 and pid is not None]
        rows = wait_predictions(platform, ids, 600) if not old else old_outcomes(posts)
        all_done = time.monotonic() - started
        still_stopped = platform.row("training_run", run_id).status == "PROGRESS"
        time.sleep(2)
        light.finish()
        os.kill(training.pid, signal.SIGCONT)
        report(args, posts, rows, light.samples, all_done, still_stopped)
    finally:
        close_platform(platform, args.keep_logs)


def report(args, posts, rows, samples, all_done: float, still_stopped: bool) -> None:
    """Print the per-kind lines and the summary line."""
    post_ms = [1000 * seconds for seconds, _, _ in posts]
    statuses = sorted({status for _, status, _ in posts})
    finished = sum(row.status == "SUCCESS" for row in rows)
    failed = sum(row.status == "FAILURE" for row in rows)
    light_ms = np.array([1000 * seconds for seconds, status in samples if status == 200])
    errors = sum(status != 200 for _, status in samples)
    p95 = float(np.percentile(light_ms, 95)) if light_ms.size else float("nan")
    peak = float(light_ms.max()) if light_ms.size else float("nan")
    print(
        f"POST predict x{args.predictions}: statuses {statuses}, median "
        f"{np.median(post_ms):.0f} ms, max {max(post_ms):.0f} ms; rows: {finished} finished, "
        f"{failed} failed, all ended after {all_done:.1f} s; training run still stopped "
        f"mid-grid: {still_stopped}; load {load_average()}"
    )
    print(
        f"GET /feature-presets x{len(samples)} ({args.light_clients} clients): p50 "
        f"{np.percentile(light_ms, 50):.0f} ms, p95 {p95:.0f} ms, max {peak:.0f} ms, "
        f"errors/timeouts {errors}"
    )
    print(
        f"predict_load: predictions={args.predictions} "
        f"accepted={sum(s == 202 for _, s, _ in posts)} finished={finished} failed={failed} "
        f"post_max_ms={max(post_ms):.0f} all_done_s={all_done:.1f} light_gets={len(samples)} "
        f"light_errors={errors} light_p95_ms={p95:.0f} light_max_ms={peak:.0f}"
    )


if __name__ == "__main__":
    main()
