"""Flower configuration for QuantImage v2: `celery flower --conf=/app/flowerconfig.py`.

Flower executes this file and takes every global whose name is a Flower option. It overrides
Flower's own FLOWER_* environment variables, so it reads the same names itself:

- the broker comes from CELERY_BROKER_URL (read by Celery; checked here so a missing one fails
  at start-up instead of silently monitoring amqp://localhost);
- basic auth is mandatory: FLOWER_BASIC_AUTH (``user:password``, comma-separated for several)
  or the file FLOWER_BASIC_AUTH_FILE (default /run/secrets/flower-basic-auth, one
  ``user:password`` per line). Without credentials Flower does not start;
- FLOWER_URL_PREFIX serves Flower under /<prefix>/ (behind a proxy on a shared host name);
- FLOWER_PERSISTENT (off by default) keeps the task history in FLOWER_DB across restarts;
- FLOWER_PORT (3333), FLOWER_ADDRESS (0.0.0.0), FLOWER_XHEADERS (trust X-Forwarded-* from a
  proxy; off by default), FLOWER_MAX_TASKS (10000 tasks kept in memory).
"""

from __future__ import annotations

import os
from pathlib import Path

MIN_PASSWORD_LENGTH = 12
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _flag(name: str, default: bool) -> bool:
    """Read a boolean environment variable."""
    value = os.environ.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise SystemExit(f"flowerconfig: {name}={value!r} is not a boolean")


def _credentials() -> list[str]:
    """Collect the user:password pairs from the environment or the secret file."""
    raw = os.environ.get("FLOWER_BASIC_AUTH", "").replace(",", "\n")
    if not raw.strip():
        path = Path(os.environ.get("FLOWER_BASIC_AUTH_FILE", "/run/secrets/flower-basic-auth"))
        if path.is_file():
            raw = path.read_text(encoding="utf-8")
    pairs = [line.strip() for line in raw.splitlines() if line.strip()]
    if not pairs:
        raise SystemExit(
            "flowerconfig: basic auth is required. Put user:password in the Docker secret "
            "flower-basic-auth (secrets/flower-basic-auth) or in FLOWER_BASIC_AUTH."
        )
    for pair in pairs:
        user, sep, password = pair.partition(":")
        if not sep or not user or len(password) < MIN_PASSWORD_LENGTH:
            raise SystemExit(
                "flowerconfig: each credential must be user:password with a password of at "
                f"least {MIN_PASSWORD_LENGTH} characters"
            )
    return pairs


if not os.environ.get("CELERY_BROKER_URL"):
    raise SystemExit("flowerconfig: CELERY_BROKER_URL is not set (e.g. redis://redis:6379/0)")

# Flower options (tornado reads these globals by name).
basic_auth = _credentials()
port = int(os.environ.get("FLOWER_PORT", "3333"))
address = os.environ.get("FLOWER_ADDRESS", "0.0.0.0")
url_prefix = os.environ.get("FLOWER_URL_PREFIX", "").strip("/")
persistent = _flag("FLOWER_PERSISTENT", False)
db = os.environ.get("FLOWER_DB", "/var/lib/flower/flower.db")
xheaders = _flag("FLOWER_XHEADERS", False)
max_tasks = int(os.environ.get("FLOWER_MAX_TASKS", "10000"))
