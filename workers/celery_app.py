"""The Celery application of the workers: configuration from shared settings, task modules.

Run: `celery -A workers.celery_app worker -Q extraction` (and `-Q training`, `-Q prediction`).
The module builds the Celery app from the worker's settings; the worker's runtime (sessions,
task client, event publisher) is built from the same settings when the worker starts.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import SimpleITK as sitk
from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_ready
from threadpoolctl import threadpool_limits

from shared import bootstrap, jobs, lifecycle, lost_messages, preflight, runtime
from shared.config import Settings, get_settings
from shared.extractions import completion, runs
from shared.modeling import predictions
from shared.modeling import runs as training_runs

log = logging.getLogger(__name__)

# Seconds a sweep waits for the workers to list their running tasks.
ORPHAN_INSPECT_TIMEOUT = 2.0

# Per-study scratch folders in the temp dir (created by the extraction task).
SCRATCH_PREFIX = "qi2-study-"

TASK_MODULES = ["workers.extraction.tasks", "workers.training.tasks", "workers.prediction.tasks"]


class WorkerApp(Celery):
    """The workers' Celery app, keeping the settings it was configured from."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("quantimage2", include=TASK_MODULES)
        self.settings = settings
        self.config_from_object({**jobs.celery_config(settings), **task_limits(settings)})


def task_limits(settings: Settings) -> dict[str, Any]:
    """Each task's soft and hard time limits, from settings (Celery task annotations)."""
    extraction = settings.extraction_task_time_limit
    training = settings.training_task_time_limit
    prediction = settings.prediction_task_time_limit
    return {
        "task_annotations": {
            jobs.EXTRACT_STUDY: {"soft_time_limit": extraction - 60, "time_limit": extraction},
            jobs.TRAIN_MODEL: {"soft_time_limit": training - 60, "time_limit": training},
            jobs.PREDICT: {
                "soft_time_limit": max(1, prediction - 30),
                "time_limit": prediction,
            },
        }
    }


# `celery -A workers.celery_app` imports this module: the one place a worker reads its settings.
app = WorkerApp(get_settings())


# Threads each pool process may use; set in the main process before the pool forks.
_threads_per_process = 1


# Exit status of a worker whose start-up checks failed (Celery's own errors use 1).
STARTUP_CHECK_FAILED = 3


@worker_init.connect
def _check_services(sender: object = None, **_kwargs: object) -> None:
    """Stop at once, with one readable line, when a service refuses this worker's credentials.

    Runs before the worker connects to the broker: Celery would otherwise retry a refused Redis
    password for ever. SystemExit passes through Celery's signal dispatch (which swallows
    ordinary exceptions), so the process exits non-zero.
    """
    try:
        preflight.check_worker(app.settings, reads_images=_consumes(sender, jobs.EXTRACTION_QUEUE))
    except preflight.CheckFailed as exc:
        message = f"worker start-up check failed: {exc}"
        log.critical(message)
        print(message, file=sys.stderr, flush=True)
        raise SystemExit(STARTUP_CHECK_FAILED) from None


def _consumes(worker: object, queue: str) -> bool:
    """Tell whether a starting worker reads a queue (`-Q`); no list means every queue."""
    app_ = getattr(worker, "app", None)
    selected = getattr(getattr(getattr(app_, "amqp", None), "queues", None), "consume_from", None)
    return not selected or queue in selected


@worker_init.connect
def _build_runtime(**_kwargs: object) -> None:
    """Build the worker's sessions, task client and event publisher from its settings."""
    runtime.install(bootstrap.build(app.settings))


@worker_init.connect
def _share_cores(sender: object = None, **_kwargs: object) -> None:
    """Split the usable cores between the pool processes (`-c 2` on 2 cores: 1 each)."""
    global _threads_per_process
    concurrency = getattr(sender, "concurrency", None)
    if isinstance(concurrency, int) and concurrency > 0:
        _threads_per_process = max(1, usable_cores() // concurrency)


@worker_process_init.connect
def _after_fork(**_kwargs: object) -> None:
    """A forked child must not reuse the parent's pooled MySQL or Redis connections."""
    runtime.current().after_fork()
    prepare_compute_process(_threads_per_process)


def prepare_compute_process(threads: int) -> None:
    """Set a pool process up for long computations: capped threads, a frozen GC."""
    limit_threads(threads)
    # What is loaded by now lives as long as the process. Frozen, the collector stops walking
    # those ~300k objects on each pass: DICOM parsing allocates enough to trigger many.
    gc.freeze()


def usable_cores() -> int:
    """Return the number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def limit_threads(count: int) -> None:
    """Cap the threads SimpleITK, BLAS and OpenMP start in this process.

    Each library defaults to one thread per core: with several pool processes that
    oversubscribes the machine, and two extraction workers ran barely faster than one.
    """
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(count)
    threadpool_limits(limits=count)
    # For OpenMP runtimes loaded later in this process (already loaded ones are capped above).
    os.environ["OMP_NUM_THREADS"] = str(count)
    log.info("worker process %d: %d thread(s) per library", os.getpid(), count)


def time_limits(settings: Settings) -> list[tuple[lifecycle.Kind, int]]:
    """Return each kind of job with its task's time limit."""
    return [
        (runs.STUDY, settings.extraction_task_time_limit),
        (training_runs.TRAINING, settings.training_task_time_limit),
        (predictions.PREDICTION, settings.prediction_task_time_limit),
    ]


@worker_ready.connect
def _recover_lost_jobs(sender: object = None, **_kwargs: object) -> None:
    """Fail the jobs this worker left running before a restart (it was killed), and those of
    any worker still marked running long after any could have; announce them."""
    worker = getattr(sender, "hostname", None)
    for kind, limit in time_limits(runtime.current().settings):
        lifecycle.recover(kind, worker=worker, time_limit=limit)


@worker_ready.connect
def _start_orphan_sweep(sender: object = None, **_kwargs: object) -> None:
    """Sweep for studies of dead workers now and then, in a thread of the main process."""
    _every(
        runtime.current().settings.extraction_orphan_sweep_seconds, "orphan-sweep", sweep_orphans
    )


def _every(interval: float, name: str, *sweeps: Callable[[], object]) -> None:
    """Run the sweeps every interval in a daemon thread (none when the interval is 0)."""
    if interval > 0:
        threading.Thread(target=_forever, args=(interval, sweeps), name=name, daemon=True).start()


def _forever(interval: float, sweeps: tuple[Callable[[], object], ...]) -> None:
    """Run each sweep every interval; a failed sweep is logged and tried again next round."""
    while True:
        time.sleep(interval)
        for sweep in sweeps:
            try:
                sweep()
            except Exception as exc:  # the broker or database is away: next round
                log.warning("%s failed: %s", sweep.__name__, exc)


def sweep_orphans() -> list[int]:
    """Re-queue studies whose message only a dead worker held (a worker killed whole).

    Without this, the broker hands a killed worker's messages out again only after its
    visibility timeout, which must outlast the longest task (hours). Candidates are read
    first, then the live workers list what they execute or hold; if none answers, nothing
    is done.
    """
    held = _unacked_task_ids()
    candidates = completion.orphan_candidates(held)
    if not candidates:
        return []
    inspector = app.control.inspect(timeout=ORPHAN_INSPECT_TIMEOUT)
    active, reserved = inspector.active(), inspector.reserved()
    if not active or reserved is None:  # nobody answered, not even this worker: do not guess
        return []
    live = {
        task["id"]
        for replies in (active, reserved)
        for tasks in replies.values()
        for task in tasks or []
    }
    return completion.requeue_orphans(candidates, live)


def _unacked_task_ids() -> set[str]:
    """Return the Celery ids of messages the broker (Redis) handed out and nobody acked yet."""
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        values = channel.client.hvals(channel.unacked_key)
    return {task_id for value in values if (task_id := _task_id(json.loads(value)[0]))}


def _task_id(message: dict) -> str | None:
    """Return the Celery id a broker message carries."""
    return (message.get("headers") or {}).get("id")


def broker_task_ids(queues: list[str]) -> set[str]:
    """Return the Celery ids the broker holds: waiting in the queues (every priority list of
    each) or handed out and not acknowledged. One MULTI block: a consistent snapshot."""
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        steps = channel.priority_steps
        names = [channel._q_for_pri(queue, pri) for queue in queues for pri in steps]
        pipe = channel.client.pipeline(transaction=True)
        for name in dict.fromkeys(names):
            pipe.lrange(name, 0, -1)
        pipe.hvals(channel.unacked_key)
        *waiting, unacked = pipe.execute()
    held = {_task_id(json.loads(raw)) for values in waiting for raw in values}
    held |= {_task_id(json.loads(raw)[0]) for raw in unacked}
    return {task_id for task_id in held if task_id}


# --- jobs whose broker message was lost, or whose worker went silent -------------------------

KINDS = (runs.STUDY, training_runs.TRAINING, predictions.PREDICTION)


@worker_ready.connect
def _start_lost_message_sweep(sender: object = None, **_kwargs: object) -> None:
    """Look for queued jobs whose message was lost, and running jobs whose worker went silent,
    now and then, in a thread of the main process."""
    interval = runtime.current().settings.lost_message_sweep_seconds
    _every(interval, "lost-message-sweep", sweep_lost_messages, sweep_silent_jobs)


def sweep_lost_messages() -> dict[str, list[str]]:
    """Send again (once), or fail, the PENDING jobs whose message the broker lost."""
    older_than = dt.timedelta(seconds=runtime.current().settings.lost_message_after_seconds)
    return lost_messages.sweep(KINDS, broker_task_ids, older_than=older_than)


def sweep_silent_jobs() -> list[int]:
    """Fail, and announce, the running jobs whose worker stopped its heartbeat (host lost)."""
    older_than = dt.timedelta(seconds=runtime.current().settings.silent_after_seconds)
    return [
        row_id
        for kind in KINDS
        if kind.beats
        for row_id in lifecycle.sweep_silent(kind, older_than=older_than)
    ]


@worker_ready.connect
def _remove_abandoned_scratch(**_kwargs: object) -> None:
    """Delete study folders left in the temp dir by killed workers (older than any task)."""
    cutoff = time.time() - runtime.current().settings.extraction_task_time_limit - 600
    for folder in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        try:
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # another worker removed it first
            continue
