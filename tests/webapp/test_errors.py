"""One error mapping: 404, 405, 409, 413 and 500 are JSON `{"error": ...}` too."""

from __future__ import annotations

from shared.navigation import service as navigation_service
from shared.presets.models import FeaturePreset


def test_unknown_url_is_json_404(client, auth):
    response = client.get("/no/such/route", headers=auth.headers())
    assert response.status_code == 404
    assert response.json == {"error": "Not found"}


def test_wrong_method_is_json_405_with_allow_header(client, auth):
    response = client.delete("/navigation", headers=auth.headers())
    assert response.status_code == 405
    assert response.json == {"error": "Method not allowed"}
    assert "POST" in response.headers["Allow"]


def test_too_large_body_is_json_413(app, client, auth):
    limit = app.config["MAX_CONTENT_LENGTH"]
    app.config["MAX_CONTENT_LENGTH"] = 1024
    try:
        response = client.post(
            "/navigation",
            data=b"x" * 4096,
            headers=auth.headers(),
            content_type="application/json",
        )
    finally:
        app.config["MAX_CONTENT_LENGTH"] = limit
    assert response.status_code == 413
    assert response.json == {"error": "Request body too large"}


def test_unexpected_exception_is_json_500_without_details(client, auth, monkeypatch):
    def explode(*_args, **_kwargs):
        raise RuntimeError("secret internals /etc/passwd")

    monkeypatch.setattr(navigation_service, "record_visit", explode)
    response = client.post("/navigation", json={"path": "/x"}, headers=auth.headers())
    assert response.status_code == 500
    assert response.json == {"error": "Internal server error"}


def test_a_write_the_database_refuses_is_a_json_409(client, auth, monkeypatch):
    # Services check duplicates before writing; what still reaches a unique key (a race) is
    # MariaDB's real IntegrityError, answered as a conflict instead of a 500 (issue #13).
    def duplicate(session, **_kwargs):
        for _ in range(2):
            session.add(FeaturePreset(name="twin", file_name="twin.yaml", config_yaml="{}\n"))
        session.flush()

    monkeypatch.setattr(navigation_service, "record_visit", duplicate)
    response = client.post("/navigation", json={"path": "/x"}, headers=auth.headers())
    assert response.status_code == 409
    assert response.json == {
        "error": "The request conflicts with existing data (a duplicate name or a vanished row)"
    }
