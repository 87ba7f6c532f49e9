"""The dev issuer's browser login, as keycloak-js 16 drives it against Keycloak.

Real HTTP against the session issuer (tests/conftest.py: users alice, bob, carol; the frontend
client's redirect URIs are the defaults, http://127.0.0.1:3000/* and http://localhost:3000/*).
"""

from __future__ import annotations

import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest

from devkit.oidc_browser import s256

APP = "http://127.0.0.1:3000"
CLIENT = "quantimage2-frontend"


def oidc(issuer, path: str) -> str:
    """Return an URL of the realm's openid-connect protocol."""
    return f"{issuer.issuer}/protocol/openid-connect/{path}"


def auth_params(**extra: str) -> dict[str, str]:
    """The query keycloak-js builds for login (fragment mode, nonce, state)."""
    params = {
        "client_id": CLIENT,
        "redirect_uri": f"{APP}/dashboard",
        "state": secrets.token_hex(8),
        "response_mode": "fragment",
        "response_type": "code",
        "scope": "openid",
        "nonce": secrets.token_hex(8),
    }
    params.update(extra)
    return params


def callback(location: str) -> dict[str, str]:
    """Parse the parameters of a redirect back to the app (fragment or query)."""
    parts = urlsplit(location)
    return {k: v[0] for k, v in parse_qs(parts.fragment or parts.query).items()}


def log_in(
    issuer, browser: httpx.Client, password: str = "bob-pw", **extra: str
) -> tuple[httpx.Response, dict[str, str]]:
    """Open the login page and post Keycloak's form as bob; return the answer and the request."""
    params = auth_params(**extra)
    page = browser.get(oidc(issuer, "auth"), params=params)
    assert page.status_code == 200
    for element in ('id="username"', 'id="password"', 'id="kc-login"', 'id="kc-form-login"'):
        assert element in page.text
    action = page.text.split('action="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    answer = browser.post(action, data={"username": "bob", "password": password, "login": "x"})
    return answer, params


def exchange(issuer, code: str, params: dict[str, str], **extra: str) -> httpx.Response:
    """The token request keycloak-js sends after the redirect."""
    data = {
        "code": code,
        "grant_type": "authorization_code",
        "client_id": CLIENT,
        "redirect_uri": params["redirect_uri"],
        **extra,
    }
    return httpx.post(oidc(issuer, "token"), data=data, headers={"Origin": APP}, timeout=10)


@pytest.fixture
def browser():
    with httpx.Client(timeout=10, follow_redirects=False) as client:
        yield client


def test_login_form_then_code_with_state_and_session_state(issuer, browser):
    answer, params = log_in(issuer, browser)
    assert answer.status_code == 302
    location = answer.headers["location"]
    assert location.startswith(f"{APP}/dashboard#")
    back = callback(location)
    assert back["state"] == params["state"]
    assert back["session_state"] and back["code"]
    assert "KEYCLOAK_IDENTITY" in browser.cookies and "KEYCLOAK_SESSION" in browser.cookies


def test_code_grant_with_pkce_gives_keycloak_shaped_tokens_with_the_nonce(issuer, browser):
    verifier = secrets.token_urlsafe(64)
    answer, params = log_in(
        issuer, browser, code_challenge=s256(verifier), code_challenge_method="S256"
    )
    back = callback(answer.headers["location"])
    response = exchange(issuer, back["code"], params, code_verifier=verifier)
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == APP
    assert response.headers["access-control-allow-credentials"] == "true"
    body = response.json()
    tokens = {
        kind: jwt.decode(body[kind], options={"verify_signature": False})
        for kind in ("access_token", "id_token", "refresh_token")
    }
    for claims in tokens.values():
        assert claims["nonce"] == params["nonce"]
        assert claims["iss"] == issuer.issuer
        assert claims["sid"] == back["session_state"]
    access = tokens["access_token"]
    assert access["typ"] == "Bearer" and access["azp"] == CLIENT
    assert access["preferred_username"] == "bob" and access["email"] == "bob@example.org"
    assert "offline_access" in access["realm_access"]["roles"]
    assert access["resource_access"][CLIENT] == {"roles": []}
    assert tokens["id_token"]["typ"] == "ID" and tokens["id_token"]["aud"] == CLIENT
    assert tokens["refresh_token"]["typ"] == "Refresh"
    # The backend takes the access token, never the ID token.
    issuer.verify(body["access_token"])
    with pytest.raises(jwt.InvalidTokenError):
        issuer.verify(body["id_token"])


def test_admin_gets_the_client_role_the_frontend_reads(issuer, browser):
    params = auth_params()
    page = browser.get(oidc(issuer, "auth"), params=params)
    action = page.text.split('action="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    answer = browser.post(action, data={"username": "alice", "password": "alice-pw"})
    body = exchange(issuer, callback(answer.headers["location"])["code"], params).json()
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["resource_access"][CLIENT]["roles"] == ["admin"]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"code_verifier": "x" * 43}, "PKCE verification failed: Code mismatch"),
        ({"code_verifier": None}, "PKCE code verifier not specified"),
        ({"redirect_uri": f"{APP}/elsewhere"}, "Incorrect redirect_uri"),
        ({"client_id": "quantimage2-dev-service"}, None),
    ],
)
def test_code_grant_refusals(issuer, browser, change, error):
    verifier = secrets.token_urlsafe(64)
    answer, params = log_in(
        issuer, browser, code_challenge=s256(verifier), code_challenge_method="S256"
    )
    code = callback(answer.headers["location"])["code"]
    data = {
        "code": code,
        "grant_type": "authorization_code",
        "client_id": CLIENT,
        "redirect_uri": params["redirect_uri"],
        "code_verifier": verifier,
    }
    data.update(change)
    data = {k: v for k, v in data.items() if v is not None}
    response = httpx.post(oidc(issuer, "token"), data=data, timeout=10)
    assert response.status_code in (400, 401)
    assert "access_token" not in response.json()
    if error is None:  # client authentication fails first: the code is not looked at
        assert response.json()["error"] == "invalid_client"
        return
    assert response.json() == {"error": "invalid_grant", "error_description": error}
    # A code refused for its own reasons is spent, as in Keycloak.
    assert exchange(issuer, code, params, code_verifier=verifier).status_code == 400


def test_a_code_is_used_once(issuer, browser):
    answer, params = log_in(issuer, browser)
    code = callback(answer.headers["location"])["code"]
    assert exchange(issuer, code, params).status_code == 200
    again = exchange(issuer, code, params)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_query_response_mode(issuer, browser):
    answer, params = log_in(issuer, browser, response_mode="query")
    location = answer.headers["location"]
    assert location.startswith(f"{APP}/dashboard?") and "#" not in location
    assert callback(location)["state"] == params["state"]


def test_wrong_password_shows_the_form_again_with_an_error(issuer, browser):
    answer, _ = log_in(issuer, browser, password="wrong")
    assert answer.status_code == 200
    assert "location" not in answer.headers
    assert 'id="input-error"' in answer.text and "Invalid username or password." in answer.text
    assert 'id="kc-login"' in answer.text and 'value="bob"' in answer.text
    assert "KEYCLOAK_IDENTITY" not in browser.cookies


@pytest.mark.parametrize(
    "redirect_uri",
    ["http://evil.example/cb", "http://127.0.0.1:3001/dashboard", f"{APP}/x#frag", ""],
)
def test_unregistered_redirect_uri_is_refused_without_a_redirect(issuer, browser, redirect_uri):
    response = browser.get(oidc(issuer, "auth"), params=auth_params(redirect_uri=redirect_uri))
    assert response.status_code == 400
    assert "Invalid parameter: redirect_uri" in response.text
    assert "location" not in response.headers and 'id="kc-login"' not in response.text


def test_unknown_or_confidential_client_gets_no_login_page(issuer, browser):
    for client in ("nobody", "quantimage2-dev-service"):
        response = browser.get(oidc(issuer, "auth"), params=auth_params(client_id=client))
        assert response.status_code == 400 and "Client not found." in response.text


def test_implicit_flow_and_plain_pkce_are_refused_by_redirect(issuer, browser):
    implicit = browser.get(oidc(issuer, "auth"), params=auth_params(response_type="token"))
    assert callback(implicit.headers["location"])["error"] == "unsupported_response_type"
    plain = browser.get(
        oidc(issuer, "auth"),
        params=auth_params(code_challenge="a" * 43, code_challenge_method="plain"),
    )
    assert callback(plain.headers["location"])["error"] == "invalid_request"


def test_prompt_none_answers_from_the_session_cookie(issuer, browser):
    silent = auth_params(prompt="none", redirect_uri=f"{APP}/silent-check-sso.html")
    refused = browser.get(oidc(issuer, "auth"), params=silent)
    back = callback(refused.headers["location"])
    assert back == {"state": silent["state"], "error": "login_required"}
    log_in(issuer, browser)
    answer = browser.get(oidc(issuer, "auth"), params=silent)
    back = callback(answer.headers["location"])
    assert back["code"] and back["state"] == silent["state"]
    tokens = exchange(issuer, back["code"], silent).json()
    claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
    assert claims["nonce"] == silent["nonce"] and claims["preferred_username"] == "bob"


def test_refresh_keeps_the_nonce_and_stops_after_logout(issuer, browser):
    answer, params = log_in(issuer, browser)
    tokens = exchange(issuer, callback(answer.headers["location"])["code"], params).json()
    refresh = {"grant_type": "refresh_token", "client_id": CLIENT}
    renewed = httpx.post(
        oidc(issuer, "token"),
        data={**refresh, "refresh_token": tokens["refresh_token"]},
        headers={"Origin": APP},
        timeout=10,
    )
    assert renewed.status_code == 200
    assert renewed.headers["access-control-allow-origin"] == APP
    claims = jwt.decode(renewed.json()["access_token"], options={"verify_signature": False})
    assert claims["nonce"] == params["nonce"]
    out = browser.get(oidc(issuer, "logout"), params={"redirect_uri": f"{APP}/"})
    assert out.status_code == 302 and out.headers["location"] == f"{APP}/"
    stale = httpx.post(
        oidc(issuer, "token"),
        data={**refresh, "refresh_token": renewed.json()["refresh_token"]},
        timeout=10,
    )
    assert stale.status_code == 400 and stale.json()["error"] == "invalid_grant"
    # And the browser is logged out: prompt=none no longer answers with a code.
    silent = browser.get(oidc(issuer, "auth"), params=auth_params(prompt="none"))
    assert callback(silent.headers["location"])["error"] == "login_required"


def test_logout_to_an_unregistered_uri_is_refused(issuer, browser):
    response = browser.get(oidc(issuer, "logout"), params={"redirect_uri": "http://evil.example/"})
    assert response.status_code == 400 and "location" not in response.headers


def test_userinfo_and_account_take_a_lower_case_bearer_with_cors(issuer):
    token = issuer.mint("bob")
    headers = {"Authorization": f"bearer {token}", "Origin": APP, "Accept": "application/json"}
    info = httpx.get(oidc(issuer, "userinfo"), headers=headers, timeout=10)
    assert info.status_code == 200
    assert info.json()["preferred_username"] == "bob" and info.json()["sub"] == "user-bob"
    assert info.headers["access-control-allow-origin"] == APP
    account = httpx.get(f"{issuer.issuer}/account", headers=headers, timeout=10)
    assert account.status_code == 200
    assert account.json()["username"] == "bob" and account.json()["email"] == "bob@example.org"
    assert account.headers["access-control-allow-origin"] == APP
    for bad in ({}, {"Authorization": "bearer x.y.z"}):
        assert httpx.get(f"{issuer.issuer}/account", headers=bad, timeout=10).status_code == 401
        assert httpx.get(oidc(issuer, "userinfo"), headers=bad, timeout=10).status_code == 401


def test_cors_preflight_answers_registered_origins_only(issuer):
    asked = {
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    for url in (oidc(issuer, "token"), oidc(issuer, "userinfo"), f"{issuer.issuer}/account"):
        ok = httpx.options(url, headers={**asked, "Origin": APP}, timeout=10)
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == APP
        assert "authorization" in ok.headers["access-control-allow-headers"].lower()
        other = httpx.options(url, headers={**asked, "Origin": "http://evil.example"}, timeout=10)
        assert "access-control-allow-origin" not in other.headers


def test_keycloak_js_iframe_pages(issuer, browser):
    for path in ("3p-cookies/step1.html", "3p-cookies/step2.html", "login-status-iframe.html"):
        page = browser.get(oidc(issuer, path))
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "<script>" in page.text
    init = oidc(issuer, "login-status-iframe.html/init")
    assert browser.get(init, params={"client_id": CLIENT, "origin": APP}).status_code == 204
    for query in ({"client_id": CLIENT, "origin": "http://evil.example"}, {"client_id": "x"}):
        assert browser.get(init, params=query).status_code == 403


def test_discovery_advertises_only_what_is_served(issuer, browser):
    doc = httpx.get(f"{issuer.issuer}/.well-known/openid-configuration", timeout=10).json()
    assert doc["issuer"] == issuer.issuer
    assert doc["response_types_supported"] == ["code"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    for key, url in doc.items():
        if key.endswith(("_endpoint", "_uri", "_iframe")):
            response = browser.get(url)
            assert response.status_code != 404, (key, url)
            assert response.status_code < 500, (key, url)
    # Every advertised grant works or refuses for a reason other than "unsupported".
    for grant in doc["grant_types_supported"]:
        answer = httpx.post(
            doc["token_endpoint"], data={"grant_type": grant, "client_id": CLIENT}, timeout=10
        )
        assert answer.json().get("error") != "unsupported_grant_type", grant
    assert "implicit" not in doc["grant_types_supported"]
    query = urlencode(auth_params(response_type="id_token"))
    answer = browser.get(f"{doc['authorization_endpoint']}?{query}")
    assert callback(answer.headers["location"])["error"] == "unsupported_response_type"
