"""The dev issuer: client_credentials only for its documented confidential client."""

from __future__ import annotations

import httpx
import jwt
import pytest

from devkit.oidc_issuer import DEV_SERVICE_CLIENT, DEV_SERVICE_SECRET


def token(issuer, data, **kwargs) -> httpx.Response:
    """POST to the issuer's token endpoint."""
    url = f"{issuer.issuer}/protocol/openid-connect/token"
    return httpx.post(url, data=data, timeout=10, **kwargs)


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        ({}, 400, "unauthorized_client"),  # the public frontend client has no service account
        ({"client_id": "quantimage2-frontend"}, 400, "unauthorized_client"),
        ({"client_id": "anything"}, 401, "invalid_client"),
        ({"client_id": "anything", "client_secret": "x"}, 401, "invalid_client"),
        ({"client_id": DEV_SERVICE_CLIENT}, 401, "invalid_client"),
        ({"client_id": DEV_SERVICE_CLIENT, "client_secret": "wrong"}, 401, "invalid_client"),
    ],
)
def test_client_credentials_need_a_known_confidential_client(issuer, data, status, error):
    response = token(issuer, {"grant_type": "client_credentials", **data})
    assert response.status_code == status
    assert response.json()["error"] == error
    assert "access_token" not in response.json()


@pytest.mark.parametrize("use_basic", [False, True])
def test_documented_service_client_gets_a_token(issuer, use_basic):
    if use_basic:
        response = token(
            issuer,
            {"grant_type": "client_credentials"},
            auth=(DEV_SERVICE_CLIENT, DEV_SERVICE_SECRET),
        )
    else:
        response = token(
            issuer,
            {
                "grant_type": "client_credentials",
                "client_id": DEV_SERVICE_CLIENT,
                "client_secret": DEV_SERVICE_SECRET,
            },
        )
    assert response.status_code == 200
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["azp"] == DEV_SERVICE_CLIENT
    assert claims["sub"] == f"sa-{DEV_SERVICE_CLIENT}"


def test_password_grant_of_the_public_client_still_works(issuer):
    response = token(issuer, {"grant_type": "password", "username": "bob", "password": "bob-pw"})
    assert response.status_code == 200
    wrong = token(issuer, {"grant_type": "password", "username": "bob", "password": "nope"})
    assert wrong.status_code == 401
