"""Keycloak bearer-token authentication and role checks.

Tokens are RS256 JWTs verified against the realm's JWKS (cached, refetched when a token names
an unknown `kid`). Every route needs a valid token unless it is marked `@public`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

import jwt
from flask import Flask, Response, current_app, g, request

from shared.config import Settings
from shared.errors import Forbidden, Unauthorized

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
ALGORITHM = "RS256"
PUBLIC_ATTR = "_qi2_public"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    user_id: str
    roles: frozenset[str]
    username: str | None
    email: str | None


class TokenVerifier:
    """Verify Keycloak access tokens against the realm's signing keys."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._jwks = jwt.PyJWKClient(
            settings.jwks_url,
            cache_keys=False,
            cache_jwk_set=True,
            lifespan=settings.keycloak_jwks_cache_seconds,
            timeout=10,
        )
        self._lock = threading.Lock()
        self._last_refresh = 0.0
        # An unknown kid triggers a JWKS refetch at most this often, so forged kids
        # cannot make us hammer Keycloak.
        self.min_refresh_interval = 5.0

    def verify(self, token: str) -> Principal:
        """Return the principal of a valid token; raise Unauthorized otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("Malformed access token") from exc
        if header.get("alg") != ALGORITHM:
            raise Unauthorized(f"Unsupported token algorithm {header.get('alg')!r}")
        key = self._signing_key(header.get("kid"))
        claims = self._decode(token, key)
        return self._principal(claims)

    def _signing_key(self, kid: str | None) -> jwt.PyJWK:
        """Find the key for a kid, refetching the JWKS once when the kid is unknown."""
        if not kid:
            raise Unauthorized("Access token has no key id")
        try:
            key = self._match(self._jwks.get_signing_keys(), kid)
            if key is None and self._may_refresh():
                key = self._match(self._jwks.get_signing_keys(refresh=True), kid)
        except jwt.PyJWKClientConnectionError as exc:
            log.error("JWKS fetch failed: %s", exc)
            raise Unauthorized("Cannot verify token: identity provider unreachable") from exc
        except jwt.PyJWKClientError as exc:
            raise Unauthorized("Cannot verify token: no signing keys") from exc
        if key is None:
            raise Unauthorized("Access token signed by an unknown key")
        return key

    @staticmethod
    def _match(keys: list[jwt.PyJWK], kid: str) -> jwt.PyJWK | None:
        """Return the RSA signing key with this kid, if any."""
        for key in keys:
            if key.key_id == kid and key.key_type == "RSA":
                return key
        return None

    def _may_refresh(self) -> bool:
        """Rate-limit forced JWKS refreshes."""
        with self._lock:
            now = time.monotonic()
            if now - self._last_refresh < self.min_refresh_interval:
                return False
            self._last_refresh = now
            return True

    def _decode(self, token: str, key: jwt.PyJWK) -> dict[str, Any]:
        """Check signature, expiry, issuer and (when configured) audience."""
        audience = self.settings.keycloak_audience or None
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[ALGORITHM],
                issuer=self.settings.expected_issuer,
                audience=audience,
                leeway=self.settings.keycloak_leeway_seconds,
                options={"require": ["exp", "iss", "sub"], "verify_aud": audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("Access token expired") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthorized("Access token issued by another issuer") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthorized("Access token not meant for this service") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"Invalid access token: {exc}") from exc
        self._check_claims(claims)
        return claims

    def _check_claims(self, claims: dict[str, Any]) -> None:
        """Reject ID/refresh tokens and clients that are not allowed."""
        if claims.get("typ", "Bearer") != "Bearer":
            raise Unauthorized("Not an access token")
        allowed = self.settings.keycloak_allowed_azp
        if allowed and claims.get("azp") not in allowed:
            raise Unauthorized("Access token issued to a client that is not allowed")

    def _principal(self, claims: dict[str, Any]) -> Principal:
        """Collect the user id and realm + client roles."""
        client = claims.get("resource_access", {}).get(self.settings.keycloak_client_id, {})
        roles = set(claims.get("realm_access", {}).get("roles", [])) | set(client.get("roles", []))
        return Principal(
            user_id=str(claims["sub"]),
            roles=frozenset(roles),
            username=claims.get("preferred_username"),
            email=claims.get("email"),
        )


def bearer_token(header: str | None) -> str:
    """Extract the token from an Authorization header value."""
    if not header:
        raise Unauthorized("Missing Authorization header")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <token>'")
    return token.strip()


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
