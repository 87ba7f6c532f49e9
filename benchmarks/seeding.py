"""Seed data shared by the API benchmarks (api_load.py, request_cost.py).

Four default presets and, for one owner, a 300-patient extraction (CT + PT vectors of the
PyRadiomics-style feature names of feature_table.py, one SUCCESS task per study) with a
classification outcome labelling every patient.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ALBUM = "bench-album"
N_PATIENTS = 300
MODALITIES = ("CT", "PT")
ROI = "GTV"


def seed(engine: Any, owner_sub: str) -> int:
    """Presets, a 300-patient extraction with CT and PT vectors, an outcome; return its id."""
    import feature_table  # benchmarks/feature_table.py: the feature name lists
    import sqlalchemy.orm as so

    from shared.db.base import utcnow
    from shared.extractions.models import ExtractionTask, FeatureExtraction
    from shared.features import storage
    from shared.presets import service as presets
    from tests.support.factories import make_outcome

    names = [f"original_shape_{f}" for f in feature_table.SHAPE.split()]
    names += [
        f"original_{c}_{f}" for c, feats in feature_table.CLASSES.items() for f in feats.split()
    ]
    rng = np.random.default_rng(8)
    with so.Session(engine) as session:
        presets.seed_default_presets(session)
        extraction = FeatureExtraction(
            user_id=owner_sub, album_id=ALBUM, album_name="Bench", config_yaml="{}", rois=[ROI]
        )
        session.add(extraction)
        session.flush()
        tasks = [
            ExtractionTask(
                feature_extraction_id=extraction.id,
                study_uid=f"1.2.826.0.9.{p}",
                patient_id=f"P{p:04d}",
                status="SUCCESS",
            )
            for p in range(N_PATIENTS)
        ]
        session.add_all(tasks)
        labels = {f"P{p:04d}": str(p % 2) for p in range(N_PATIENTS)}
        make_outcome(session, owner_sub, ALBUM, labels, "Outcome")
        session.commit()
        for task in tasks:
            vectors = [
                storage.VectorIn(m, ROI, names, rng.lognormal(0, 1, len(names)) * 100)
                for m in MODALITIES
            ]
            storage.store_study_vectors(
                session, extraction_id=extraction.id, task_id=task.id, vectors=vectors
            )
        extraction.finished_at = utcnow()  # every study succeeded, as the workers would stamp it
        session.commit()
        return extraction.id
