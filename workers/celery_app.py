"""The Celery application of the workers: configuration from shared settings, task modules.

Run: `celery -A workers.celery_app worker -Q extraction` (and `-Q training`).
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk
from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_ready
from threadpoolctl import threadpool_limits

from shared import events, jobs
from shared.config import get_settings
from shared.db import session as db_session
from shared.extractions import runs
from shared.modeling import runs as training_runs

log = logging.getLogger(__name__)

# Per-study scratch folders in the temp dir (created by the extraction task).
SCRATCH_PREFIX = "qi2-study-"

app = Celery("quantimage2", include=["workers.extraction.tasks", "workers.training.tasks"])
app.config_from_object(jobs.celery_config(get_settings()))


# Threads each pool process may use; set in the main process before the pool forks.
_threads_per_process = 1


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
    db_session.dispose()
    events.reset()
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


@worker_ready.connect
def _recover_lost_studies(**_kwargs: object) -> None:
    """Fail studies still marked running long after any task could have (a killed worker)."""
    limit = get_settings().extraction_task_time_limit + 600
    with db_session.session_scope() as session:
        extraction_ids = runs.fail_stale(session, older_than=dt.timedelta(seconds=limit))
        for extraction_id in set(extraction_ids):
            runs.finish_if_done(session, extraction_id=extraction_id)
    if extraction_ids:
        log.warning("failed %d studies left running by a lost worker", len(extraction_ids))


@worker_ready.connect
def _recover_lost_training_runs(sender: object = None, **_kwargs: object) -> None:
    """Fail training runs this worker left running before a restart (killed), and runs of any
    worker still marked running long after any run could have."""
    limit = get_settings().training_task_time_limit + 600
    hostname = getattr(sender, "hostname", None)
    with db_session.session_scope() as session:
        stale = training_runs.fail_orphaned(session, worker=hostname) if hostname else []
        stale += training_runs.fail_stale(session, older_than=dt.timedelta(seconds=limit))
        session.commit()
        for run in stale:
            training_runs.publish_failed(run)
    if stale:
        log.warning("failed %d training runs left running by a lost worker", len(stale))


@worker_ready.connect
def _remove_abandoned_scratch(**_kwargs: object) -> None:
    """Delete study folders left in the temp dir by killed workers (older than any task)."""
    cutoff = time.time() - get_settings().extraction_task_time_limit - 600
    for folder in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        try:
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # another worker removed it first
            continue
