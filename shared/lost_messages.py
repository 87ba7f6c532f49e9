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
task id names the new copy (`lifecycle.superseded`).

One sweep for every kind of job (`lifecycle.Kind`: studies, training runs, predictions). Each
row is settled in its own unit of work, retried on transient database errors; the message
goes out before the commit (a broker error changes nothing) and the events after it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared import jobs, lifecycle
from shared.db.base import utcnow
from shared.db.retry import retry_transient
from shared.db.session import session_scope

log = logging.getLogger(__name__)

MAX_REQUEUES = 1
REQUEUED, FAILED = "requeued", "failed"


def candidates(
    session: so.Session, kind: lifecycle.Kind, *, older_than: dt.timedelta
) -> list[sa.Row]:
    """Return the id and Celery id of the PENDING rows unchanged for longer than `older_than`."""
    table = kind.table
    query = sa.select(table.id, table.task_id).where(
        table.status == lifecycle.PENDING, table.updated_at < utcnow() - older_than
    )
    return list(session.execute(query.order_by(table.id)))


def settle(
    session: so.Session,
    kind: lifecycle.Kind,
    *,
    row_id: int,
    present: set[str],
    older_than: dt.timedelta,
) -> tuple[str, Any] | None:
    """Send a lost row again or fail it, under its row lock; None when it is not lost.

    Everything is checked again under the lock: another sweeper may have sent the row again
    meanwhile (its `updated_at` is then fresh), or a worker claimed it.
    """
    row = session.get(kind.table, row_id, with_for_update=True)
    if row is None or row.status != lifecycle.PENDING or row.updated_at >= utcnow() - older_than:
        return None
    if kind.task_id(row) in present:
        return None
    if row.requeues < MAX_REQUEUES:
        row.requeues += 1
        row.task_id = kind.resent_id(row)
        session.flush()
        return REQUEUED, row
    lifecycle.fail(session, kind, row, kind.queue_lost_message)
    return FAILED, row


def sweep(
    kinds: Iterable[lifecycle.Kind],
    read_present: Callable[[list[str]], set[str]],
    *,
    older_than: dt.timedelta,
) -> dict[str, list[str]]:
    """Settle every lost row of each kind; return those sent again and those failed.

    `read_present(queues)` returns the Celery ids the broker holds (those queues and the
    delivered-unacknowledged set); it is read after the candidates, and only when there are.
    """
    outcome: dict[str, list[str]] = {REQUEUED: [], FAILED: []}
    for kind in kinds:
        rows = retry_transient(partial(_candidates, kind, older_than), what=f"list {kind.name}s")
        if not rows:
            continue
        present = read_present([kind.queue])
        # Only rows whose message the broker does not hold are locked and settled: a long
        # extraction queue keeps thousands of studies PENDING, each with its message waiting.
        lost = [row.id for row in rows if kind.task_id(row) not in present]
        parents: list[int] = []
        for row_id in lost:
            done = retry_transient(
                partial(_settle_one, kind, row_id, present, older_than, parents),
                what=f"settle {kind.name} {row_id}",
            )
            if done is not None:
                outcome[done].append(f"{kind.name} {row_id}")
        if parents and kind.finish_parents is not None:
            kind.finish_parents(parents)
    return outcome


def _candidates(kind: lifecycle.Kind, older_than: dt.timedelta) -> list[sa.Row]:
    """Read the candidates in one unit of work."""
    with session_scope() as session:
        return candidates(session, kind, older_than=older_than)


def _settle_one(
    kind: lifecycle.Kind,
    row_id: int,
    present: set[str],
    older_than: dt.timedelta,
    parents: list[int],
) -> str | None:
    """Settle one row: send it again (message, then commit) or fail it; announce after."""
    with session_scope() as session:
        settled = settle(session, kind, row_id=row_id, present=present, older_than=older_than)
        if settled is None:
            return None
        what, row = settled
        if what == REQUEUED:
            jobs.send(kind.task, row.id, task_id=row.task_id)
        session.commit()
        if what == REQUEUED:
            log.warning("%s %s: its message was lost; sent again", kind.name, row_id)
        else:
            log.warning("%s %s: its message was lost twice; failed", kind.name, row_id)
            if (parent := kind.parent_of(row)) is not None:
                parents.append(parent)
        kind.announce(session, row)
        return what
