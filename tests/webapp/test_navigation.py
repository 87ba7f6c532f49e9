"""Navigation history (N1)."""

from __future__ import annotations

import sqlalchemy as sa

from shared.navigation.models import NavigationEntry


def test_visit_is_recorded_for_the_caller(client, auth, db):
    response = client.post("/navigation", json={"path": "/features/abc"}, headers=auth.headers())
    assert response.status_code == 200
    body = response.json
    assert list(body) == ["id", "created_at", "updated_at", "path", "user_id"]
    assert body["path"] == "/features/abc"
    assert body["user_id"] == "user-bob"
    assert "T" in body["created_at"] and not body["created_at"].endswith("Z")
    row = db.scalar(sa.select(NavigationEntry).where(NavigationEntry.id == body["id"]))
    assert row is not None and row.user_id == "user-bob"


def test_user_id_in_body_is_ignored(client, auth):
    response = client.post(
        "/navigation", json={"path": "/x", "user_id": "someone-else"}, headers=auth.headers()
    )
    assert response.json["user_id"] == "user-bob"


def test_missing_path_is_a_400(client, auth):
    response = client.post("/navigation", json={}, headers=auth.headers())
    assert response.status_code == 400
    assert response.json["error"].startswith("Invalid request: path")


def test_non_json_body_is_a_400(client, auth):
    response = client.post(
        "/navigation", data="path=/x", headers=auth.headers(), content_type="text/plain"
    )
    assert response.status_code == 400
    assert response.is_json
