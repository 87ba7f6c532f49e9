"""Attachment responses as the frontend parses them (`filename=` unquoted, header exposed)."""

from __future__ import annotations

from flask import Response

CHARSET_TYPES = ("text/",)


def attachment(body: bytes, filename: str, mimetype: str) -> Response:
    """Build a download response; the filename must not contain `=` or quotes."""
    safe = filename.replace("=", "-").replace('"', "").replace(" ", "-")
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f"attachment; filename={safe}"
    return response
