"""Compact feature storage on MariaDB: replace semantics, name sets, races, the matrix read."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import numpy as np
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.errors import InvalidInput, NotFound
from shared.extractions.models import (
    ExtractionTask,
    FeatureExtraction,
    FeatureNameSet,
    FeatureVector,
)
from shared.features import storage
from shared.features.storage import VectorIn
from shared.features.table import feature_id
from shared.imaging.source import StudyInfo
from tests.support.factories import make_outcome, new_extraction

NAMES = ["original_firstorder_Mean", "original_glcm_Contrast", "original_shape_Volume"]


def make_extraction(
    session: so.Session, patients: list[str | None]
) -> tuple[FeatureExtraction, list[ExtractionTask]]:
    """Create an extraction with one task per entry of patients (None = no PatientID)."""
    studies = [
        StudyInfo(f"1.2.826.0.{uuid.uuid4().int % 10**12}.{i}", patient)
        for i, patient in enumerate(patients)
    ]
    extraction = new_extraction(session, rois=["GTV_T"], studies=studies)
    return extraction, list(extraction.tasks)


def store(session, extraction, task, *vectors: VectorIn) -> None:
    """Store vectors for a task."""
    storage.store_study_vectors(
        session, extraction_id=extraction.id, task_id=task.id, vectors=list(vectors)
    )


def vector_rows(session, task) -> list[FeatureVector]:
    """Return the stored vectors of a task."""
    return list(
        session.scalars(
            sa.select(FeatureVector).where(FeatureVector.feature_extraction_task_id == task.id)
        )
    )


# --- storing ----------------------------------------------------------------------------------


def test_float64_round_trip_is_exact(db):
    extraction, (task,) = make_extraction(db, ["P1"])
    values = np.array([0.1 + 0.2, -0.0, 1e-300, 5e-324, 1.7976931348623157e308, np.nan, -np.inf])
    names = [f"original_glcm_F{i}" for i in range(len(values))]
    store(db, extraction, task, VectorIn("CT", "GTV_T", names, values))
    matrix = storage.load_feature_matrix(db, extraction_id=extraction.id)
    assert matrix.names == sorted(names)
    loaded = matrix.values[0, [matrix.names.index(n) for n in names]]
    assert loaded.tobytes() == values.astype("<f8").tobytes()  # bit for bit, -0.0 and NaN too


def test_storing_again_replaces_and_is_idempotent(db):
    extraction, (task,) = make_extraction(db, ["P1"])
    first = [
        VectorIn("CT", "GTV_T", NAMES, [1.0, 2.0, 3.0]),
        VectorIn("PT", "GTV_T", NAMES, [4, 5, 6]),
    ]
    store(db, extraction, task, *first)
    store(db, extraction, task, *first)  # a late-acknowledged retry
    assert len(vector_rows(db, task)) == 2
    store(db, extraction, task, VectorIn("CT", "GTV_T", NAMES[:2], [7.0, 8.0]))  # a re-run
    rows = vector_rows(db, task)
    assert [(r.modality, r.roi) for r in rows] == [("CT", "GTV_T")]
    matrix = storage.load_feature_matrix(db, extraction_id=extraction.id)
    assert matrix.names == NAMES[:2]
    assert matrix.values.tolist() == [[7.0, 8.0]]


def test_name_sets_are_shared_by_digest(db):
    extraction, tasks = make_extraction(db, ["P1", "P2"])
    names = [f"original_ngtdm_{uuid.uuid4().hex}", *NAMES]
    for task in tasks:
        store(
            db,
            extraction,
            task,
            VectorIn("CT", "A", names, np.ones(4)),
            VectorIn("CT", "B", names, np.zeros(4)),
        )
    ids = {row.name_set_id for task in tasks for row in vector_rows(db, task)}
    assert len(ids) == 1
    name_set = db.get(FeatureNameSet, ids.pop())
    assert name_set.digest == storage.name_digest(sorted(names))  # stored sorted
    assert name_set.names.split("\n") == sorted(names)


def test_name_order_does_not_matter(db):
    extraction, (t1, t2) = make_extraction(db, ["P1", "P2"])
    store(db, extraction, t1, VectorIn("CT", "A", NAMES, [1.0, 2.0, 3.0]))
    store(db, extraction, t2, VectorIn("CT", "A", NAMES[::-1], [3.0, 2.0, 1.0]))
    assert vector_rows(db, t1)[0].name_set_id == vector_rows(db, t2)[0].name_set_id
    matrix = storage.load_feature_matrix(db, extraction_id=extraction.id)
    assert matrix.values.tolist() == [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]


def test_delete_task_vectors(db):
    extraction, (task,) = make_extraction(db, ["P1"])
    store(
        db,
        extraction,
        task,
        VectorIn("CT", "A", NAMES, [1, 2, 3]),
        VectorIn("CT", "B", NAMES, [1, 2, 3]),
    )
    assert storage.delete_task_vectors(db, task_id=task.id) == 2
    assert vector_rows(db, task) == []


@pytest.mark.parametrize(
    ("vectors", "message"),
    [
        ([VectorIn("CT", "A", NAMES, [1.0, 2.0])], "3 names but values"),
        ([VectorIn("CT", "A", ["a", "a"], [1.0, 2.0])], "duplicate feature names"),
        ([VectorIn("CT", "A", ["a\nb"], [1.0])], "single lines"),
        ([VectorIn("CT", "A", [], [])], "No feature names"),
        ([VectorIn("", "A", ["a"], [1.0])], "modality and an ROI"),
        ([VectorIn("CT", "A", ["a"], [1.0]), VectorIn("CT", "A", ["b"], [2.0])], "same"),
    ],
)
def test_malformed_vectors_are_rejected(db, vectors, message):
    extraction, (task,) = make_extraction(db, ["P1"])
    with pytest.raises(InvalidInput, match=message):
        storage.store_study_vectors(
            db, extraction_id=extraction.id, task_id=task.id, vectors=vectors
        )


def test_unknown_task_and_foreign_extraction(db):
    extraction, (task,) = make_extraction(db, ["P1"])
    other, _ = make_extraction(db, ["P2"])
    vectors = [VectorIn("CT", "A", ["a"], [1.0])]
    with pytest.raises(NotFound):
        storage.store_study_vectors(db, extraction_id=extraction.id, task_id=-1, vectors=vectors)
    with pytest.raises(InvalidInput, match="does not belong"):
        storage.store_study_vectors(db, extraction_id=other.id, task_id=task.id, vectors=vectors)


# --- concurrent workers -----------------------------------------------------------------------


@pytest.fixture
def committed(engine):
    """Sessions on real transactions; removes what the test committed afterwards."""
    sessions: list[so.Session] = []
    created: dict[str, list] = {"extractions": [], "digests": []}

    def new() -> so.Session:
        session = so.Session(engine)
        sessions.append(session)
        return session

    yield new, created
    for session in sessions:
        session.rollback()
        session.close()
    with so.Session(engine) as cleanup:
        cleanup.execute(
            sa.delete(FeatureExtraction).where(FeatureExtraction.id.in_(created["extractions"]))
        )
        cleanup.execute(
            sa.delete(FeatureNameSet).where(FeatureNameSet.digest.in_(created["digests"]))
        )
        cleanup.commit()


def two_committed_tasks(new, created) -> tuple[int, int, int]:
    """Commit an extraction with two tasks; return (extraction id, task a, task b)."""
    with new() as session:
        extraction, (a, b) = make_extraction(session, ["P1", "P2"])
        session.commit()
        created["extractions"].append(extraction.id)
        return extraction.id, a.id, b.id


def test_name_set_race_with_an_older_snapshot_reuses_the_winner(committed, caplog):
    new, created = committed
    extraction_id, task_a, task_b = two_committed_tasks(new, created)
    names = sorted([f"original_glszm_{uuid.uuid4().hex}", *NAMES])
    created["digests"].append(storage.name_digest(names))
    late = new()
    late.execute(sa.select(FeatureNameSet.id).limit(1)).all()  # its snapshot predates the insert
    with new() as first:
        storage.store_study_vectors(
            first,
            extraction_id=extraction_id,
            task_id=task_a,
            vectors=[VectorIn("CT", "GTV", names, np.ones(4))],
        )
        first.commit()
    caplog.set_level(logging.DEBUG, logger="shared.features.storage")
    storage.store_study_vectors(
        late,
        extraction_id=extraction_id,
        task_id=task_b,
        vectors=[VectorIn("CT", "GTV", names, np.zeros(4))],
    )
    late.commit()
    assert "inserted concurrently" in caplog.text
    with new() as check:
        ids = check.scalars(
            sa.select(FeatureVector.name_set_id).where(
                FeatureVector.feature_extraction_id == extraction_id
            )
        ).all()
        count = check.scalar(
            sa.select(sa.func.count())
            .select_from(FeatureNameSet)
            .where(FeatureNameSet.digest == storage.name_digest(names))
        )
    assert len(ids) == 2 and len(set(ids)) == 1 and count == 1


def test_concurrent_workers_storing_a_new_name_set_both_succeed(committed):
    new, created = committed
    extraction_id, task_a, task_b = two_committed_tasks(new, created)
    names = sorted([f"original_gldm_{uuid.uuid4().hex}", *NAMES])
    created["digests"].append(storage.name_digest(names))
    first, second = new(), new()
    storage.store_study_vectors(
        first,
        extraction_id=extraction_id,
        task_id=task_a,
        vectors=[VectorIn("CT", "GTV", names, np.ones(4))],
    )
    errors: list[BaseException] = []

    def worker() -> None:
        try:  # blocks on the first worker's uncommitted name set until it commits
            storage.store_study_vectors(
                second,
                extraction_id=extraction_id,
                task_id=task_b,
                vectors=[VectorIn("CT", "GTV", names, np.zeros(4))],
            )
            second.commit()
        except BaseException as exc:  # reported to the test thread below
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    time.sleep(0.5)
    first.commit()
    thread.join(timeout=30)
    assert not thread.is_alive() and errors == []
    with new() as check:
        ids = check.scalars(
            sa.select(FeatureVector.name_set_id).where(
                FeatureVector.feature_extraction_id == extraction_id
            )
        ).all()
    assert len(ids) == 2 and len(set(ids)) == 1


def test_two_deliveries_of_one_task_serialise_and_the_last_one_wins(committed):
    new, created = committed
    extraction_id, task_a, _ = two_committed_tasks(new, created)
    first, second = new(), new()
    storage.store_study_vectors(
        first,
        extraction_id=extraction_id,
        task_id=task_a,
        vectors=[VectorIn("CT", "GTV", NAMES, [1.0, 1.0, 1.0])],
    )
    errors: list[BaseException] = []

    def redelivery() -> None:
        try:  # waits for the first delivery's lock on the task row
            storage.store_study_vectors(
                second,
                extraction_id=extraction_id,
                task_id=task_a,
                vectors=[VectorIn("CT", "GTV", NAMES, [2.0, 2.0, 2.0])],
            )
            second.commit()
        except BaseException as exc:  # reported to the test thread below
            errors.append(exc)

    thread = threading.Thread(target=redelivery)
    thread.start()
    time.sleep(0.3)
    first.commit()
    thread.join(timeout=30)
    assert not thread.is_alive() and errors == []
    with new() as check:
        matrix = storage.load_feature_matrix(check, extraction_id=extraction_id)
    assert matrix.values.tolist() == [[2.0, 2.0, 2.0]]


# --- loading ----------------------------------------------------------------------------------


def test_load_builds_the_union_sorted_with_padding(db):
    extraction, (t1, t2, _) = make_extraction(db, ["P2", "P1", "P3"])
    store(
        db,
        extraction,
        t1,
        VectorIn("CT", "GTV_T", NAMES, [1.0, 2.0, 3.0]),
        VectorIn("PT", "GTV_T", ["original_firstorder_SUVmax", *NAMES], [9.0, 4, 5, 6]),
    )
    store(db, extraction, t2, VectorIn("CT", "GTV_T", NAMES[::-1], [30.0, 20.0, 10.0]))
    matrix = storage.load_feature_matrix(db, extraction_id=extraction.id)
    assert matrix.names == sorted([*NAMES, "original_firstorder_SUVmax"])
    assert list(zip(matrix.patient_ids, matrix.modalities, matrix.rois, strict=True)) == [
        ("P1", "CT", "GTV_T"),
        ("P2", "CT", "GTV_T"),
        ("P2", "PT", "GTV_T"),
    ]
    frame = matrix.to_frame().set_index(["PatientID", "Modality"])
    assert frame.loc[("P1", "CT"), "original_firstorder_Mean"] == 10.0  # names reordered
    assert frame.loc[("P1", "CT"), "original_shape_Volume"] == 30.0
    assert np.isnan(frame.loc[("P2", "CT"), "original_firstorder_SUVmax"])
    assert frame.loc[("P2", "PT"), "original_firstorder_SUVmax"] == 9.0
    assert matrix.patients_without_values == ["P3"]
    assert matrix.study_uids[0] == t2.study_uid
    assert matrix.warnings == []


def test_several_studies_of_a_patient_are_not_averaged(db):
    extraction, (old, new, failed) = make_extraction(db, ["P1", "P1", "P1"])
    store(db, extraction, old, VectorIn("CT", "GTV_T", NAMES, [1.0, 1.0, 1.0]))
    store(db, extraction, new, VectorIn("CT", "GTV_T", NAMES, [3.0, 3.0, 3.0]))
    matrix = storage.load_feature_matrix(db, extraction_id=extraction.id)
    assert matrix.values.tolist() == [[3.0, 3.0, 3.0]]  # the latest task, not the mean 2.0
    assert matrix.study_uids == [new.study_uid]
    assert len(matrix.warnings) == 1
    assert new.study_uid in matrix.warnings[0] and old.study_uid in matrix.warnings[0]
    assert failed.study_uid not in matrix.warnings[0]
    assert matrix.patients_without_values == []


def test_studies_without_patient_id_are_reported(db):
    extraction, (task, failed) = make_extraction(db, [None, None])
    store(db, extraction, task, VectorIn("CT", "GTV_T", NAMES, [1.0, 2.0, 3.0]))
    matrix = storage.load_feature_matrix(db, extraction_id=extraction.id)
    assert matrix.patient_ids == [task.study_uid]  # values are never dropped silently
    assert matrix.patients_without_values == []  # a UID is no patient to pad
    assert len(matrix.warnings) == 2
    assert "no PatientID" in matrix.warnings[0] and task.study_uid in matrix.warnings[0]
    assert "not padded" in matrix.warnings[1] and failed.study_uid in matrix.warnings[1]


def test_load_restricted_to_collection_feature_ids(db):
    extraction, (t1, t2) = make_extraction(db, ["P1", "P2"])
    store(
        db,
        extraction,
        t1,
        VectorIn("CT", "GTV_T", NAMES, [1.0, 2.0, 3.0]),
        VectorIn("PT", "GTV_T", NAMES, [4.0, 5.0, 6.0]),
        VectorIn("CT", "GTV_N", NAMES, [7.0, 8.0, 9.0]),
    )
    store(db, extraction, t2, VectorIn("CT", "GTV_N", NAMES, [7.0, 8.0, 9.0]))
    wanted = [
        feature_id("CT", "GTV_T", "original_firstorder_Mean"),
        feature_id("PT", "GTV_T", "original_shape_Volume"),
        feature_id("PT", "GTV_T", "original_unknown"),
        "Age",  # a clinical feature: not the storage's business
    ]
    matrix = storage.load_feature_matrix(db, extraction_id=extraction.id, feature_ids=wanted)
    assert matrix.names == ["original_firstorder_Mean", "original_shape_Volume"]
    assert list(zip(matrix.patient_ids, matrix.modalities, strict=True)) == [
        ("P1", "CT"),
        ("P1", "PT"),
    ]
    assert matrix.values[0, 0] == 1.0 and np.isnan(matrix.values[0, 1])
    assert np.isnan(matrix.values[1, 0]) and matrix.values[1, 1] == 6.0
    assert matrix.patients_without_values == ["P2"]  # nothing selected for P2: padded


def test_load_of_an_extraction_without_values(db):
    extraction, _ = make_extraction(db, ["P1", "P2"])
    matrix = storage.load_feature_matrix(db, extraction_id=extraction.id)
    assert matrix.values.shape == (0, 0)
    assert matrix.patients_without_values == ["P1", "P2"]


def test_load_outcome_reads_type_and_labels(db):
    labels = {"P1": {"Time": "10", "Event": "1"}, "P2": {"Time": "", "Event": "Undefined"}}
    category = make_outcome(db, "user-bob", "album-1", labels, "OS", label_type="Survival")
    outcome = storage.load_outcome(db, label_category_id=category.id)
    assert outcome.label_type == "Survival"
    assert outcome.usable_targets() == {"P1": "1"}
    assert storage.load_outcome(db, label_category_id=-1) is None
