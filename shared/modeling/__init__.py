"""Modeling: training runs (status rows) and the trained models with their metrics."""
