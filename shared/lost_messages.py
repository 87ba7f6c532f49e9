"""Queued jobs whose broker message was lost: sent again once, then failed (issue #15 §9).

A job row (a training run, a prediction) stays PENDING from its request until a worker claims
it. If the broker loses the message first (Redis restarted without its append-only file, a
flushed database, a message routed where no worker reads), nothing would ever claim the row.
The sweep compares the PENDING rows left unchanged for a while with the Celery ids the broker
still holds (queued, or delivered and not yet acknowledged): a row whose id is in neither is
sent again under a new id, once; lost a second time, it is failed with a readable message.

A message only ever leaves the broker when a worker acknowledges it, so a row whose id the
broker does not hold can never be claimed by anything but a new message: waiting for the
visibility timeout (hours) would change nothing. The delay only covers the instants where
a message is in flight (sent after its row's commit; moved between a queue and the
delivered set); a copy that was merely in flight is refused by the claim, since the row's
task id names the new copy (`stale_copy`).

Kept generic, one `Lifecycle` per kind of job, so the extraction studies can fold in. Each
row is settled in its own unit of work, retried on transient database errors; the message
goes out before the commit (a broker error changes nothing) and the events after it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared import jobs
from shared.db.base import utcnow
from shared.db.retry import retry_transient
from shared.db.session import session_scope

log = logging.getLogger(__name__)

MAX_REQUEUES = 1
REQUEUED, FAILED = "requeued", "failed"


@dataclass(frozen=True)
class Lifecycle:
    """How one kind of queued job is found, sent again and failed."""

    name: str  # for logs, e.g. "training run"
    table: type[Any]  # ORM class with id, status, task_id, requeues, updated_at
    task: str  # Celery task name (its queue follows jobs.TASK_ROUTES)
    id_prefix: str  # Celery ids are `<prefix>-<row id>`, `-r<n>` once sent again
    lost_message: str  # the row's error when its message was lost twice
    fail: Callable[[so.Session, Any, str], Any]  # mark a row failed (flush, no commit)
    announce_requeued: Callable[[Any], None]
    announce_failed: Callable[[Any], None]

    @property
    def queue(self) -> str:
        """Return the queue the job's messages go to."""
        return jobs.queue_of(self.task)

    def task_id(self, row: Any) -> str:
        """Return the Celery id the row's current message carries."""
        return row.task_id or f"{self.id_prefix}-{row.id}"


def stale_copy(row: Any, celery_id: str | None) -> bool:
    """Tell whether a message claiming a PENDING row is an older copy than the row's own.

    Once the sweep sent a row again, the row names the new copy's id; an old copy that turns
    up after all (it was only in flight) must not run the job a second time.
    """
    return bool(row.status == "PENDING" and row.task_id and celery_id and celery_id != row.task_id)


def candidates(session: so.Session, lifecycle: Lifecycle, *, older_than: dt.timedelta) -> list[int]:
    """Return the ids of PENDING rows unchanged for longer than `older_than`."""
    table = lifecycle.table
    query = sa.select(table.id).where(
        table.status == "PENDING", table.updated_at < utcnow() - older_than
    )
    return list(session.scalars(query.order_by(table.id)))


def settle(
    session: so.Session,
    lifecycle: Lifecycle,
    *,
    row_id: int,
    present: set[str],
    older_than: dt.timedelta,
) -> tuple[str, Any] | None:
    """Send a lost row again or fail it, under its row lock; None when it is not lost.

    Everything is checked again under the lock: another sweeper may have sent the row again
    meanwhile (its `updated_at` is then fresh), or a worker claimed it.
    """
    row = session.get(lifecycle.table, row_id, with_for_update=True)
    if row is None or row.status != "PENDING" or row.updated_at >= utcnow() - older_than:
        return None
    if lifecycle.task_id(row) in present:
        return None
    if row.requeues < MAX_REQUEUES:
        row.requeues += 1
        row.task_id = f"{lifecycle.id_prefix}-{row.id}-r{row.requeues}"
        session.flush()
        return REQUEUED, row
    lifecycle.fail(session, row, lifecycle.lost_message)
    return FAILED, row


def sweep(
    lifecycles: Iterable[Lifecycle],
    read_present: Callable[[list[str]], set[str]],
    *,
    older_than: dt.timedelta,
) -> dict[str, list[str]]:
    """Settle every lost row of each lifecycle; return those sent again and those failed.

    `read_present(queues)` returns the Celery ids the broker holds (those queues and the
    delivered-unacknowledged set); it is read after the candidates, and only when there are.
    """
    outcome: dict[str, list[str]] = {REQUEUED: [], FAILED: []}
    for lifecycle in lifecycles:
        ids = retry_transient(
            partial(_candidates, lifecycle, older_than), what=f"list {lifecycle.name}s"
        )
        if not ids:
            continue
        present = read_present([lifecycle.queue])
        for row_id in ids:
            done = retry_transient(
                partial(_settle_one, lifecycle, row_id, present, older_than),
                what=f"settle {lifecycle.name} {row_id}",
            )
            if done is not None:
                outcome[done].append(f"{lifecycle.name} {row_id}")
    return outcome


def _candidates(lifecycle: Lifecycle, older_than: dt.timedelta) -> list[int]:
    """Read the candidates in one unit of work."""
    with session_scope() as session:
        return candidates(session, lifecycle, older_than=older_than)


def _settle_one(
    lifecycle: Lifecycle, row_id: int, present: set[str], older_than: dt.timedelta
) -> str | None:
    """Settle one row: send it again (message, then commit) or fail it; announce after."""
    with session_scope() as session:
        settled = settle(session, lifecycle, row_id=row_id, present=present, older_than=older_than)
        if settled is None:
            return None
        what, row = settled
        if what == REQUEUED:
            jobs.send(lifecycle.task, row.id, task_id=row.task_id)
        session.commit()
        if what == REQUEUED:
            log.warning("%s %s: its message was lost; sent again", lifecycle.name, row_id)
            lifecycle.announce_requeued(row)
        else:
            log.warning("%s %s: its message was lost twice; failed", lifecycle.name, row_id)
            lifecycle.announce_failed(row)
        return what
