"""Feature extractions: one run over an album's studies, with one task row per study.

The rows are the truth for status, progress and errors; Celery only transports the work.
"""
