"""Every route of the app answers 401 JSON without a token, except the declared public ones."""

from __future__ import annotations

import re

import pytest

PUBLIC = {
    ("GET", "/"),
    ("GET", "/health/ready"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
}


def concrete_url(rule: str) -> str:
    """Fill a URL rule's variables with plausible values."""
    return re.sub(r"<(?:(\w+):)?(\w+)>", lambda m: "1" if m.group(1) == "int" else "x", rule)


def all_routes(app) -> list[tuple[str, str]]:
    """Every (method, url) the app serves, HEAD/OPTIONS aside."""
    routes = []
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            routes.append((method, concrete_url(rule.rule)))
    return routes


def test_the_app_has_the_expected_public_routes_only(app):
    public = [r for r in all_routes(app) if r in PUBLIC or r[1].startswith("/docs/")]
    assert {r for r in public if not r[1].startswith("/docs/")} == PUBLIC


def test_every_route_is_401_json_without_token(app, client):
    checked = []
    for method, url in all_routes(app):
        if (method, url) in PUBLIC or url.startswith("/docs/"):
            continue
        response = client.open(url, method=method)
        assert response.status_code == 401, (method, url, response.status_code)
        assert response.is_json, (method, url)
        assert response.json == {"error": "Missing Authorization header"}, (method, url)
        checked.append(f"{method} {url}")
    print(f"\n{len(checked)} protected routes answered 401 JSON:\n  " + "\n  ".join(checked))
    assert "POST /navigation" in checked and "GET /feature-presets" in checked


@pytest.mark.parametrize("url", ["/", "/openapi.json", "/docs/swagger/"])
def test_public_routes_answer_without_token(client, url):
    assert client.get(url).status_code == 200
