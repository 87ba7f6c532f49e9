"""The SQL that gives worker machines their own database user: rows only, never the schema.

Workers read and write rows (extraction tasks and feature vectors, trainings, predictions) and
delete the vectors of a study they store again; they never create, alter or drop a table (the
`migrate` job on the first machine does, as the application user). A worker machine that is
taken over can then damage data, but not the schema, the other databases or the accounts.
"""

from __future__ import annotations

import re

WORKER_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")
# Account and database names go into the SQL as identifiers and literals: keep them plain.
_NAME = re.compile(r"^[A-Za-z0-9_.%-]{1,80}$")


def _checked(kind: str, value: str) -> str:
    """Return a name that is safe to put into the statements, or refuse it."""
    if not _NAME.match(value):
        raise ValueError(f"{kind} {value!r}: letters, digits, and _ . % - only")
    return value


def _literal(value: str) -> str:
    """Quote a string literal for MySQL/MariaDB."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def worker_grant_statements(
    *, database: str, user: str, host: str, password: str, require_ssl: bool
) -> list[str]:
    """Return the statements that create (or reset) the worker user with only its privileges."""
    if not password:
        raise ValueError("the worker user needs a password")
    account = f"'{_checked('user', user)}'@'{_checked('host', host)}'"
    schema = f"`{_checked('database', database)}`"
    tls = "REQUIRE SSL" if require_ssl else "REQUIRE NONE"
    return [
        f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {_literal(password)}",
        f"ALTER USER {account} IDENTIFIED BY {_literal(password)} {tls}",
        # Run again, the statements leave exactly these privileges, whatever was granted before.
        f"REVOKE ALL PRIVILEGES, GRANT OPTION FROM {account}",
        f"GRANT {', '.join(WORKER_PRIVILEGES)} ON {schema}.* TO {account}",
    ]
