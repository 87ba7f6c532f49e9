"""Celery edge of predictions with a stored model (the `prediction` queue and worker)."""
