"""One lifecycle for queued work: extraction studies, training runs and predictions.

Each job is a row, and the row is the truth: PENDING from its request, STARTED once a worker
claims it, PROGRESS while it reports, then SUCCESS or FAILURE with a readable error. The rules
are the same for every kind of job; a `Kind` only names its table, its messages and the few
fields of its own (a study's status message, a run's phase):

- claim: a worker takes the row under its lock and counts an attempt; a redelivered message
  past `MAX_ATTEMPTS` fails the row instead of running it for ever. A message whose Celery id
  is not the row's current one is an older copy of a job sent again: it runs nothing.
- heartbeat: while a job of a kind that beats runs, a thread stamps `heartbeat_at`.
- finish or fail: the end, stamped once.
- sweeps: rows a restarted worker left running, rows running past any time limit, rows whose
  heartbeat stopped (their host was lost), and PENDING rows whose broker message was lost
  (`shared/lost_messages.py`) are ended or sent again.

The session functions take a session and never commit. The unit-of-work functions below
them are what the worker edges and sweeps call: each opens its own session, is retried on
transient database errors, commits, and only then publishes the row's event through its
kind's `announce`. So every kind is retried and announced the same way.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared import jobs
from shared.db.base import utcnow
from shared.db.retry import retry_transient
from shared.db.session import session_scope
from shared.errors import ServiceUnavailable

log = logging.getLogger(__name__)
J = TypeVar("J")

MAX_ATTEMPTS = 2
PENDING = "PENDING"
RUNNING = ("STARTED", "PROGRESS")
DONE = ("SUCCESS", "FAILURE")


def _nothing(_row: Any) -> None:
    """Set no field of a kind's own."""


def _no_parent(_row: Any) -> int | None:
    """Name no parent row."""
    return None


def phase(name: str) -> Callable[[Any], None]:
    """Return a hook that sets a row's phase (training runs and predictions have one)."""

    def set_phase(row: Any) -> None:
        row.phase = name

    return set_phase


@dataclass(frozen=True)
class Kind:
    """What one kind of job adds to the common lifecycle."""

    name: str  # for logs and messages, e.g. "training run"
    table: type[Any]  # ORM class with shared.db.base.JobMixin (and HeartbeatMixin if it beats)
    task: str  # Celery task name (its queue follows jobs.TASK_ROUTES)
    id_prefix: str  # Celery ids of resent messages are `<prefix>-<row id>-r<n>`
    lost_message: str  # the error of a row whose worker stopped
    queue_lost_message: str  # the error of a row whose broker message was lost twice
    announce: Callable[[so.Session, Any], None]  # publish the row's state, after the commit
    on_start: Callable[[Any], None] = _nothing  # the kind's fields when a worker claims it
    on_success: Callable[[Any], None] = _nothing
    on_failure: Callable[[Any], None] = _nothing
    beats: bool = False  # its worker writes heartbeat_at; silent rows are failed
    fails_orphans: bool = True  # a restarted worker fails the rows it left running
    parent_of: Callable[[Any], int | None] = _no_parent  # e.g. a study's extraction
    finish_parents: Callable[[Iterable[int]], Any] | None = None  # after rows end in a sweep

    @property
    def queue(self) -> str:
        """Return the queue the kind's messages go to."""
        return jobs.queue_of(self.task)

    def task_id(self, row: Any) -> str:
        """Return the Celery id the row's current message carries."""
        return row.task_id or f"{self.id_prefix}-{row.id}"

    def resent_id(self, row: Any) -> str:
        """Return the Celery id of the row's next resent message."""
        return f"{self.id_prefix}-{row.id}-r{row.requeues}"


@dataclass(frozen=True)
class Refused:
    """A claim that runs nothing although the row exists (its parent may need finishing)."""

    row_id: int
    failed_now: bool  # True when this claim failed the row (one attempt too many)
    parent_id: int | None = None


# --- session functions (flush, never commit) ----------------------------------------------------


def superseded(row: Any, celery_id: str | None) -> bool:
    """Tell whether a message is an older copy than the one the row names.

    A job sent again (its worker died, or the broker lost its message) gets a new Celery id;
    the old message, handed out much later, must neither run it twice nor count an attempt.
    """
    return bool(row.status not in DONE and row.task_id and celery_id and celery_id != row.task_id)


def claim(
    session: so.Session, kind: Kind, *, row_id: int, celery_id: str | None, worker: str | None
) -> Any | Refused | None:
    """Mark a row STARTED for this message and return it; Refused when it must not run; None
    when it is gone (deleted: a cancelled extraction)."""
    row = session.get(kind.table, row_id, with_for_update=True)
    if row is None:
        return None
    if row.status in DONE or superseded(row, celery_id):
        return Refused(row.id, failed_now=False, parent_id=kind.parent_of(row))
    if row.attempts >= MAX_ATTEMPTS:
        fail(session, kind, row, f"{kind.lost_message} ({row.attempts} attempts)")
        return Refused(row.id, failed_now=True, parent_id=kind.parent_of(row))
    row.attempts += 1
    row.status = "STARTED"
    row.task_id = celery_id or row.task_id
    row.worker = worker
    row.started_at = utcnow()
    if kind.beats:
        row.heartbeat_at = row.started_at
    row.error = None
    kind.on_start(row)
    session.flush()
    return row


def running(session: so.Session, kind: Kind, row_id: int, *, lock: bool = False) -> Any | None:
    """Return the row if it has not ended (None once it is gone or ended elsewhere)."""
    row = session.get(kind.table, row_id, with_for_update=lock)
    return None if row is None or row.status in DONE else row


def beat(session: so.Session, kind: Kind, *, row_id: int) -> bool:
    """Record that the row's worker is alive; False once the row is no longer running."""
    table = kind.table
    result = session.execute(
        sa.update(table)
        .where(table.id == row_id, table.status.in_(RUNNING))
        .values(heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)


def succeed(session: so.Session, kind: Kind, row: Any) -> Any:
    """Mark a row done (its results were written in the same transaction)."""
    row.status = "SUCCESS"
    row.finished_at = utcnow()
    kind.on_success(row)
    session.flush()
    return row


def fail(session: so.Session, kind: Kind, row: Any, message: str) -> Any:
    """Mark a row failed with a readable message."""
    row.status = "FAILURE"
    row.error = message[:4000]
    row.finished_at = utcnow()
    kind.on_failure(row)
    session.flush()
    return row


def fail_by_id(session: so.Session, kind: Kind, *, row_id: int, message: str) -> Any | None:
    """Mark a row failed, if it still exists and has not ended."""
    row = running(session, kind, row_id, lock=True)
    return None if row is None else fail(session, kind, row, message)


def fail_stale(session: so.Session, kind: Kind, *, older_than: dt.timedelta) -> list[Any]:
    """Fail rows that claim to run but have not changed for longer than any job may run."""
    table = kind.table
    query = sa.select(table).where(
        table.status.in_(RUNNING), table.updated_at < utcnow() - older_than
    )
    return [fail(session, kind, row, kind.lost_message) for row in session.scalars(query).all()]


def fail_orphaned(session: so.Session, kind: Kind, *, worker: str) -> list[Any]:
    """Fail rows a worker of this name left running: it just started, so it runs none of them.

    A killed worker's message returns only after the broker's visibility timeout (hours); its
    restart under the same node name ends the row at once instead.
    """
    table = kind.table
    query = sa.select(table).where(table.status.in_(RUNNING), table.worker == worker)
    return [fail(session, kind, row, kind.lost_message) for row in session.scalars(query).all()]


SILENT_MESSAGE = (
    "The worker of this {name} ({worker}) stopped unexpectedly: no sign of life for over "
    "{seconds} s (its machine or process was lost). Start the {name} again."
)


def fail_silent(session: so.Session, kind: Kind, *, older_than: dt.timedelta) -> list[Any]:
    """Fail running rows whose worker has not beaten for `older_than` (its host was lost)."""
    table = kind.table
    query = (
        sa.select(table)
        .where(
            table.status.in_(RUNNING),
            sa.func.coalesce(table.heartbeat_at, table.updated_at) < utcnow() - older_than,
        )
        .with_for_update()
    )
    seconds = int(older_than.total_seconds())
    return [
        fail(
            session,
            kind,
            row,
            SILENT_MESSAGE.format(name=kind.name, worker=row.worker, seconds=seconds),
        )
        for row in session.scalars(query).all()
    ]


# --- units of work (own session, retried, commit, then announce) ------------------------------


def change(kind: Kind, row_id: int, step: Callable[[so.Session], Any | None], *, what: str) -> bool:
    """Apply one change to a row in its own unit of work, then announce the row.

    `step` returns the changed row, or None to change nothing (the row is gone or ended).
    Retried on transient database errors; the event goes out only after the commit.
    """

    def unit() -> bool:
        with session_scope() as session:
            row = step(session)
            if row is None:
                return False
            session.commit()
            kind.announce(session, row)
            return True

    return retry_transient(unit, what=f"{kind.name} {row_id}: {what}")


def start(
    kind: Kind, row_id: int, message: Any, *, job: Callable[[so.Session, Any], J]
) -> J | Refused | None:
    """Claim a row for a Celery message (its request: `id`, `hostname`) and read its job's
    inputs (`job`) in one unit of work; then announce it."""

    def unit() -> J | Refused | None:
        with session_scope() as session:
            claimed = claim(
                session, kind, row_id=row_id, celery_id=message.id, worker=message.hostname
            )
            if claimed is None or (isinstance(claimed, Refused) and not claimed.failed_now):
                return claimed
            made = claimed if isinstance(claimed, Refused) else job(session, claimed)
            session.commit()
            kind.announce(session, session.get(kind.table, row_id))
            return made

    return retry_transient(unit, what=f"{kind.name} {row_id}: claim")


def fail_job(kind: Kind, row_id: int, message: str) -> bool:
    """Record a job's failure with its readable message and announce it."""
    log.warning("%s %s failed: %s", kind.name, row_id, message)
    return change(
        kind,
        row_id,
        lambda session: fail_by_id(session, kind, row_id=row_id, message=message),
        what="fail",
    )


def enqueue(session: so.Session, kind: Kind, rows: Iterable[Any]) -> None:
    """Queue each row's message (its id only); if the broker is down, fail them and say so.

    The rows are committed first by the caller. On a broker error the PENDING ones are failed
    and committed, their parents finished, and the caller gets a 503.
    """
    rows = list(rows)
    try:
        for row in rows:
            jobs.send(kind.task, row.id, task_id=kind.task_id(row))
    except Exception as exc:  # any broker error: the rows must not stay PENDING for ever
        log.error("%s %s: queueing failed: %s", kind.name, [row.id for row in rows], exc)
        message = f"Could not queue the {kind.name} (task queue unavailable)"
        failed = [fail(session, kind, row, message) for row in rows if row.status == PENDING]
        parents = [p for row in failed if (p := kind.parent_of(row)) is not None]
        session.commit()
        if parents and kind.finish_parents is not None:
            kind.finish_parents(parents)
        raise ServiceUnavailable("The task queue is unavailable; try again later") from exc


def end_rows(kind: Kind, find: Callable[[so.Session], list[Any]], *, what: str) -> list[int]:
    """Fail the rows `find` fails in one unit of work, announce them, finish their parents."""

    def unit() -> tuple[list[int], list[int]]:
        with session_scope() as session:
            rows = find(session)
            session.commit()
            for row in rows:
                kind.announce(session, row)
            parents = [p for row in rows if (p := kind.parent_of(row)) is not None]
            return [row.id for row in rows], parents

    ended, parents = retry_transient(unit, what=f"{what} ({kind.name}s)")
    if ended:
        log.warning("%s: failed %d %ss: %s", what, len(ended), kind.name, ended)
    if parents and kind.finish_parents is not None:
        kind.finish_parents(parents)
    return ended


def recover(kind: Kind, *, worker: str | None, time_limit: float) -> list[int]:
    """At a worker's start: fail the rows it left running, and any running past the limit.

    A kind that does not fail orphans (studies) has them sent again by its own sweep instead.
    """
    older_than = dt.timedelta(seconds=time_limit + 600)
    own = worker if kind.fails_orphans else None

    def find(session: so.Session) -> list[Any]:
        orphaned = fail_orphaned(session, kind, worker=own) if own else []
        return orphaned + fail_stale(session, kind, older_than=older_than)

    return end_rows(kind, find, what="left running by a lost worker")


def sweep_silent(kind: Kind, *, older_than: dt.timedelta) -> list[int]:
    """Fail, and announce, the running rows whose worker stopped its heartbeat."""
    return end_rows(
        kind, lambda session: fail_silent(session, kind, older_than=older_than), what="silent"
    )


class Heartbeat:
    """While a job runs, a thread stamps its row: the silent sweep fails rows whose host died."""

    def __init__(self, kind: Kind, row_id: int, interval: float) -> None:
        self.kind, self.row_id, self.interval = kind, row_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{row_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        """Beat every interval until stopped or the row ended elsewhere."""
        while not self._stop.wait(self.interval):
            try:
                with session_scope() as session:
                    alive = beat(session, self.kind, row_id=self.row_id)
                    session.commit()
            except Exception as exc:  # the database is away for a moment: beat again later
                log.warning("%s %s: heartbeat not written: %s", self.kind.name, self.row_id, exc)
                continue
            if not alive:
                return
