"""Alembic: one head, upgrade from empty builds the models' schema, downgrade works."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from shared.db import migrate
from shared.db.all_models import Base
from tests.conftest import RUN_ID
from tests.support.mariadb import admin


def test_single_head():
    assert len(migrate.heads()) == 1


def test_models_and_migrations_agree(engine):
    """The session database was built by `upgrade head`; autogenerate must find nothing."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_schema_is_utf8mb4_with_datetime6(engine):
    with engine.connect() as connection:
        charset = (
            connection.execute(
                sa.text(
                    "SELECT DISTINCT table_collation FROM information_schema.tables "
                    "WHERE table_schema = DATABASE() AND table_name <> 'alembic_version'"
                )
            )
            .scalars()
            .all()
        )
        precision = (
            connection.execute(
                sa.text(
                    "SELECT DISTINCT datetime_precision FROM information_schema.columns "
                    "WHERE table_schema = DATABASE() AND data_type = 'datetime'"
                )
            )
            .scalars()
            .all()
        )
    assert charset == ["utf8mb4_bin"]
    assert precision == [6]


def test_downgrade_to_base_and_back():
    name = f"qi2_test_{RUN_ID}_updown"
    url = f"mysql+pymysql://root@127.0.0.1:3306/{name}?charset=utf8mb4"
    admin(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    try:
        migrate.upgrade(url)
        migrate.downgrade(url, "base")
        engine = sa.create_engine(url)
        assert sa.inspect(engine).get_table_names() == ["alembic_version"]
        migrate.upgrade(url)
        assert "feature_vector" in sa.inspect(engine).get_table_names()
        engine.dispose()
    finally:
        admin(f"DROP DATABASE IF EXISTS {name}")


def test_embedded_sqlite_default_migrates(tmp_path):
    """The dev platform's embedded default: the same migrations build a SQLite file."""
    url = f"sqlite:///{tmp_path / 'qi2.db'}"
    migrate.upgrade(url)
    engine = sa.create_engine(url)
    tables = set(sa.inspect(engine).get_table_names())
    engine.dispose()
    assert {"feature_extraction", "feature_vector", "feature_preset", "model"} <= tables


def _insert(connection: sa.Connection, table: sa.Table, **values: object) -> int:
    """Insert a row, filling the required columns the test does not care about; return its id."""
    for column in table.columns:
        if column.name in values or column.nullable or column.autoincrement is True:
            continue
        if column.server_default is not None or column.primary_key:
            continue
        # "[]": MariaDB reflects JSON as text with a JSON_VALID check; it is text as well.
        filler = {int: 1, str: "[]", bool: False}.get(column.type.python_type)
        values[column.name] = filler if filler is not None else sa.func.now()
    return connection.execute(table.insert().values(**values)).inserted_primary_key[0]


def test_model_kind_is_backfilled_from_the_outcome_not_the_name():
    """0006: a kind-less model takes its outcome's type, whatever its album's name says."""
    name = f"qi2_test_{RUN_ID}_kind"
    url = f"mysql+pymysql://root@127.0.0.1:3306/{name}?charset=utf8mb4"
    admin(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    engine = sa.create_engine(url)
    try:
        migrate.upgrade(url, "0005_nested_cv")
        meta = sa.MetaData()
        meta.reflect(engine, only=["model", "label_category", "feature_extraction"])
        tables = meta.tables
        with engine.begin() as connection:
            extraction = _insert(connection, tables["feature_extraction"], album_id="a")
            kinds = {}
            for label_type in ("Classification", "Survival"):
                category = _insert(
                    connection,
                    tables["label_category"],
                    album_id="a",
                    label_type=label_type,
                    name=label_type,
                )
                model = _insert(
                    connection,
                    tables["model"],
                    name="Survival study_model_1",  # the album's name says survival
                    kind=None,
                    feature_extraction_id=extraction,
                    label_category_id=category,
                )
                kinds[model] = label_type.lower()
        migrate.upgrade(url)
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT id, kind FROM model")).all()
        assert dict(rows) == kinds
        assert not next(c for c in sa.inspect(engine).get_columns("model") if c["name"] == "kind")[
            "nullable"
        ]
    finally:
        engine.dispose()
        admin(f"DROP DATABASE IF EXISTS {name}")
