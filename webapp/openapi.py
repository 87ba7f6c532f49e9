"""OpenAPI 3 document generated from the route and schema declarations, plus browsable docs."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, redirect

from webapp.auth import public
from webapp.extensions import spec


@public
def openapi_json() -> Any:
    """Serve the OpenAPI document."""
    return jsonify(spec.spec)


@public
def docs_index() -> Any:
    """Send the browser to the interactive docs."""
    return redirect("/docs/swagger/")


def init_app(app: Flask) -> None:
    """Register the docs routes (spectree adds /docs/swagger/, /docs/redoc/, ...)."""
    app.add_url_rule("/openapi.json", "openapi_json", openapi_json)
    app.add_url_rule("/docs", "openapi_docs_index", docs_index)
    spec.register(app)
