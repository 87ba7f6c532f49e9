"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

import redis
import sqlalchemy as sa
from flask import Blueprint, current_app

from webapp.auth import public
from webapp.db import get_session

bp = Blueprint("health", __name__)


@bp.get("/")
@public
def liveness() -> dict[str, str]:
    """Answer that the API process is up (no dependency is touched)."""
    return {"status": "QuantImage v2 Backend is running"}


@bp.get("/health/ready")
@public
def readiness() -> tuple[dict[str, Any], int]:
    """Check that MySQL and Redis answer; 503 when one does not."""
    checks = {"database": _check_database(), "redis": _check_redis()}
    ready = all(value == "ok" for value in checks.values())
    return {"status": "ready" if ready else "unavailable", "checks": checks}, 200 if ready else 503


def _check_database() -> str:
    """Run SELECT 1 on the request's session."""
    try:
        get_session().execute(sa.text("SELECT 1"))
    except Exception as exc:  # report, do not raise: this is a probe
        return f"error: {type(exc).__name__}"
    return "ok"


def _check_redis() -> str:
    """PING the broker Redis."""
    settings = current_app.config["SETTINGS"]
    try:
        client = redis.Redis.from_url(settings.celery_broker_url, socket_timeout=2)
        client.ping()
        client.close()
    except Exception as exc:  # report, do not raise: this is a probe
        return f"error: {type(exc).__name__}"
    return "ok"
