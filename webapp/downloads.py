"""Attachment responses as the frontend parses them (`filename=` unquoted, header exposed)."""

from __future__ import annotations

from flask import Response

CHARSET_TYPES = ("text/",)
# E5's note on which patients the chart's `Ranking` was computed on (issue #15 §2).
RANKING_HEADER = "X-Feature-Ranking"
# Response headers a browser's script may read (CORS): download names, the ranking's note,
# where a started job can be read.
EXPOSED_HEADERS = ["Content-Disposition", RANKING_HEADER, "Location"]


def attachment(body: bytes, filename: str, mimetype: str) -> Response:
    """Build a download response; the filename must not contain `=` or quotes."""
    safe = filename.replace("=", "-").replace('"', "").replace(" ", "-")
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f"attachment; filename={safe}"
    return response
