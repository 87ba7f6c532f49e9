"""Worker-side extraction rules of a study's own: its inputs, its credential, the extraction's
end, the order of queueing, and the orphan sweep. The rules every job shares (attempts, refusals,
sweeps) are tested on studies in test_lifecycle.py."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from shared import lifecycle
from shared.db.base import utcnow
from shared.extractions import completion, flows, runs, service
from shared.extractions.models import ExtractionTask, FeatureExtraction, WorkerCredential
from shared.imaging.source import StudyInfo
from tests.support.factories import new_extraction


def make_extraction(
    db, n: int = 2, credential_id: int | None = None, studies: list[StudyInfo] | None = None
) -> FeatureExtraction:
    """An extraction of n studies (or of the given ones)."""
    return new_extraction(
        db,
        config_yaml="feature_extraction: {}\n",
        studies=studies or [StudyInfo(f"1.2.3.{i}", f"P{i}") for i in range(n)],
        credential_id=credential_id,
    )


def claim(db, task: ExtractionTask, celery_id: str | None = None) -> runs.StudyJob:
    """Claim a study for its message (or `celery_id`) and read its inputs, as the worker does."""
    claimed = lifecycle.claim(
        db, runs.STUDY, row_id=task.id, celery_id=celery_id or task.task_id, worker="w@a"
    )
    assert claimed is task
    return runs.study_job(db, task)


def test_claim_marks_started_and_returns_plain_inputs(db):
    extraction = make_extraction(db)
    task = extraction.tasks[0]
    job = claim(db, task)
    assert job.study_uid == "1.2.3.0" and job.attempt == 1 and job.extraction_id == extraction.id
    assert task.status == "STARTED"
    assert job.credential is None


def test_a_cancel_between_reading_and_updating_a_task_is_a_cancel(db):
    # ./qi2 fuzz cancelled extractions while their studies ran: the task row went away between
    # progress()'s read and its UPDATE, a StaleDataError logged as an unexpected study failure.
    task = make_extraction(db).tasks[0]
    # Deleted behind the session's back, as another process does: the session still holds it.
    table = ExtractionTask.__table__
    db.connection().execute(sa.delete(table).where(table.c.id == task.id))
    assert runs.progress(db, task_row_id=task.id, step=2, message="Storing") is None
    db.rollback()


def test_extraction_finishes_when_every_study_ended_even_with_failures(db):
    extraction = make_extraction(db, n=2)
    first, second = extraction.tasks
    runs.succeed(db, task_row_id=first.id, patient_id="P0", warnings=[])
    assert completion.finish_if_done(db, extraction_id=extraction.id) is None
    lifecycle.fail(db, runs.STUDY, second, "No contours")
    finished = completion.finish_if_done(db, extraction_id=extraction.id)
    assert finished is not None and finished.finished_at is not None
    status = service.compute_status(finished)
    assert status.ready and status.failed and not status.successful
    assert completion.finish_if_done(db, extraction_id=extraction.id) is None  # only once


def test_credential_is_looked_up_by_id_and_dropped_at_the_end(db):
    credential = WorkerCredential(
        user_id="user-bob",
        source="kheops",
        album_id="album-1",
        external_id="cap-1",
        secret="s3cret",
        expires_at=utcnow() + dt.timedelta(hours=1),
    )
    db.add(credential)
    db.flush()
    extraction = make_extraction(db, n=1, credential_id=credential.id)
    job = claim(db, extraction.tasks[0])
    assert job.credential == "s3cret"
    runs.succeed(db, task_row_id=extraction.tasks[0].id, patient_id="P0", warnings=[])
    completion.finish_if_done(db, extraction_id=extraction.id)
    assert db.get(WorkerCredential, credential.id) is None
    assert extraction.credential_id is None


def test_expired_credential_is_not_used(db):
    credential = WorkerCredential(
        user_id="user-bob",
        source="kheops",
        album_id="album-1",
        secret="old",
        expires_at=utcnow() - dt.timedelta(minutes=1),
    )
    db.add(credential)
    db.flush()
    extraction = make_extraction(db, n=1, credential_id=credential.id)
    assert claim(db, extraction.tasks[0]).credential is None


def _study(uid: str, instances: int | None) -> StudyInfo:
    """A study as QIDO-RS lists it, with NumberOfStudyRelatedInstances when given."""
    counts = {} if instances is None else {"00201208": {"vr": "IS", "Value": [instances]}}
    return StudyInfo(uid, f"P-{uid}", dicom_json=counts)


def test_largest_studies_are_queued_first(db, monkeypatch):
    studies = [_study("a", 120), _study("b", None), _study("c", 480), _study("d", 120)]
    extraction = make_extraction(db, studies=studies)
    sent: list[int] = []
    monkeypatch.setattr(lifecycle.jobs, "send", lambda name, row_id, task_id: sent.append(row_id))
    flows.enqueue(db, extraction=extraction)
    by_id = {task.id: task.study_uid for task in extraction.tasks}
    # Biggest first; equal counts keep the album's order; unknown counts go last.
    assert [by_id[row_id] for row_id in sent] == ["c", "a", "d", "b"]


def test_orphan_is_requeued_once_and_the_dead_workers_copy_is_refused(db):
    extraction = make_extraction(db, n=4)
    orphan, live, held_by_dead, queued = extraction.tasks
    claim(db, orphan)  # its worker dies
    dead_copy = orphan.task_id
    claim(db, live)
    held = {held_by_dead.task_id}  # delivered to the dead worker, never claimed
    candidates = completion.candidates_of_orphans(db, held=held)
    assert candidates == [orphan.id, live.id, held_by_dead.id]  # not the queued one

    alive = {live.task_id}  # what the live workers execute or hold
    assert completion.requeue_orphan(db, task_row_id=live.id, live=alive) is None
    old_held_id = held_by_dead.task_id
    assert completion.requeue_orphan(db, task_row_id=held_by_dead.id, live=alive) is held_by_dead
    assert held_by_dead.status == "PENDING" and held_by_dead.task_id != old_held_id
    requeued = completion.requeue_orphan(db, task_row_id=orphan.id, live=alive)
    assert requeued is orphan and orphan.status == "PENDING"
    new_id = orphan.task_id
    assert new_id != dead_copy
    assert completion.candidates_of_orphans(db, held=held) == [live.id]  # each is re-queued once
    assert queued.status == "PENDING"

    job = claim(db, orphan, new_id)
    assert job.attempt == 2  # the crash counted
    # Hours later the broker hands out the dead worker's message: it must not fail the study.
    stale = lifecycle.claim(db, runs.STUDY, row_id=orphan.id, celery_id=dead_copy, worker="w@b")
    assert stale == lifecycle.Refused(orphan.id, failed_now=False, parent_id=extraction.id)
    assert orphan.status == "STARTED" and orphan.attempts == 2
