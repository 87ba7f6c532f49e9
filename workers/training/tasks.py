"""Celery edge of model training."""

from __future__ import annotations
