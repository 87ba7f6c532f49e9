"""Typed domain errors; the web edge maps each to one HTTP status in one place."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base class of errors a client can act on; `status` is the HTTP status to answer."""

    status = 400

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInput(DomainError):
    """The request is malformed or violates a rule (400)."""

    status = 400


class Unauthorized(DomainError):
    """Missing or invalid credentials (401)."""

    status = 401


class Forbidden(DomainError):
    """Authenticated but not allowed (403)."""

    status = 403


class NotFound(DomainError):
    """The resource does not exist or belongs to someone else (404)."""

    status = 404


class Conflict(DomainError):
    """The request clashes with existing state, e.g. a duplicate name (409)."""

    status = 409


class UpstreamError(DomainError):
    """An upstream service (image source, identity provider) failed (502)."""

    status = 502


class ServiceUnavailable(DomainError):
    """A dependency is down (503)."""

    status = 503
