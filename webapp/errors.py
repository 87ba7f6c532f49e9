"""One error mapping: every error response is JSON `{"error": "<readable message>"}`."""

from __future__ import annotations

import logging

import sqlalchemy.exc as sa_exc
from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from shared.db.retry import is_transient
from shared.errors import DomainError, Unauthorized

log = logging.getLogger(__name__)

HTTP_MESSAGES = {
    404: "Not found",
    405: "Method not allowed",
}


def error_response(status: int, message: str, details: object = None) -> Response:
    """Build a JSON error response."""
    body: dict[str, object] = {"error": message}
    if details is not None:
        body["details"] = details
    response = jsonify(body)
    response.status_code = status
    return response


def _domain_error(exc: DomainError) -> Response:
    """Map a typed domain error to its status."""
    response = error_response(exc.status, exc.message, exc.details)
    if isinstance(exc, Unauthorized):
        response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response


def _http_error(exc: HTTPException) -> Response:
    """Turn Werkzeug's HTML errors (404, 405, 413, ...) into JSON, keeping their headers."""
    status = exc.code or 500
    if isinstance(exc, RequestEntityTooLarge):
        message = "Request body too large"
    else:
        message = HTTP_MESSAGES.get(status) or exc.description or exc.name
    response = error_response(status, message)
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _unexpected(exc: Exception) -> Response:
    """Log the traceback server-side; never send it to the client."""
    log.exception("Unhandled error: %s", exc)
    return error_response(500, "Internal server error")


def _database_error(exc: sa_exc.DBAPIError) -> Response:
    """A database that is briefly away is a 503 the client may retry; anything else a 500."""
    if not is_transient(exc):
        return _unexpected(exc)
    log.warning("database unavailable: %s", exc.orig)
    response = error_response(503, "The database is unavailable; try again later")
    response.headers["Retry-After"] = "5"
    return response


def _integrity_error(exc: sa_exc.IntegrityError) -> Response:
    """A write the database's constraints refused is a 409: the services check duplicates and
    owners first, so what still lands here is a race or a collation the check did not see
    (MariaDB's unique keys treat 'a' and 'a ' as one name). The log names the constraint
    error, never the values (they may be patient ids)."""
    code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
    log.warning("the database refused a write (%s): %s", code, (exc.statement or "")[:200])
    return error_response(
        409, "The request conflicts with existing data (a duplicate name or a vanished row)"
    )


def init_app(app: Flask) -> None:
    """Register the handlers."""
    app.register_error_handler(DomainError, _domain_error)
    app.register_error_handler(sa_exc.IntegrityError, _integrity_error)
    app.register_error_handler(sa_exc.DBAPIError, _database_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
