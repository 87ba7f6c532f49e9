"""The HTTP + Socket.IO edge: parse the request, call a shared service, commit, serialise."""

from __future__ import annotations

import logging

from flask import Flask
from flask_cors import CORS

from shared import events
from shared.config import Settings, get_settings
from webapp import auth, db, errors, openapi
from webapp.extensions import socketio


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask application (the only way to get one)."""
    settings = settings or get_settings()
    app = Flask(__name__, static_folder=None)
    app.config.update(
        SETTINGS=settings,
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False  # the contract keeps insertion order
    logging.basicConfig(level=settings.log_level)

    CORS(
        app,
        origins=settings.cors_allowed_origins,
        expose_headers=["Content-Disposition"],
        supports_credentials=False,
    )
    db.init_app(app)
    auth.init_app(app, settings)
    errors.init_app(app)
    _register_blueprints(app)
    openapi.init_app(app)
    socketio.init_app(
        app,
        client_manager=events.listening_manager(
            settings.socket_message_queue, settings.socketio_channel
        ),
        async_mode="threading",
        cors_allowed_origins=settings.cors_allowed_origins,
    )
    from webapp import cli, sockets

    sockets.register(socketio, settings)
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
    )
    for module in modules:
        app.register_blueprint(module.bp)
