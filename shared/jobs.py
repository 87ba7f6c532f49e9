"""Task contracts: names, queues and enqueue helpers (send_task; no task code here).

Tasks take row ids only: never tokens or file paths (Flower shows task arguments).
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery

from shared.config import Settings, get_settings

EXTRACTION_QUEUE = "extraction"
TRAINING_QUEUE = "training"
EXTRACT_STUDY = "extraction.study"
TRAIN_MODEL = "training.run"
PREDICT = "training.predict"
RECOVER_STALE = "extraction.recover_stale"

TASK_ROUTES = {
    "extraction.*": {"queue": EXTRACTION_QUEUE},
    "training.*": {"queue": TRAINING_QUEUE},
}

_client: Celery | None = None
_lock = threading.Lock()


def celery_config(settings: Settings) -> dict[str, Any]:
    """Return the Celery configuration shared by the web app's client and the workers."""
    longest = max(settings.extraction_task_time_limit, settings.training_task_time_limit)
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


def client() -> Celery:
    """Return the process-wide Celery client used to enqueue work."""
    global _client
    with _lock:
        if _client is None:
            _client = Celery("quantimage2")
            _client.config_from_object(celery_config(get_settings()))
        return _client


def send(name: str, *args: Any, task_id: str | None = None) -> str:
    """Enqueue a task by name; return its id."""
    return client().send_task(name, args=list(args), task_id=task_id).id


def call(name: str, *args: Any, timeout: float) -> Any:
    """Run a task and wait for its JSON result (at most `timeout` seconds); errors propagate."""
    result = client().send_task(name, args=list(args))
    try:
        return result.get(timeout=timeout, propagate=True, disable_sync_subtasks=False)
    finally:
        result.forget()
