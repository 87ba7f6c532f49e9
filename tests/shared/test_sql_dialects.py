"""MySQL 8.4 (the compose default) and MariaDB 10.11 (what the tests run on) accept our SQL alike.

No MySQL 8.4 runs on this machine, so the difference is checked where it can be: the migrations
rendered offline for both dialects, the DDL types, every statement the test run executed
(compiled for both), and the PyMySQL authentication MySQL 8.4 requires.
docs/decisions/0004-mysql-vs-mariadb.md explains the choice this protects.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pymysql import _auth
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects.mysql.reserved_words import RESERVED_WORDS_MARIADB, RESERVED_WORDS_MYSQL

from shared.db import migrate
from shared.db.all_models import Base
from tests.support import sql_log

# The audit of executed statements needs the rest of the suite to have run first (conftest.py).
RUN_LAST = True
ROOT = Path(__file__).resolve().parents[2]

# Syntax that one of the two servers rejects (or reads differently), as it shows in SQL text.
ONLY_ONE_ACCEPTS = {
    r"\bRETURNING\b": "INSERT/DELETE ... RETURNING is MariaDB only",
    r"\b(CREATE|DROP)\s+(UNIQUE\s+)?INDEX\s+IF\b": "CREATE/DROP INDEX IF EXISTS is MariaDB only",
    r"\b(ADD|DROP)\s+COLUMN\s+IF\b": "ADD/DROP COLUMN IF [NOT] EXISTS is MariaDB only",
    r"\b(NEXTVAL|LASTVAL|SETVAL)\s*\(|\bCREATE\s+SEQUENCE\b": "sequences are MariaDB only",
    r"\bINET[46]\b|\bUUID\s*[,)\n]": "INET4/INET6/UUID column types are MariaDB only",
    r"uca1400": "uca1400 collations are MariaDB only",
    r"utf8mb4_0900": "utf8mb4_0900_* collations are MySQL only",
    r"->>?": "the JSON -> and ->> operators are MySQL only",
    r"\bJSON_\w+\s*\(": "JSON functions return different types (MariaDB JSON is LONGTEXT)",
    r"\bLATERAL\b": "LATERAL derived tables are MySQL only",
    r"\bMEMBER\s+OF\b": "MEMBER OF is MySQL only",
    r"\bFOR\s+SHARE\b": "FOR SHARE is MySQL only (MariaDB: LOCK IN SHARE MODE)",
    r"\b(IN)?VISIBLE\b": "invisible indexes are MySQL only (MariaDB: IGNORED)",
    r"\bAS\s+JSON\b": "CAST(... AS JSON) is MySQL only",
    r"\bANY_VALUE\s*\(|\bREGEXP_LIKE\s*\(": "ANY_VALUE / REGEXP_LIKE are MySQL only",
    r"\bTIMESTAMP\b": "TIMESTAMP columns default differently (explicit_defaults_for_timestamp)",
}
# Column types both servers store and return alike (as SQLAlchemy's MySQL dialect renders them).
PORTABLE_TYPES = re.compile(
    r"(INTEGER|BIGINT|SMALLINT|BOOL|FLOAT|DOUBLE|DATE|DATETIME\(6\)|TEXT|LONGTEXT|LONGBLOB|JSON"
    r"|VARCHAR\(\d+\))"
)


def _violations(sql: str) -> list[str]:
    """The reasons `sql` would not run the same on MySQL 8.4 and MariaDB 10.11."""
    without_comments = re.sub(r"^\s*--.*$", "", sql, flags=re.M)
    without_strings = re.sub(r"'(?:[^'\\]|\\.|'')*'", "''", without_comments)
    return [
        why
        for pattern, why in ONLY_ONE_ACCEPTS.items()
        if re.search(pattern, without_strings, re.IGNORECASE)
    ]


def _render_migrations(url: str) -> str:
    """`alembic upgrade head --sql` for a dialect, without a server."""
    config = migrate.alembic_config(url)
    config.output_buffer = io.StringIO()
    command.upgrade(config, "head", sql=True)
    return config.output_buffer.getvalue()


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    """The offline migration scripts for MySQL and for MariaDB."""
    return {
        "mysql": _render_migrations("mysql+pymysql://user@db/quantimage2"),
        "mariadb": _render_migrations("mariadb+pymysql://user@db/quantimage2"),
    }


@pytest.mark.parametrize("dialect", ["mysql", "mariadb"])
def test_migrations_render_without_single_server_syntax(rendered, dialect: str) -> None:
    # The alembic_version bookkeeping is SQLAlchemy's own (it adds RETURNING for MariaDB in
    # offline mode only); our DDL is what must be portable.
    ddl = "\n".join(
        statement
        for statement in rendered[dialect].split(";\n")
        if "alembic_version" not in statement
    )
    assert "CREATE TABLE" in ddl
    found = _violations(ddl)
    assert not found, f"{dialect} migration script: {found}"


def test_both_dialects_get_the_same_ddl_apart_from_table_options(rendered) -> None:
    # SQLAlchemy's mariadb dialect ignores mysql_charset/mysql_collate; with our mysql+pymysql
    # URL the MySQL dialect renders them on either server (test_app_url_uses_the_mysql_dialect).
    def normalise(text: str) -> list[str]:
        text = text.replace(")CHARSET=utf8mb4 COLLATE utf8mb4_bin;", ");")
        return [s for s in text.split(";\n") if "alembic_version" not in s]

    assert normalise(rendered["mysql"]) == normalise(rendered["mariadb"])


def test_app_url_uses_the_mysql_dialect(settings) -> None:
    # One dialect for both servers: SQLAlchemy then detects MariaDB at connect time.
    assert sa.make_url(settings.sqlalchemy_url).get_backend_name() == "mysql"
    assert "charset=utf8mb4" in settings.sqlalchemy_url


def test_ddl_types_are_portable() -> None:
    dialect = mysql.dialect()
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            rendered_type = column.type.compile(dialect=dialect)
            where = f"{table.name}.{column.name} {rendered_type}"
            assert PORTABLE_TYPES.fullmatch(rendered_type), f"{where}: check it on both servers"
            if rendered_type in {"TEXT", "LONGTEXT", "LONGBLOB", "JSON"}:
                # MySQL 8.4 accepts only an expression default there; MariaDB a literal one.
                assert column.server_default is None, f"{where}: server default on a BLOB/TEXT"


# Reserved words used as names: SQLAlchemy quotes them on both servers, but raw SQL, ad-hoc
# queries and runbook snippets must write them in backquotes. Do not add to this list.
KNOWN_RESERVED_NAMES = {"values"}  # feature_vector.values (the packed feature values)


def test_identifiers_are_reserved_in_neither_server() -> None:
    reserved = (RESERVED_WORDS_MYSQL | RESERVED_WORDS_MARIADB) - KNOWN_RESERVED_NAMES
    names = {table.name for table in Base.metadata.sorted_tables}
    names |= {c.name for table in Base.metadata.sorted_tables for c in table.columns}
    names |= {i.name for table in Base.metadata.sorted_tables for i in table.indexes if i.name}
    clashes = sorted(name for name in names if name.lower() in reserved)
    assert not clashes, f"reserved on MySQL 8.4 or MariaDB 10.11: {clashes}"


def test_every_executed_statement_compiles_alike_for_both(client, auth) -> None:
    # Alone, this test still sees the statements of a few calls; in a full run, every
    # statement the suite executed through the app's engine (sql_log).
    for path in ("/feature-presets", "/extractions/album/none", "/label-categories/none"):
        assert client.get(path, headers=auth.headers("alice")).status_code == 200
    statements = list(sql_log.STATEMENTS.values())
    assert statements, "no statement was recorded"
    problems = {}
    for statement in statements:
        for name, dialect in (("mysql", mysql.dialect()), ("mariadb", mysql.dialect())):
            if name == "mariadb":
                dialect.is_mariadb = True
            sql = str(statement.compile(dialect=dialect))
            found = _violations(sql)
            if found:
                problems[sql[:200]] = found
    print(f"\n{len(statements)} distinct statements compiled for MySQL and MariaDB")
    assert not problems, problems


def test_test_sessions_use_mysql_84_sql_mode(engine) -> None:
    with engine.connect() as connection:
        mode = connection.execute(sa.text("SELECT @@SESSION.sql_mode")).scalar_one()
    assert set(mode.split(",")) >= {"ONLY_FULL_GROUP_BY", "NO_ZERO_DATE", "STRICT_TRANS_TABLES"}


def test_pymysql_can_do_mysql_84_caching_sha2_full_authentication() -> None:
    # MySQL 8.4 disables mysql_native_password; caching_sha2_password over plain TCP sends the
    # password RSA-encrypted with the server's key, which PyMySQL does with `cryptography`.
    lock = (ROOT / "requirements" / "lock.txt").read_text(encoding="utf-8")
    for image in ("lock", "web", "worker"):
        text = (ROOT / "requirements" / f"{image}.txt").read_text(encoding="utf-8")
        assert re.search(r"^cryptography==", text, re.M), f"{image}.txt lacks cryptography"
        assert re.search(r"^PyMySQL==", text, re.M | re.I), f"{image}.txt lacks PyMySQL"
    assert "cryptography==" in lock
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    salt = b"0123456789abcdefghij"
    encrypted = _auth.sha2_rsa_encrypt(b"s3cret-password", salt, public_pem)
    plain = key.decrypt(
        encrypted,
        padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),
    )
    # What the server recovers: the NUL-terminated password XOR the scramble.
    expected = bytes(b ^ salt[i % len(salt)] for i, b in enumerate(b"s3cret-password\0"))
    assert plain == expected
    assert len(_auth.scramble_caching_sha2(b"s3cret-password", salt)) == 32  # the fast path
