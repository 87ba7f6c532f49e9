"""Keycloak access-token verification, free of any web framework.

Tokens are RS256 JWTs verified against the realm's JWKS (cached, refetched when a token names
an unknown `kid`). The Flask API (webapp/auth.py) and the Socket.IO service
(webapp/socket_service.py) both verify through TokenVerifier.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import jwt

from shared.config import Settings
from shared.errors import Unauthorized
from shared.lru import BoundedLru

log = logging.getLogger(__name__)
ALGORITHM = "RS256"
VERIFIED_CACHE_SIZE = 4096


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
        # Verified tokens by SHA-256 of the token: (principal, exp). A browser sends the same
        # token with every request for minutes; the RS256 check and claim parsing cost more
        # than a light request's own work. An entry is never used at or after the token's exp.
        self._verified: BoundedLru[bytes, tuple[Principal, float]] = BoundedLru(VERIFIED_CACHE_SIZE)

    def verify(self, token: str) -> Principal:
        """Return the principal of a valid token (cached until its exp); raise Unauthorized."""
        digest = hashlib.sha256(token.encode()).digest()
        principal = self._cached(digest)
        if principal is None:
            principal, expires = self._verify(token)
            self._remember(digest, principal, expires)
        return principal

    def _cached(self, digest: bytes) -> Principal | None:
        """Return the principal of a token verified before and not yet expired."""
        entry = self._verified.get(digest)
        if entry is None:
            return None
        if time.time() >= entry[1]:
            self._verified.discard(digest)
            return None
        return entry[0]

    def _remember(self, digest: bytes, principal: Principal, expires: float) -> None:
        """Cache a verified token until its exp; drop the least recently used beyond the size."""
        if time.time() >= expires:
            return  # accepted within the leeway only: verify it fully every time
        self._verified.put(digest, (principal, expires))

    def _verify(self, token: str) -> tuple[Principal, float]:
        """Check a token fully; return its principal and its exp."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("Malformed access token") from exc
        if header.get("alg") != ALGORITHM:
            raise Unauthorized(f"Unsupported token algorithm {header.get('alg')!r}")
        key = self._signing_key(header.get("kid"))
        claims = self._decode(token, key)
        return self._principal(claims), float(claims["exp"])

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
