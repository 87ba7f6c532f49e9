"""Feature storage: one packed float64 vector per (study task, modality, ROI).

Feature names are stored once per distinct name list and shared by every vector that uses it.
"""
