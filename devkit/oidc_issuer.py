"""A small OIDC issuer with Keycloak's URL layout, for tests and the local dev platform.

It serves, per realm: the realm document (`public_key`), `.well-known/openid-configuration`,
the JWKS (`certs`), a token endpoint (authorization_code with PKCE S256, password,
client_credentials and refresh_token grants), userinfo, and what keycloak-js needs in a browser
(devkit/oidc_browser.py: login page, SSO cookies, logout, iframes, account). Tokens carry
Keycloak's claims (`realm_access`, `resource_access`, `azp`, `nonce`, `sid`, ...). Tests also
mint tokens directly: expired ones, ones signed by a foreign key, other issuers.

Clients, as in the realm export: `quantimage2-frontend` is public (browser login on its
registered redirect URIs, password and refresh grants, no secret); `quantimage2-dev-service` is
confidential, the only one allowed the client_credentials grant, with the secret
`quantimage2-dev-service-secret` (form field `client_secret` or HTTP Basic). Any other client,
or a wrong or missing secret, is refused with 401 `invalid_client`, as Keycloak does.

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
from flask import Flask, Response, abort, jsonify, request
from werkzeug.serving import BaseWSGIServer, make_server

from devkit.oidc_browser import BrowserLogin

DEFAULT_REALM = "QuantImage-v2"
DEFAULT_CLIENT = "quantimage2-frontend"
DEV_SERVICE_CLIENT = "quantimage2-dev-service"
DEV_SERVICE_SECRET = "quantimage2-dev-service-secret"  # dev-only, documented above
# Where the frontend's dev server and `./qi2 frontend` usually run (override per issuer).
DEFAULT_REDIRECT_URIS = ["http://127.0.0.1:3000/*", "http://localhost:3000/*"]
REFRESH_TTL = 1800  # Keycloak's default: the SSO session idle time
# What real Keycloak puts in every user's token besides the roles an admin grants.
DEFAULT_REALM_ROLES = ["offline_access", "uma_authorization"]
ACCOUNT_ROLES = ["manage-account", "manage-account-links", "view-profile"]
CORS_PATHS = ("/protocol/openid-connect/token", "/protocol/openid-connect/userinfo", "/account")


@dataclass
class User:
    """A test user: password, realm roles and client roles."""

    username: str
    password: str
    sub: str = field(default_factory=lambda: str(uuid.uuid4()))
    email: str | None = None
    realm_roles: list[str] = field(default_factory=list)
    client_roles: list[str] = field(default_factory=list)
    first_name: str | None = None
    last_name: str | None = None


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
        redirect_uris: list[str] | None = None,
        web_origins: list[str] | None = None,
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
        # The public client's browser login; web origins `+` = its redirect URIs' origins.
        self.browser = BrowserLogin(
            self,
            DEFAULT_REDIRECT_URIS if redirect_uris is None else redirect_uris,
            ["+"] if web_origins is None else web_origins,
        )

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
        self,
        user: User,
        *,
        ttl: int = 300,
        typ: str = "Bearer",
        client: str | None = None,
        session: Any = None,
        nonce: str | None = None,
    ) -> dict[str, Any]:
        """Build Keycloak-style claims for a user: access (Bearer), ID or Refresh token."""
        client = client or self.client_id
        now = int(time.time())
        claims: dict[str, Any] = {
            "exp": now + ttl,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "iss": self.issuer,
            "aud": {"ID": client, "Refresh": self.issuer}.get(typ, "account"),
            "sub": user.sub,
            "typ": typ,
            "azp": client,
            "scope": "openid profile email",
        }
        if session is not None:
            claims.update(auth_time=session.auth_time, session_state=session.id, sid=session.id)
        if nonce:
            claims["nonce"] = nonce  # keycloak-js compares it in all three tokens
        if typ == "Refresh":
            return claims
        claims.update(self._profile(user))
        if typ == "Bearer":
            claims.update(
                realm_access={"roles": [*user.realm_roles, *DEFAULT_REALM_ROLES]},
                resource_access={
                    client: {"roles": list(user.client_roles)},
                    "account": {"roles": ACCOUNT_ROLES},
                },
            )
            if client in self.clients and self.clients[client] is None:
                claims["allowed-origins"] = self.browser.allowed_origin_list()
        return claims

    @staticmethod
    def _profile(user: User) -> dict[str, Any]:
        """The profile claims of the `profile` and `email` scopes."""
        claims: dict[str, Any] = {"preferred_username": user.username}
        if user.email:
            claims.update(email=user.email, email_verified=True)
        names = [n for n in (user.first_name, user.last_name) if n]
        if names:
            claims.update(name=" ".join(names), given_name=user.first_name)
            claims.update(family_name=user.last_name)
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

    def verify(self, token: str, *, typ: str = "Bearer") -> dict[str, Any]:
        """Verify one of our tokens (key by kid, expiry, issuer, type); raise PyJWTError."""
        kid = jwt.get_unverified_header(token).get("kid")
        if kid not in self.keys:
            raise jwt.InvalidKeyError("unknown kid")
        claims = jwt.decode(
            token,
            self.keys[kid].public_key(),
            algorithms=["RS256"],
            issuer=self.issuer,
            options={"verify_aud": False, "require": ["exp", "sub"]},
        )
        if claims.get("typ", typ) != typ:
            raise jwt.InvalidTokenError(f"not a {typ} token")
        return claims

    def bearer_claims(self) -> dict[str, Any] | None:
        """Return the verified access token of the Authorization header (any case of bearer)."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        try:
            return self.verify(token.strip())
        except jwt.PyJWTError:
            return None

    def add_user(self, user: User) -> User:
        """Register a user (replacing one of the same name)."""
        self.users[user.username] = user
        return user

    def find_user(self, login: str) -> User | None:
        """Return the user with this username or e-mail, as Keycloak's login form accepts."""
        if login in self.users:
            return self.users[login]
        return next((u for u in self.users.values() if u.email and u.email == login), None)

    def user_by_sub(self, sub: str) -> User | None:
        """Return the user with this subject."""
        return next((u for u in self.users.values() if u.sub == sub), None)

    # HTTP ----------------------------------------------------------------------------------
    def wsgi_app(self) -> Flask:
        """Build the Flask app serving Keycloak's realm URLs."""
        app = Flask("oidc_issuer")
        realm_path = "/realms/<realm>"
        oidc = realm_path + "/protocol/openid-connect"

        @app.get(realm_path)
        def realm_doc(realm: str) -> Any:
            self.check_realm(realm)
            return jsonify(
                realm=self.realm,
                public_key=self.public_key_b64(),
                **{"token-service": f"{self.issuer}/protocol/openid-connect"},
                **{"account-service": f"{self.issuer}/account", "tokens-not-before": 0},
            )

        @app.get(realm_path + "/.well-known/openid-configuration")
        def well_known(realm: str) -> Any:
            self.check_realm(realm)
            return jsonify(self.discovery())

        @app.get(oidc + "/certs")
        def certs(realm: str) -> Any:
            self.check_realm(realm)
            return jsonify(self.jwks())

        @app.route(oidc + "/token", methods=["POST", "OPTIONS"])
        def token(realm: str) -> Any:
            self.check_realm(realm)
            if request.method == "OPTIONS":
                return Response(status=200)
            return self._token_response()

        @app.route(oidc + "/userinfo", methods=["GET", "POST", "OPTIONS"])
        def userinfo(realm: str) -> Any:
            self.check_realm(realm)
            if request.method == "OPTIONS":
                return Response(status=200)
            claims = self.bearer_claims()
            user = self.user_by_sub(claims["sub"]) if claims else None
            if claims is None or user is None:
                response = jsonify(
                    error="invalid_token", error_description="Token verification failed"
                )
                response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
                return response, 401
            return jsonify(sub=user.sub, **self._profile(user))

        @app.after_request
        def cors(response: Response) -> Response:
            if request.path.endswith(CORS_PATHS):
                return self.browser.cors(response)
            return response

        self.browser.register(app, realm_path, oidc)
        return app

    def discovery(self) -> dict[str, Any]:
        """The OpenID Provider metadata: only what this issuer serves."""
        base = f"{self.issuer}/protocol/openid-connect"
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{base}/auth",
            "token_endpoint": f"{base}/token",
            "userinfo_endpoint": f"{base}/userinfo",
            "jwks_uri": f"{base}/certs",
            "end_session_endpoint": f"{base}/logout",
            "check_session_iframe": f"{base}/login-status-iframe.html",
            "grant_types_supported": [
                "authorization_code",
                "password",
                "client_credentials",
                "refresh_token",
            ],
            "response_types_supported": ["code"],
            "response_modes_supported": ["query", "fragment"],
            "code_challenge_methods_supported": ["S256"],
            "prompt_values_supported": ["none", "login"],
            "scopes_supported": ["openid", "profile", "email"],
            "claims_supported": [
                "sub",
                "iss",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "nonce",
                "preferred_username",
                "email",
                "email_verified",
                "name",
                "given_name",
                "family_name",
            ],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "subject_types_supported": ["public"],
            "frontchannel_logout_supported": False,
            "backchannel_logout_supported": False,
        }

    def check_realm(self, realm: str) -> None:
        """404 for any realm but ours."""
        if realm != self.realm:
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
        client, refused = self._client()
        if client is None:
            return jsonify(error="invalid_client", error_description=refused), 401
        grant = form.get("grant_type")
        handler = {
            "authorization_code": self._code_grant,
            "password": self._password_grant,
            "refresh_token": self._refresh_grant,
            "client_credentials": self._service_grant,
        }.get(grant or "")
        if handler is None:
            return jsonify(error="unsupported_grant_type"), 400
        granted = handler(client)
        if isinstance(granted, Response):
            return granted
        user, session, nonce = granted
        return jsonify(self._tokens(user, client, ttl, session, nonce))

    def _code_grant(self, client: str) -> Any:
        """authorization_code: redeem a code of the browser login (PKCE checked there)."""
        session, code = self.browser.redeem(request.form, client)
        if session is None:
            return _grant_error("invalid_grant", str(code))
        return session.user, session, code.nonce

    def _password_grant(self, client: str) -> Any:
        """password: the tests' and scripts' direct login; it opens a session, as Keycloak's."""
        user = self.users.get(request.form.get("username", ""))
        if user is None or user.password != request.form.get("password"):
            return _grant_error("invalid_grant", "Invalid user credentials", 401)
        return user, self.browser.start_session(user), None

    def _refresh_grant(self, client: str) -> Any:
        """refresh_token: new tokens for the same session and nonce while the session lives."""
        try:
            claims = self.verify(request.form.get("refresh_token", ""), typ="Refresh")
        except jwt.PyJWTError:
            return _grant_error("invalid_grant", "Invalid refresh token")
        if claims.get("azp", client) != client:
            return _grant_error("invalid_grant", "Token client and authorized client don't match")
        user = self.user_by_sub(claims["sub"])
        session = self.browser.session(claims.get("sid"))
        if user is None or ("sid" in claims and session is None):
            return _grant_error("invalid_grant", "Session not active")
        return user, session, claims.get("nonce")

    def _service_grant(self, client: str) -> Any:
        """client_credentials: confidential clients only (public ones have no service account)."""
        if self.clients[client] is None:
            return _grant_error(
                "unauthorized_client", "Public client not allowed to retrieve service account"
            )
        account = User(username=f"service-account-{client}", password="", sub=f"sa-{client}")
        return account, None, None

    def _tokens(
        self, user: User, client: str, ttl: int, session: Any, nonce: str | None
    ) -> dict[str, Any]:
        """Keycloak's token response: access, refresh and (with a session) ID token."""
        refresh_ttl = max(ttl * 2, REFRESH_TTL)
        common = {"client": client, "session": session, "nonce": nonce}
        body: dict[str, Any] = {
            "access_token": self.sign(self.claims_for(user, ttl=ttl, **common)),
            "expires_in": ttl,
            "refresh_token": self.sign(
                self.claims_for(user, ttl=refresh_ttl, typ="Refresh", **common)
            ),
            "refresh_expires_in": refresh_ttl,
            "token_type": "Bearer",
            "scope": "openid profile email",
            "not-before-policy": 0,
        }
        if session is not None:
            body["id_token"] = self.sign(self.claims_for(user, ttl=ttl, typ="ID", **common))
            body["session_state"] = session.id
        return body

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


def _grant_error(error: str, description: str, status: int = 400) -> Response:
    """A token endpoint error in Keycloak's shape."""
    response = jsonify(error=error, error_description=description)
    response.status_code = status
    return response


def dev_users() -> list[User]:
    """The users of the local dev platform: an admin and a regular researcher."""
    return [
        User(
            "admin",
            "admin",
            sub="dev-admin",
            email="admin@example.org",
            client_roles=["admin"],
            first_name="Ada",
            last_name="Admin",
        ),
        User(
            "researcher",
            "researcher",
            sub="dev-researcher",
            email="researcher@example.org",
            first_name="Rita",
            last_name="Researcher",
        ),
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
    parser.add_argument(
        "--redirect-uri",
        action="append",
        help="a registered redirect URI of the frontend client (repeatable; `*` at the end "
        f"matches any rest); default {' '.join(DEFAULT_REDIRECT_URIS)}",
    )
    parser.add_argument(
        "--cors-origins",
        default="+",
        help="comma-separated origins allowed on token/userinfo/account, as the API's "
        "CORS_ALLOWED_ORIGINS; `+` = the redirect URIs' origins (default), `*` = any",
    )
    args = parser.parse_args()
    issuer = LocalIssuer(
        args.realm,
        args.client_id,
        dev_users(),
        redirect_uris=args.redirect_uri or DEFAULT_REDIRECT_URIS,
        web_origins=[o.strip() for o in args.cors_origins.split(",") if o.strip()],
    )
    issuer.base_url = (args.public_url or f"http://{args.host}:{args.port}").rstrip("/")
    make_server(args.host, args.port, issuer.wsgi_app(), threaded=True).serve_forever()


if __name__ == "__main__":
    main()
