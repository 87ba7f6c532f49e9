"""Command-line tools: `quantimage2 db-upgrade`, `seed-presets`, `worker-grants`; Flask's own."""

from __future__ import annotations

from pathlib import Path

import click
from flask import Flask
from flask.cli import FlaskGroup

from shared.config import get_settings
from shared.db import migrate
from shared.db.grants import worker_grant_statements
from shared.db.session import session_scope
from shared.presets import service as preset_service


@click.command("db-upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply the Alembic migrations to the configured database."""
    migrate.upgrade(revision=revision)
    click.echo(f"database upgraded to {revision}")


@click.command("seed-presets")
@click.option("--refresh", is_flag=True, help="Also overwrite default presets that changed.")
def seed_presets(refresh: bool) -> None:
    """Insert the four default feature presets (PET/CT, MRI, MRI/CT, MRI/PET) when missing."""
    with session_scope() as session:
        written = preset_service.seed_default_presets(session, refresh=refresh)
    click.echo(f"presets written: {', '.join(written) or 'none (all present)'}")


@click.command("worker-grants")
@click.option("--user", default="quantimage2_worker", show_default=True)
@click.option(
    "--host", default="%", show_default=True, help="e.g. 10.0.0.% for the workers' subnet"
)
@click.option(
    "--password-file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="the worker user's password (secrets/db-worker-password)",
)
@click.option("--database", help="default: DB_DATABASE")
@click.option("--require-ssl", is_flag=True, help="refuse the user's connections without TLS")
def worker_grants(
    user: str, host: str, password_file: Path, database: str | None, require_ssl: bool
) -> None:
    """Print the SQL that creates the worker machines' database user (run it as root)."""
    statements = worker_grant_statements(
        database=database or get_settings().db_database,
        user=user,
        host=host,
        password=password_file.read_text(encoding="utf-8").strip(),
        require_ssl=require_ssl,
    )
    click.echo("".join(f"{statement};\n" for statement in statements), nl=False)


def register(app: Flask) -> None:
    """Attach the commands to the app's CLI."""
    app.cli.add_command(db_upgrade)
    app.cli.add_command(seed_presets)
    app.cli.add_command(worker_grants)


def _create_app() -> Flask:
    from webapp import create_app

    return create_app()


main = FlaskGroup(create_app=_create_app, help="QuantImage v2 backend administration.")
