"""The worker machines' database user (issue #17): what a worker does works, schema changes fail.

Against the machine's MariaDB: a throwaway database at head, the user created by the exact SQL
`quantimage2 worker-grants` prints, then a worker's unit of work through that user's engine.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pymysql
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from click.testing import CliRunner

from shared import lifecycle
from shared.db import migrate
from shared.db.grants import WORKER_PRIVILEGES, worker_grant_statements
from shared.db.session import make_engine
from shared.extractions import completion, runs
from shared.extractions.models import ExtractionTask, FeatureExtraction, FeatureVector
from shared.features import storage
from tests.support.mariadb import MYSQL, admin
from webapp.cli import worker_grants

NAMES = ["original_firstorder_Mean", "original_shape_Volume"]
# MariaDB/MySQL: command denied to user (1142), access denied to database (1044).
DENIED = {1142, 1044, 1227}


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A throwaway database migrated to head (as root, as the migrate job does)."""
    name = f"qi2_grants_{uuid.uuid4().hex[:8]}"
    admin(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    try:
        migrate.upgrade(f"mysql+pymysql://root@127.0.0.1:3306/{name}?charset=utf8mb4")
        yield name
    finally:
        admin(f"DROP DATABASE IF EXISTS {name}")


@pytest.fixture(scope="module")
def worker(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The worker user, created by running the CLI's output as root; (user, password)."""
    user, password = f"qi2w_{uuid.uuid4().hex[:6]}", f"pw-{uuid.uuid4().hex}"
    secret = tmp_path_factory.mktemp("secrets") / "db-worker-password"
    secret.write_text(password + "\n")
    # Something granted earlier must not survive: the statements reset the privileges.
    admin(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'old'")
    admin(f"GRANT ALL PRIVILEGES ON {database}.* TO '{user}'@'%'")
    try:
        args = ["--user", user, "--password-file", str(secret), "--database", database]
        result = CliRunner().invoke(worker_grants, args)
        assert result.exit_code == 0, result.output
        statements = [s for s in result.output.split(";\n") if s.strip()]
        assert len(statements) == 4, result.output
        for statement in statements:
            admin(statement)
        yield user, password
    finally:
        admin(f"DROP USER IF EXISTS '{user}'@'%'")


def _connect(user: str, password: str, database: str) -> pymysql.Connection:
    return pymysql.connect(**{**MYSQL, "user": user, "password": password}, database=database)


def test_the_grants_are_exactly_the_rows_privileges(database: str, worker) -> None:
    user, password = worker
    with _connect(user, password, database) as connection, connection.cursor() as cursor:
        cursor.execute("SHOW GRANTS")
        grants = [row[0] for row in cursor.fetchall()]
    print("\n" + "\n".join(grants))
    on_schema = [g for g in grants if f"`{database}`.*" in g]
    assert len(on_schema) == 1, grants
    granted = on_schema[0].split("GRANT ", 1)[1].split(" ON ", 1)[0]
    assert {p.strip() for p in granted.split(",")} == set(WORKER_PRIVILEGES), grants
    assert all("USAGE" in g for g in grants if g not in on_schema), grants
    assert not any("GRANT OPTION" in g for g in grants), grants


def test_the_worker_user_does_what_an_extraction_worker_does(database: str, worker) -> None:
    user, password = worker
    root = make_engine(f"mysql+pymysql://root@127.0.0.1:3306/{database}?charset=utf8mb4")
    as_worker = make_engine(
        f"mysql+pymysql://{user}:{password}@127.0.0.1:3306/{database}?charset=utf8mb4"
    )
    try:
        with so.Session(root) as session, session.begin():  # the API creates the rows
            extraction = FeatureExtraction(
                user_id="user-bob", album_id="album-1", config_yaml="{}", rois=["GTV_T"]
            )
            session.add(extraction)
            session.flush()
            tasks = [
                ExtractionTask(feature_extraction_id=extraction.id, study_uid=f"1.2.3.{i}")
                for i in range(2)
            ]
            session.add_all(tasks)
            session.flush()
            extraction_id, task_ids = extraction.id, [t.id for t in tasks]
        vector = storage.VectorIn(
            modality="CT", roi="GTV_T", names=NAMES, values=np.array([1.5, 2.5])
        )
        for _ in range(2):  # storing again deletes the study's earlier vectors
            with so.Session(as_worker) as session, session.begin():
                storage.store_study_vectors(
                    session, extraction_id=extraction_id, task_id=task_ids[0], vectors=[vector]
                )
                runs.succeed(session, task_row_id=task_ids[0], patient_id="P1", warnings=[])
        with so.Session(as_worker) as session, session.begin():
            lifecycle.fail_by_id(session, runs.STUDY, row_id=task_ids[1], message="no ROI")
            completion.finish_if_done(session, extraction_id=extraction_id)
        with so.Session(root) as session:
            count = session.scalar(sa.select(sa.func.count()).select_from(FeatureVector))
            statuses = session.scalars(
                sa.select(ExtractionTask.status).order_by(ExtractionTask.id)
            ).all()
        assert count == 1
        assert [str(s).lower() for s in statuses][1].endswith("failure"), statuses
    finally:
        root.dispose()
        as_worker.dispose()


@pytest.mark.parametrize(
    "statement",
    [
        "DROP TABLE feature_vector",
        "ALTER TABLE feature_vector ADD COLUMN x INT",
        "CREATE TABLE intruder (x INT)",
        "CREATE INDEX ix_intruder ON feature_vector (roi)",
        "TRUNCATE TABLE feature_vector",
        "DROP DATABASE {database}",
        "CREATE DATABASE qi2_intruder",
        "GRANT SELECT ON {database}.* TO 'someone'@'%'",
        "SELECT user FROM mysql.user",
        "CREATE USER 'intruder'@'%'",
    ],
)
def test_the_worker_user_cannot_touch_the_schema_or_accounts(
    database: str, worker, statement: str
) -> None:
    user, password = worker
    with (
        _connect(user, password, database) as connection,
        connection.cursor() as cursor,
        pytest.raises(pymysql.err.MySQLError) as error,
    ):
        cursor.execute(statement.format(database=database))
    assert error.value.args[0] in DENIED, error.value.args


def test_names_that_would_break_the_sql_are_refused() -> None:
    for bad in ({"user": "x'; DROP"}, {"host": "a b"}, {"database": "db`"}):
        values = {"database": "quantimage2", "user": "w", "host": "%", **bad}
        with pytest.raises(ValueError):
            worker_grant_statements(**values, password="pw", require_ssl=False)
    statements = worker_grant_statements(
        database="qi2", user="w", host="10.0.0.%", password="it's", require_ssl=True
    )
    assert "IDENTIFIED BY 'it''s' REQUIRE SSL" in statements[1]


def test_a_password_is_required(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    result = CliRunner().invoke(worker_grants, ["--password-file", str(empty), "--database", "d"])
    assert result.exit_code != 0
