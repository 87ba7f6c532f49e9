"""The Celery edge and the heavy compute (extraction, training); compute modules are pure."""
