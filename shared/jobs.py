"""Task contracts: names, queues and enqueue helpers (send_task; no task code here).

Tasks take row ids only: never tokens or file paths (Flower shows task arguments). The web edge
only ever sends: nothing here waits for a task's result (issue #15 §8), so no request thread can
be held by a busy or absent worker. Results travel through the database rows and Socket.IO.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from shared import runtime
from shared.config import Settings

EXTRACTION_QUEUE = "extraction"
TRAINING_QUEUE = "training"
PREDICTION_QUEUE = "prediction"
EXTRACT_STUDY = "extraction.study"
TRAIN_MODEL = "training.run"
PREDICT = "prediction.run"

TASK_ROUTES = {
    "extraction.*": {"queue": EXTRACTION_QUEUE},
    "training.*": {"queue": TRAINING_QUEUE},
    # Its own queue and worker: a prediction never waits behind a training (ADR 0005).
    "prediction.*": {"queue": PREDICTION_QUEUE},
}


def celery_config(settings: Settings) -> dict[str, Any]:
    """Return the Celery configuration shared by the web app's client and the workers."""
    longest = max(
        settings.extraction_task_time_limit,
        settings.training_task_time_limit,
        settings.prediction_task_time_limit,
    )
    transport = {
        # Longer than any task may run: with late acks, a shorter visibility timeout would
        # hand a still-running task to a second worker. Tests of a killed worker shorten it.
        "visibility_timeout": settings.celery_visibility_timeout or longest + 600,
        "retry_on_timeout": True,
        "health_check_interval": 30,
        "socket_keepalive": True,
    }
    if settings.celery_visibility_timeout:
        # A short timeout is only useful if the unacked messages are also swept often
        # (kombu scans every 10 x 10 s by default).
        transport["unacked_restore_interval"] = max(1, settings.celery_visibility_timeout // 5)
        transport["unacked_restore_throttle"] = 1
    return {
        "broker_url": settings.celery_broker_url,
        # Celery lets a CELERY_BROKER_URL variable override broker_url, but not these two: the
        # settings decide (they read the same variable), so two apps of one process can differ.
        "broker_read_url": settings.celery_broker_url,
        "broker_write_url": settings.celery_broker_url,
        "result_backend": settings.celery_result_backend,
        "broker_transport_options": transport,
        "result_backend_transport_options": {"retry_on_timeout": True},
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_routes": TASK_ROUTES,
        "task_default_queue": EXTRACTION_QUEUE,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_track_started": True,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "result_expires": 24 * 3600,
        "task_ignore_result": False,
    }


def make_client(settings: Settings) -> Celery:
    """Build a send-only Celery client from settings (no connection is opened here)."""
    client = Celery("quantimage2")
    client.config_from_object(celery_config(settings))
    return client


def client() -> Celery:
    """Return the Celery client of the current app or worker, used to enqueue work."""
    return runtime.current().celery


def queue_of(name: str) -> str:
    """Return the queue a task name is routed to."""
    prefix = name.split(".", 1)[0]
    return TASK_ROUTES.get(f"{prefix}.*", {"queue": EXTRACTION_QUEUE})["queue"]


def send(name: str, *args: Any, task_id: str | None = None) -> str:
    """Enqueue a task by name; return its id (only the id: callers never wait on the result)."""
    return str(client().send_task(name, args=list(args), task_id=task_id).id)


def revoke(task_ids: list[str]) -> None:
    """Ask the workers to drop or stop tasks (a broadcast: nothing is awaited)."""
    client().control.revoke(task_ids, terminate=True)
