"""Command-line tools: `quantimage2 db-upgrade`, `quantimage2 seed-presets`, plus Flask's own."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import FlaskGroup

from shared.db import migrate
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


def register(app: Flask) -> None:
    """Attach the commands to the app's CLI."""
    app.cli.add_command(db_upgrade)
    app.cli.add_command(seed_presets)


def _create_app() -> Flask:
    from webapp import create_app

    return create_app()


main = FlaskGroup(create_app=_create_app, help="QuantImage v2 backend administration.")
