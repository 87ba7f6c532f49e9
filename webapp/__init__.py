"""The HTTP edge: parse the request, call a shared service, commit, serialise.

Socket.IO is served by its own process (webapp/socket_service.py, ADR 0001).
"""

from __future__ import annotations

import logging

from flask import Flask
from flask_cors import CORS

from shared import bootstrap
from shared.config import Settings, get_settings
from shared.runtime import Runtime
from webapp import auth, bodies, db, downloads, errors, openapi, serialize


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> Flask:
    """Build the Flask application (the only way to get one).

    Its sessions, Celery client and event publisher are built from `settings`, unless a
    runtime built from them is given (the tests share theirs with the test transaction).
    """
    settings = settings or get_settings()
    app = Flask(__name__, static_folder=None)
    app.json = serialize.FastJSONProvider(app)
    app.config.update(
        SETTINGS=settings,
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        JSON_SORT_KEYS=False,
    )
    logging.basicConfig(level=settings.log_level)

    CORS(
        app,
        origins=settings.cors_allowed_origins,
        expose_headers=downloads.EXPOSED_HEADERS,
        supports_credentials=False,
    )
    db.init_app(app, runtime or bootstrap.build(settings))
    auth.init_app(app, settings)
    bodies.init_app(app)  # after auth: a caller without a token gets 401 first
    errors.init_app(app)
    _register_blueprints(app)
    openapi.init_app(app)
    from webapp import cli

    cli.register(app)
    return app


def _register_blueprints(app: Flask) -> None:
    """Register one blueprint per domain."""
    from webapp.api import (
        albums,
        clinical,
        collections,
        extractions,
        health,
        labels,
        models,
        navigation,
        predictions,
        presets,
    )

    modules = (
        health,
        navigation,
        presets,
        albums,
        extractions,
        labels,
        collections,
        clinical,
        models,
        predictions,
    )
    for module in modules:
        app.register_blueprint(module.bp)
