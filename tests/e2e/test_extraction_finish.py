"""Issue #8 §4: whatever path ends an extraction's last study, the extraction is finished once:
`finished_at` stamped, worker credential dropped, final `extraction-status` event published.

The Celery task runs in this process (`apply`), against committed rows, and a real Socket.IO
client of the owner listens on the live app.
"""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
import sqlalchemy as sa

from shared import events
from shared.db.base import utcnow
from shared.db.session import session_scope
from shared.extractions import service
from shared.extractions.models import ExtractionTask, FeatureExtraction, WorkerCredential
from shared.imaging.source import StudyInfo
from tests.support.live import EventListener, wait_until

pytestmark = pytest.mark.e2e
OWNER = "user-alice"


@pytest.fixture(scope="module")
def worker_code(live_db):
    """The extraction task module, imported once the sessions commit to the live database."""
    from workers import celery_app
    from workers.extraction import tasks

    return celery_app, tasks


@pytest.fixture
def owner(live_url, auth):
    """A connected Socket.IO client of the extraction's owner."""
    listener = EventListener(live_url, auth.token("alice"))
    yield listener
    listener.close()


def make_running(statuses: list[str], *, attempts: int = 1) -> tuple[int, list[int], int]:
    """Commit an extraction with a worker credential and tasks in the given states."""
    with session_scope() as session:
        credential = WorkerCredential(
            user_id=OWNER,
            source="kheops",
            album_id="album-1",
            secret="capability-secret",
            expires_at=utcnow() + dt.timedelta(hours=1),
        )
        session.add(credential)
        session.flush()
        extraction = service.create(
            session,
            user_id=OWNER,
            album_id="album-1",
            album_name="Album 1",
            config_yaml="feature_extraction: {}\n",
            rois=["GTV"],
            studies=[StudyInfo(f"1.2.9.{i}", f"P{i}") for i in range(len(statuses))],
            credential_id=credential.id,
        )
        for task, status in zip(extraction.tasks, statuses, strict=True):
            task.status = status
            task.attempts = attempts if status in ("STARTED", "PROGRESS") else 1
            if status == "FAILURE":
                task.error = "earlier failure"
        session.flush()
        return extraction.id, [task.id for task in extraction.tasks], credential.id


def state(engine: sa.Engine, extraction_id: int, credential_id: int) -> tuple:
    """Return (finished_at, credential still stored, task statuses)."""
    with engine.connect() as connection:
        finished = connection.scalar(
            sa.select(FeatureExtraction.finished_at).where(FeatureExtraction.id == extraction_id)
        )
        credential = connection.scalar(
            sa.select(sa.func.count())
            .select_from(WorkerCredential)
            .where(WorkerCredential.id == credential_id)
        )
        statuses = connection.scalars(
            sa.select(ExtractionTask.status)
            .where(ExtractionTask.feature_extraction_id == extraction_id)
            .order_by(ExtractionTask.id)
        ).all()
    return finished, credential, list(statuses)


def live_db_task_id(engine: sa.Engine, task_row_id: int) -> str:
    """Return the Celery id stored on a task row (a broker redelivery carries the same)."""
    with engine.connect() as connection:
        return connection.scalar(
            sa.select(ExtractionTask.task_id).where(ExtractionTask.id == task_row_id)
        )


def final_events(listener: EventListener, extraction_id: int) -> list[dict]:
    """Return the full-object `extraction-status` events of an extraction (its final events)."""
    return [
        payload
        for payload in listener.of(events.EXTRACTION_STATUS)
        if payload.get("id") == extraction_id and "tasks" in payload
    ]


def study_events(listener: EventListener, task_row_id: int) -> list[dict]:
    """Return the `feature-status` events of one study."""
    return [
        payload
        for payload in listener.of(events.FEATURE_STATUS)
        if payload["feature_extraction_task_id"] == task_row_id
    ]


def test_last_attempt_refused_by_claim_finishes_the_extraction(live_db, worker_code, owner):
    _, tasks = worker_code
    extraction_id, (_, crashed), credential_id = make_running(["SUCCESS", "STARTED"], attempts=2)
    # The message of a study whose worker died twice comes back a third time.
    celery_id = live_db_task_id(live_db, crashed)
    result = tasks.extract_study.apply(args=[crashed], task_id=celery_id).get()

    finished, credential, statuses = state(live_db, extraction_id, credential_id)
    assert result == "failure"
    assert statuses == ["SUCCESS", "FAILURE"]
    assert finished is not None
    assert credential == 0
    final = wait_until(lambda: final_events(owner, extraction_id), 10)
    assert len(final) == 1 and final[0]["status"]["ready"] and final[0]["status"]["failed"]
    studies = [
        p for p in owner.of(events.FEATURE_STATUS) if p["feature_extraction_task_id"] == crashed
    ]
    assert studies and studies[-1]["status"] == "FAILURE"
    assert "stopped unexpectedly" in studies[-1]["status_message"]


def test_redelivered_ended_study_finishes_an_unfinished_extraction(live_db, worker_code, owner):
    # The worker was killed after committing the study's success, before finishing the album.
    _, tasks = worker_code
    extraction_id, (first, last), credential_id = make_running(["FAILURE", "SUCCESS"])
    assert tasks.extract_study.apply(args=[last], task_id="redelivered").get() == "skipped"

    finished, credential, _ = state(live_db, extraction_id, credential_id)
    assert finished is not None and credential == 0
    assert len(wait_until(lambda: final_events(owner, extraction_id), 10)) == 1
    # A second redelivery finds it finished: no second final event.
    tasks.extract_study.apply(args=[last], task_id="redelivered-again").get()
    tasks.extract_study.apply(args=[first], task_id="redelivered-other").get()
    assert len(final_events(owner, extraction_id)) == 1


def test_startup_recovery_finishes_and_announces(live_db, worker_code, owner, settings):
    celery_app, _ = worker_code
    extraction_id, (_, lost), credential_id = make_running(["SUCCESS", "PROGRESS"])
    long_ago = utcnow() - dt.timedelta(seconds=settings.extraction_task_time_limit + 3600)
    with live_db.begin() as connection:
        connection.execute(
            sa.update(ExtractionTask).where(ExtractionTask.id == lost).values(updated_at=long_ago)
        )
    celery_app._recover_lost_jobs()  # what a worker runs when it becomes ready

    finished, credential, statuses = state(live_db, extraction_id, credential_id)
    assert statuses == ["SUCCESS", "FAILURE"]
    assert finished is not None and credential == 0
    final = wait_until(lambda: final_events(owner, extraction_id), 10)
    assert final[0]["status"]["failed_tasks"] == 1
    studies = [
        p for p in owner.of(events.FEATURE_STATUS) if p["feature_extraction_task_id"] == lost
    ]
    assert studies and studies[-1]["status"] == "FAILURE"


def test_cancel_drops_the_worker_credential(live_url, live_db, auth):
    extraction_id, _, credential_id = make_running(["SUCCESS", "PENDING"])
    response = httpx.post(
        f"{live_url}/extractions/{extraction_id}/cancel", headers=auth.headers("alice")
    )
    assert response.status_code == 200, response.text
    with live_db.connect() as connection:
        left = connection.scalar(
            sa.select(sa.func.count())
            .select_from(WorkerCredential)
            .where(WorkerCredential.id == credential_id)
        )
    assert left == 0
