"""A small OIDC issuer with Keycloak's URL layout, for tests and the local dev platform.

It serves, per realm: the realm document (`public_key`), `.well-known/openid-configuration`,
the JWKS (`certs`), a token endpoint (password, client_credentials, refresh_token grants) and
userinfo. Access tokens carry Keycloak's claims (`realm_access`, `resource_access`, `azp`, ...).
Tests also mint tokens directly: expired ones, ones signed by a foreign key, other issuers.

Clients, as in the realm export: `quantimage2-frontend` is public (password and refresh grants,
no secret); `quantimage2-dev-service` is confidential, the only one allowed the
client_credentials grant, with the secret `quantimage2-dev-service-secret` (form field
`client_secret` or HTTP Basic). Any other client, or a wrong or missing secret, is refused
with 401 `invalid_client`, as Keycloak does.

Run alone: `python -m devkit.oidc_issuer --port 8180`.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, jsonify, request
from werkzeug.serving import BaseWSGIServer, make_server

DEFAULT_REALM = "QuantImage-v2"
DEFAULT_CLIENT = "quantimage2-frontend"
DEV_SERVICE_CLIENT = "quantimage2-dev-service"
DEV_SERVICE_SECRET = "quantimage2-dev-service-secret"  # dev-only, documented above


@dataclass
class User:
    """A test user: password, realm roles and client roles."""

    username: str
    password: str
    sub: str = field(default_factory=lambda: str(uuid.uuid4()))
    email: str | None = None
    realm_roles: list[str] = field(default_factory=list)
    client_roles: list[str] = field(default_factory=list)


def new_rsa_key() -> rsa.RSAPrivateKey:
    """Generate a 2048-bit RSA key."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class LocalIssuer:
    """Keys, users and token minting of one realm."""

    def __init__(
        self,
        realm: str = DEFAULT_REALM,
        client_id: str = DEFAULT_CLIENT,
        users: list[User] | None = None,
        base_url: str = "",
        clients: dict[str, str | None] | None = None,
    ) -> None:
        self.realm = realm
        self.client_id = client_id
        # client id -> secret; None marks a public client (no secret, no client_credentials).
        self.clients = (
            clients
            if clients is not None
            else {client_id: None, DEV_SERVICE_CLIENT: DEV_SERVICE_SECRET}
        )
        self.users = {u.username: u for u in (users or [])}
        self.base_url = base_url.rstrip("/")
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.active_kid = self.rotate()
        self._server: BaseWSGIServer | None = None

    # keys ----------------------------------------------------------------------------------
    def rotate(self) -> str:
        """Add a new signing key and make it the active one; return its kid."""
        kid = f"kid-{uuid.uuid4().hex[:12]}"
        self.keys[kid] = new_rsa_key()
        self.active_kid = kid
        return kid

    def jwks(self) -> dict[str, Any]:
        """Return the public keys as a JWKS document."""
        keys = []
        for kid, key in self.keys.items():
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            jwk.update(kid=kid, alg="RS256", use="sig")
            keys.append(jwk)
        return {"keys": keys}

    def public_key_b64(self) -> str:
        """Return the active public key as base64 DER (Keycloak's realm `public_key`)."""
        der = (
            self.keys[self.active_kid]
            .public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return base64.b64encode(der).decode()

    @property
    def issuer(self) -> str:
        """Return this realm's issuer URL."""
        return f"{self.base_url}/realms/{self.realm}"

    # tokens --------------------------------------------------------------------------------
    def claims_for(
        self, user: User, *, ttl: int = 300, typ: str = "Bearer", client: str | None = None
    ) -> dict[str, Any]:
        """Build Keycloak-style access-token claims for a user (of the default client)."""
        client = client or self.client_id
        now = int(time.time())
        claims: dict[str, Any] = {
            "exp": now + ttl,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "iss": self.issuer,
            "aud": "account",
            "sub": user.sub,
            "typ": typ,
            "azp": client,
            "scope": "openid profile email",
            "preferred_username": user.username,
            "realm_access": {"roles": list(user.realm_roles)},
            "resource_access": {client: {"roles": list(user.client_roles)}},
        }
        if user.email:
            claims["email"] = user.email
        return claims

    def sign(
        self,
        claims: dict[str, Any],
        *,
        kid: str | None = None,
        key: rsa.RSAPrivateKey | None = None,
        algorithm: str = "RS256",
        secret: bytes | str | None = None,
    ) -> str:
        """Sign claims; tests pass a foreign key, a kid or an HMAC secret to forge tokens."""
        kid = kid or self.active_kid
        signing_key: Any = secret if secret is not None else (key or self.keys[kid])
        return jwt.encode(claims, signing_key, algorithm=algorithm, headers={"kid": kid})

    def mint(self, username: str, *, ttl: int = 300, **overrides: Any) -> str:
        """Mint an access token for a known user, optionally overriding claims."""
        claims = self.claims_for(self.users[username], ttl=ttl)
        claims.update(overrides)
        return self.sign(claims)

    def add_user(self, user: User) -> User:
        """Register a user (replacing one of the same name)."""
        self.users[user.username] = user
        return user

    # HTTP ----------------------------------------------------------------------------------
    def wsgi_app(self) -> Flask:
        """Build the Flask app serving Keycloak's realm URLs."""
        app = Flask("oidc_issuer")
        realm_path = "/realms/<realm>"
        oidc = realm_path + "/protocol/openid-connect"

        @app.get(realm_path)
        def realm_doc(realm: str) -> Any:
            self._check_realm(realm)
            return jsonify(
                realm=self.realm,
                public_key=self.public_key_b64(),
                **{"token-service": f"{self.issuer}/protocol/openid-connect"},
                **{"account-service": f"{self.issuer}/account", "tokens-not-before": 0},
            )

        @app.get(realm_path + "/.well-known/openid-configuration")
        def well_known(realm: str) -> Any:
            self._check_realm(realm)
            base = f"{self.issuer}/protocol/openid-connect"
            return jsonify(
                issuer=self.issuer,
                authorization_endpoint=f"{base}/auth",
                token_endpoint=f"{base}/token",
                userinfo_endpoint=f"{base}/userinfo",
                jwks_uri=f"{base}/certs",
                end_session_endpoint=f"{base}/logout",
                grant_types_supported=["password", "client_credentials", "refresh_token"],
                id_token_signing_alg_values_supported=["RS256"],
                response_types_supported=["code", "token", "id_token"],
                subject_types_supported=["public"],
            )

        @app.get(oidc + "/certs")
        def certs(realm: str) -> Any:
            self._check_realm(realm)
            return jsonify(self.jwks())

        @app.post(oidc + "/token")
        def token(realm: str) -> Any:
            self._check_realm(realm)
            return self._token_response()

        @app.get(oidc + "/userinfo")
        def userinfo(realm: str) -> Any:
            self._check_realm(realm)
            header = request.headers.get("Authorization", "")
            try:
                claims = jwt.decode(
                    header.removeprefix("Bearer "),
                    self.keys[self.active_kid].public_key(),
                    algorithms=["RS256"],
                    options={"verify_aud": False},
                )
            except jwt.PyJWTError:
                return jsonify(error="invalid_token"), 401
            return jsonify(
                sub=claims["sub"],
                preferred_username=claims.get("preferred_username"),
                email=claims.get("email"),
            )

        return app

    def _check_realm(self, realm: str) -> None:
        """404 for any realm but ours."""
        if realm != self.realm:
            from flask import abort

            abort(404)

    def _client(self) -> tuple[str | None, str | None]:
        """Return the authenticated client id, or (None, reason) when it is refused."""
        basic = request.authorization
        if basic is not None and basic.type == "basic":
            client, secret = basic.username, basic.password
        else:
            client, secret = request.form.get("client_id"), request.form.get("client_secret")
        client = client or self.client_id
        if client not in self.clients:
            return None, f"Unknown client {client!r}"
        expected = self.clients[client]
        if expected is not None and not hmac.compare_digest(secret or "", expected):
            return None, "Invalid client or Invalid client credentials"
        return client, None

    def _token_response(self) -> Any:
        """Handle the token endpoint's grants (the `ttl` query parameter is a test hook)."""
        form = request.form
        ttl = int(request.args.get("ttl", form.get("ttl", 300)))
        grant = form.get("grant_type")
        client, refused = self._client()
        if client is None:
            return jsonify(error="invalid_client", error_description=refused), 401
        if grant == "password":
            user = self.users.get(form.get("username", ""))
            if user is None or user.password != form.get("password"):
                return jsonify(
                    error="invalid_grant", error_description="Invalid user credentials"
                ), 401
        elif grant == "refresh_token":
            try:
                claims = jwt.decode(
                    form.get("refresh_token", ""),
                    self.keys[self.active_kid].public_key(),
                    algorithms=["RS256"],
                    options={"verify_aud": False},
                )
            except jwt.PyJWTError:
                return jsonify(error="invalid_grant"), 400
            user = next((u for u in self.users.values() if u.sub == claims["sub"]), None)
            if user is None:
                return jsonify(error="invalid_grant"), 400
        elif grant == "client_credentials":
            if self.clients[client] is None:  # public clients have no service account
                return jsonify(
                    error="unauthorized_client",
                    error_description="Public client not allowed to retrieve service account",
                ), 400
            user = User(username=f"service-account-{client}", password="", sub=f"sa-{client}")
        else:
            return jsonify(error="unsupported_grant_type"), 400
        access = self.sign(self.claims_for(user, ttl=ttl, client=client))
        refresh = self.sign(self.claims_for(user, ttl=ttl * 2, typ="Refresh", client=client))
        return jsonify(
            access_token=access,
            expires_in=ttl,
            refresh_token=refresh,
            refresh_expires_in=ttl * 2,
            token_type="Bearer",
            scope="openid profile email",
            **{"not-before-policy": 0},
        )

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on a background thread; return the base URL (Keycloak's KEYCLOAK_BASE_URL)."""
        server = make_server(host, port, self.wsgi_app(), threaded=True)
        self._server = server
        self.base_url = f"http://{host}:{server.server_port}"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self.base_url + "/"

    def stop(self) -> None:
        """Stop the background server."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None


def dev_users() -> list[User]:
    """The users of the local dev platform: an admin and a regular researcher."""
    return [
        User("admin", "admin", sub="dev-admin", email="admin@example.org", client_roles=["admin"]),
        User("researcher", "researcher", sub="dev-researcher", email="researcher@example.org"),
    ]


def main() -> None:
    """Run the issuer in the foreground."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8180)
    parser.add_argument("--realm", default=DEFAULT_REALM)
    parser.add_argument("--client-id", default=DEFAULT_CLIENT)
    parser.add_argument(
        "--public-url", help="URL clients use to reach the issuer (the tokens' `iss` base)"
    )
    args = parser.parse_args()
    issuer = LocalIssuer(args.realm, args.client_id, dev_users())
    issuer.base_url = (args.public_url or f"http://{args.host}:{args.port}").rstrip("/")
    make_server(args.host, args.port, issuer.wsgi_app(), threaded=True).serve_forever()


if __name__ == "__main__":
    main()
