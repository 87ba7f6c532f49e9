"""engine.train inside a real `celery worker -Q training` process, per worker pool.

- prefork: Celery marks its pool processes daemonic, and joblib refuses to start loky
  processes from a daemonic process: it warns and runs everything on one core (the old
  backend flipped the daemon flag to get around this). The test pins that behaviour.
- threads (`-P threads -c 1`, the setting proposed for the training worker): the task runs
  in a thread of the non-daemonic worker process, loky starts its processes, and every
  progress event still comes from the task's own process.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from celery import Celery

from shared import jobs
from tests.support.live import ROOT, VENV_BIN
from tests.workers.training_probe import PROBE_TASK


def _start(pool: str, log) -> subprocess.Popen:
    """Start the probe worker on the training queue with one slot in the given pool."""
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [
                str(VENV_BIN / "celery"),
                "-A",
                "tests.workers.training_probe",
                "worker",
                "-Q",
                jobs.TRAINING_QUEUE,
                "-P",
                pool,
                "-c",
                "1",
                "-n",
                f"training-probe-{pool}-{os.getpid()}@%h",
                "--without-mingle",
                "--without-gossip",
                "-l",
                "INFO",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 120
    while b"ready." not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"worker did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return process


def _stop(process: subprocess.Popen) -> None:
    """Warm shutdown, then kill if it hangs."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module", params=["threads", "prefork"])
def probe(request, settings, live_db, tmp_path_factory):
    """Run the probe task once in a worker of the given pool; return (pool, worker pid, report)."""
    pool = request.param
    process = _start(pool, tmp_path_factory.mktemp(f"training-{pool}") / "worker.log")
    client = Celery("probe-client")
    client.config_from_object(jobs.celery_config(settings))
    try:
        report = client.send_task(PROBE_TASK, args=[2], queue=jobs.TRAINING_QUEUE).get(timeout=300)
    finally:
        client.close()
        _stop(process)
    print(f"{pool}: {report}")
    return pool, process.pid, report


def test_progress_events_come_from_the_task_process(probe):
    _, _, report = probe
    assert report["event_pids"] == [report["task_pid"]]
    assert report["n_outer"] == 10  # 5 outer folds x 2 repetitions
    assert report["n_events"] == report["n_steps"]


def test_loky_uses_two_processes_only_outside_prefork(probe):
    pool, worker_pid, report = probe
    if pool == "threads":
        assert report["task_pid"] == worker_pid and not report["daemon"]
        assert len(report["loky_pids"]) == 2 and worker_pid not in report["loky_pids"]
        assert report["warnings"] == []
    else:
        assert report["task_pid"] != worker_pid and report["daemon"]
        assert report["loky_pids"] == [report["task_pid"]]  # joblib fell back to one process
        assert report["warnings"]
