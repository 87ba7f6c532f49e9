"""Run Alembic migrations programmatically (CLI commands, tests, the dev platform)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    """Build an Alembic config pointing at our migrations and, optionally, a database URL."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("file_template", "%%(year)d%%(month).2d%%(day).2d_%%(rev)s_%%(slug)s")
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Upgrade the database to a revision (default: head)."""
    command.upgrade(alembic_config(url), revision)


def heads() -> list[str]:
    """Return the head revisions of the migration graph."""
    return list(ScriptDirectory.from_config(alembic_config()).get_heads())


def downgrade(url: str | None = None, revision: str = "-1") -> None:
    """Downgrade the database to a revision."""
    command.downgrade(alembic_config(url), revision)
