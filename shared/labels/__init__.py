"""Outcomes (label categories) of an album and the per-patient labels."""
