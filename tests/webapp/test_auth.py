"""Bearer-token verification: what is accepted and every way a token is refused."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from jwt.utils import base64url_encode

from devkit.oidc_issuer import new_rsa_key


def get_presets(client, token: str | None = None, header: str | None = None):
    """Call a protected route with a token (or a raw Authorization header)."""
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if header is not None:
        headers["Authorization"] = header
    return client.get("/feature-presets", headers=headers)


def assert_unauthorized(response, fragment: str) -> None:
    """A 401 with a JSON error naming the problem."""
    assert response.status_code == 401
    assert response.is_json
    assert fragment.lower() in response.json["error"].lower()
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_valid_token_is_accepted(client, auth):
    response = get_presets(client, auth.token("bob"))
    assert response.status_code == 200


def test_missing_header_is_401(client):
    assert_unauthorized(get_presets(client), "Missing Authorization header")


def test_non_bearer_scheme_is_401(client, auth):
    assert_unauthorized(get_presets(client, header=f"Basic {auth.token()}"), "Bearer <token>")


def test_garbage_token_is_401(client):
    assert_unauthorized(get_presets(client, "not-a-jwt"), "Malformed")


def test_expired_token_is_401(client, auth):
    assert_unauthorized(get_presets(client, auth.token("bob", ttl=-120)), "expired")


def test_token_signed_by_another_key_with_known_kid_is_401(client, issuer):
    claims = issuer.claims_for(issuer.users["bob"])
    forged = issuer.sign(claims, key=new_rsa_key())  # the issuer's kid, a foreign key
    assert_unauthorized(get_presets(client, forged), "Signature verification failed")


def test_token_with_unknown_kid_is_401(client, issuer):
    claims = issuer.claims_for(issuer.users["bob"])
    forged = issuer.sign(claims, key=new_rsa_key(), kid="kid-unknown")
    assert_unauthorized(get_presets(client, forged), "unknown key")


def test_alg_none_is_401(client, issuer):
    claims = issuer.claims_for(issuer.users["alice"])
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": issuer.active_kid})
    assert_unauthorized(get_presets(client, unsigned), "algorithm")


def test_hs256_signed_with_the_public_key_is_401(client, issuer):
    """Algorithm confusion: an HMAC keyed with the published RSA public key."""
    public_pem = (
        issuer.keys[issuer.active_kid]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    claims = issuer.claims_for(issuer.users["alice"])
    # PyJWT refuses PEM keys as HMAC secrets, so the forged token is assembled by hand.
    header = {"alg": "HS256", "typ": "JWT", "kid": issuer.active_kid}
    signing_input = b".".join(
        base64url_encode(json.dumps(part).encode()) for part in (header, claims)
    )
    signature = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    token = (signing_input + b"." + base64url_encode(signature)).decode()
    assert_unauthorized(get_presets(client, token), "algorithm")


def test_wrong_issuer_is_401(client, issuer):
    claims = issuer.claims_for(issuer.users["bob"])
    claims["iss"] = "http://127.0.0.1:1/realms/Other"
    assert_unauthorized(get_presets(client, issuer.sign(claims)), "issuer")


def test_id_token_is_not_an_access_token(client, issuer):
    claims = issuer.claims_for(issuer.users["bob"], typ="ID")
    assert_unauthorized(get_presets(client, issuer.sign(claims)), "Not an access token")


def test_token_without_sub_is_401(client, issuer):
    claims = issuer.claims_for(issuer.users["bob"])
    del claims["sub"]
    assert_unauthorized(get_presets(client, issuer.sign(claims)), "sub")


def test_rotated_key_is_fetched_on_unknown_kid(client, issuer, auth):
    assert get_presets(client, auth.token("bob")).status_code == 200  # JWKS cached now
    old_kid = issuer.active_kid
    new_kid = issuer.rotate()
    try:
        response = get_presets(client, auth.token("bob"))
        assert response.status_code == 200, response.json
        assert jwt.get_unverified_header(auth.token("bob"))["kid"] == new_kid
    finally:
        issuer.active_kid = old_kid


def test_audience_is_checked_when_configured(app, client, issuer):
    settings = app.config["SETTINGS"]
    verifier = app.extensions["qi2_verifier"]
    original = settings.keycloak_audience
    settings.keycloak_audience = ["quantimage2-api"]
    try:
        wrong = issuer.sign(issuer.claims_for(issuer.users["bob"]))  # aud: account
        assert_unauthorized(get_presets(client, wrong), "not meant for this service")
        right = issuer.claims_for(issuer.users["bob"])
        right["aud"] = ["account", "quantimage2-api"]
        assert get_presets(client, issuer.sign(right)).status_code == 200
    finally:
        settings.keycloak_audience = original
        assert verifier.settings is settings


def test_user_id_is_the_sub_claim(client, auth):
    response = client.post("/navigation", json={"path": "/x"}, headers=auth.headers("alice"))
    assert response.status_code == 200
    assert response.json["user_id"] == "user-alice"


@pytest.mark.parametrize(
    ("username", "status"),
    [("alice", 200), ("carol", 200), ("bob", 403)],
    ids=["client-role", "realm-role", "no-role"],
)
def test_admin_role_from_client_or_realm_roles(client, auth, username, status, preset_yaml):
    response = client.post(
        "/feature-presets",
        data={
            "name": f"preset of {username}",
            "file": (preset_yaml(), "p.yaml", "application/x-yaml"),
        },
        headers=auth.headers(username),
        content_type="multipart/form-data",
    )
    assert response.status_code == status, response.json
    if status == 403:
        assert "admin" in response.json["error"]


def test_cors_preflight_passes_without_token(client):
    response = client.options(
        "/feature-presets",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] in ("*", "http://localhost:3000")


def test_content_disposition_is_exposed(client, auth):
    response = client.get(
        "/feature-presets", headers={**auth.headers(), "Origin": "http://localhost:3000"}
    )
    assert "Content-Disposition" in response.headers["Access-Control-Expose-Headers"]


def test_clock_skew_beyond_leeway_is_refused(client, issuer):
    claims = issuer.claims_for(issuer.users["bob"])
    claims["exp"] = int(time.time()) - 60
    assert_unauthorized(get_presets(client, issuer.sign(claims)), "expired")
