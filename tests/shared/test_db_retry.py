"""Which database errors the workers and the API treat as "the database is briefly away"."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from shared.db.retry import is_transient, retry_transient
from tests.support.faults import free_port


def error_of(engine: sa.Engine, statement: str) -> sa.exc.DBAPIError:
    """Run a statement and return the error it raised."""
    with pytest.raises(sa.exc.DBAPIError) as caught, engine.connect() as connection:
        connection.execute(sa.text(statement))
    return caught.value


def test_refused_connection_is_transient_and_bad_sql_is_not(engine):
    nobody = sa.create_engine(f"mysql+pymysql://root@127.0.0.1:{free_port()}/none")
    assert is_transient(error_of(nobody, "SELECT 1"))
    nobody.dispose()
    assert not is_transient(error_of(engine, "SELECT * FROM no_such_table"))
    assert not is_transient(ValueError("not a database error"))


def test_retry_runs_again_after_transient_errors_only(engine):
    nobody = sa.create_engine(f"mysql+pymysql://root@127.0.0.1:{free_port()}/none")
    calls = []

    def flaky() -> str:
        calls.append(1)
        target = nobody if len(calls) < 3 else engine
        with target.connect() as connection:
            return str(connection.scalar(sa.text("SELECT 'back'")))

    assert retry_transient(flaky, what="test") == "back"
    assert len(calls) == 3
    nobody.dispose()

    def wrong() -> None:
        calls.append(1)
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT * FROM no_such_table"))

    calls.clear()
    with pytest.raises(sa.exc.ProgrammingError):
        retry_transient(wrong, what="test")
    assert len(calls) == 1
