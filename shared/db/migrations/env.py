"""Alembic environment: the URL comes from the Alembic config or from Settings."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from shared.config import get_settings
from shared.db.all_models import Base
from shared.db.session import make_engine

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    """Return the database URL to migrate."""
    return config.get_main_option("sqlalchemy.url") or get_settings().sqlalchemy_url


def run_offline() -> None:
    """Emit SQL to stdout without a connection."""
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Run migrations on a live connection (batch mode so SQLite can alter tables)."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    tls = get_settings().db_connect_args
    engine = make_engine(_url(), tls=tls, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(connection: sa.Connection) -> None:
    """Configure the context on a connection and run the migrations."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
