"""Declarative base, naming convention, MySQL-aware column types and common mixins."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.dialects import mysql

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# DATETIME(6) on MySQL/MariaDB keeps microseconds; other dialects use their default.
DateTime6 = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
# Packed float64 vectors and long JSON documents outgrow MySQL's 64 KiB BLOB/TEXT.
LargeBlob = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
UserId = sa.String(64)
ALBUM_ID_LENGTH = 128
AlbumId = sa.String(ALBUM_ID_LENGTH)
DicomUid = sa.String(64)


def utcnow() -> dt.datetime:
    """Return the current time as a naive UTC datetime (the wire format is naive UTC)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(so.DeclarativeBase):
    """Declarative base for every table."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar = {dt.datetime: DateTime6}


class IdMixin:
    """Integer surrogate primary key."""

    id: so.Mapped[int] = so.mapped_column(
        sa.Integer, primary_key=True, autoincrement=True, sort_order=-100
    )


class TimestampMixin:
    """created_at / updated_at in naive UTC, set by the application."""

    created_at: so.Mapped[dt.datetime] = so.mapped_column(default=utcnow, sort_order=-90)
    updated_at: so.Mapped[dt.datetime] = so.mapped_column(
        default=utcnow, onupdate=utcnow, sort_order=-89
    )


class OwnedMixin:
    """Rows owned by a Keycloak user (the token's `sub`)."""

    user_id: so.Mapped[str] = so.mapped_column(UserId, index=True, sort_order=-80)


class JobMixin:
    """The columns of a queued job's lifecycle (shared/lifecycle.py): the row is the truth."""

    # The Celery id of the job's current message; an older copy's claim is refused.
    task_id: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    status: so.Mapped[str] = so.mapped_column(sa.String(16), default="PENDING")
    error: so.Mapped[str | None] = so.mapped_column(sa.Text)
    attempts: so.Mapped[int] = so.mapped_column(default=0)
    # Times the lost-message sweep sent the job again (its broker message had vanished).
    requeues: so.Mapped[int] = so.mapped_column(default=0, server_default="0")
    # Celery node (name@host) of the last attempt: which machine ran it.
    worker: so.Mapped[str | None] = so.mapped_column(sa.String(255))
    started_at: so.Mapped[dt.datetime | None]
    finished_at: so.Mapped[dt.datetime | None]


class HeartbeatMixin:
    """A job that beats: its worker stamps the row every few seconds while it runs.

    Training runs and predictions beat, so a lost host's rows are failed (the silent sweep);
    a lost host's studies are sent again by the orphan sweep instead.
    """

    heartbeat_at: so.Mapped[dt.datetime | None]


# utf8mb4_bin: identifiers (ROI names, patient ids, UIDs) compare exactly, case included.
TABLE_ARGS = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}
