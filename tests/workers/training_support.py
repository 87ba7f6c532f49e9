"""Helpers for the training tests: an extracted synthetic cohort and small synthetic tables."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from devkit.synthetic import PatientTruth, write_cohort
from shared.presets.config_schema import validate_config
from workers.extraction.pipeline import extract_study
from workers.training.engine import TrainingData

# First-order + GLCM with a fine bin width: enough texture features to see the hidden risk,
# ~40 features per patient, ~0.1 s per patient.
TEXTURE = {
    "featureClass": {"firstorder": None, "glcm": None},
    "setting": {"binWidth": 5, "label": 1},
}


@functools.cache
def extracted_cohort(n_patients: int = 100, seed: int = 11) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write a synthetic DICOM + RTSTRUCT cohort, extract it; return (features, truth).

    Cached per process: the whole test session pays for the extraction once.
    """
    config = validate_config({"feature_extraction": {"CT": {"pyradiomics": {"texture": TEXTURE}}}})
    with tempfile.TemporaryDirectory(prefix="qi2-training-cohort-") as folder:
        root = Path(folder)
        truths = write_cohort(root, n_patients, seed=seed)
        rows = {}
        for truth in truths:
            result = extract_study(root / truth.patient_id, config, ["GTV"])
            (vector,) = result.vectors
            rows[truth.patient_id] = dict(zip(vector.names, vector.values, strict=True))
    features = pd.DataFrame.from_dict(rows, orient="index").add_prefix("CT-GTV-")
    return features, _truth_table(truths)


def _truth_table(truths: list[PatientTruth]) -> pd.DataFrame:
    """Return the ground truth indexed by patient id."""
    return pd.DataFrame(
        {
            "label": [str(t.outcome) for t in truths],
            "time": [t.time for t in truths],
            "event": [bool(t.event) for t in truths],
            "risk": [t.risk for t in truths],
        },
        index=[t.patient_id for t in truths],
    )


def make_data(
    kind: str,
    features: pd.DataFrame,
    outcome: pd.DataFrame,
    train: list[str],
    test: list[str] | None = None,
    clinical: tuple = (),
    positive_class: str | None = None,
    seed: int = 42,
) -> TrainingData:
    """Build TrainingData with the outcome columns of its kind."""
    columns = ["label"] if kind == "classification" else ["time", "event"]
    return TrainingData(
        kind=kind,
        features=features,
        clinical=tuple(clinical),
        outcome=outcome[columns],
        positive_class=positive_class,
        training_patients=tuple(train),
        test_patients=None if test is None else tuple(test),
        seed=seed,
    )


def noise_table(n_patients: int, n_features: int, seed: int) -> pd.DataFrame:
    """Pure-noise radiomics-like features for n patients."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        rng.normal(size=(n_patients, n_features)),
        index=[f"N{i:03d}" for i in range(n_patients)],
        columns=[f"CT-GTV-noise{j}" for j in range(n_features)],
    )


class Events:
    """A progress callback that records what it is called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def __call__(self, phase: str, **details: object) -> None:
        self.calls.append((phase, details))

    def count(self, phase: str) -> int:
        """Return how many calls had this phase."""
        return sum(1 for p, _ in self.calls if p == phase)
