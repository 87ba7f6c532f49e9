"""Bearer-token authentication and role checks of the Flask API.

Every route needs a valid token unless it is marked `@public`. The verification itself is
webapp/tokens.py, shared with the Socket.IO service.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, Response, current_app, g, request

from shared.config import Settings
from shared.errors import Forbidden
from webapp.tokens import Principal, TokenVerifier, bearer_token

__all__ = ["Principal", "TokenVerifier", "bearer_token", "current_user", "public", "require_role"]
F = TypeVar("F", bound=Callable[..., Any])
PUBLIC_ATTR = "_qi2_public"


def public(view: F) -> F:
    """Mark a view as reachable without a token."""
    setattr(view, PUBLIC_ATTR, True)
    return view


def _is_public(app: Flask, endpoint: str | None) -> bool:
    """Tell whether the matched endpoint is public (docs, health)."""
    if endpoint is None:
        return False
    if endpoint.startswith("openapi_") or endpoint == "openapi_docs":
        return True
    view = app.view_functions.get(endpoint)
    return bool(getattr(view, PUBLIC_ATTR, False))


def authenticate_request() -> None:
    """Before every request: require a valid token unless preflight or public."""
    if request.method == "OPTIONS" or _is_public(current_app, request.endpoint):
        return
    verifier: TokenVerifier = current_app.extensions["qi2_verifier"]
    token = bearer_token(request.headers.get("Authorization"))
    g.principal = verifier.verify(token)
    g.access_token = token  # forwarded to Kheops, which trusts the same realm; never logged


def secure_headers(response: Response) -> Response:
    """After every request: no MIME sniffing; nothing a token unlocked is cached anywhere."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    if request.method != "OPTIONS" and not _is_public(current_app, request.endpoint):
        response.headers["Cache-Control"] = "no-store"
    return response


def current_user() -> Principal:
    """Return the authenticated caller of this request."""
    return g.principal


def current_token() -> str:
    """Return the caller's raw access token (for the image source)."""
    return g.access_token


def require_role(role_setting: str = "keycloak_admin_role") -> Callable[[F], F]:
    """Require the role named by a setting (default: the admin role); 403 otherwise."""

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            role = getattr(current_app.config["SETTINGS"], role_setting)
            if role not in current_user().roles:
                raise Forbidden(f"This action needs the {role!r} role")
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator


def init_app(app: Flask, settings: Settings) -> None:
    """Install the verifier and the authentication hook."""
    app.extensions["qi2_verifier"] = TokenVerifier(settings)
    app.before_request(authenticate_request)
    app.after_request(secure_headers)
