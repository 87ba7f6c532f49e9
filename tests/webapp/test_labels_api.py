"""Outcomes and labels (L1-L5) and the current outcome of an album (A3, A4)."""

from __future__ import annotations

import pytest

from shared.extractions import service as extraction_service
from shared.imaging.source import StudyInfo
from tests.webapp.test_feature_downloads import extraction, parts  # noqa: F401 (fixture)

ALBUM = "album-x"


@pytest.fixture
def first_extraction(db):
    """bob's first extraction of the album: patients P2, P1 and a study without PatientID."""
    created = extraction_service.create(
        db,
        user_id="user-bob",
        album_id=ALBUM,
        album_name="My Album",
        config_yaml="{}\n",
        rois=["GTV"],
        studies=[StudyInfo("9.1", "P2"), StudyInfo("9.2", "P1"), StudyInfo("9.3", None)],
    )
    db.commit()
    return created


def create(client, auth, name="Response", label_type="Classification", user="bob"):
    """POST a new outcome on the album."""
    return client.post(
        f"/label-categories/{ALBUM}",
        json={"label_type": label_type, "name": name, "album_id": ALBUM},
        headers=auth.headers(user),
    )


def test_new_outcome_has_undefined_labels_for_the_first_extractions_patients(
    client, auth, first_extraction
):
    response = create(client, auth)
    assert response.status_code == 200, response.json
    body = response.json
    assert list(body) == [
        "id", "created_at", "updated_at", "album_id", "user_id",
        "label_type", "name", "labels", "pos_label",
    ]  # fmt: skip
    assert (body["album_id"], body["user_id"], body["pos_label"]) == (ALBUM, "user-bob", None)
    assert [(x["patient_id"], x["label_content"]) for x in body["labels"]] == [
        ("P1", {"Outcome": "Undefined"}),
        ("P2", {"Outcome": "Undefined"}),
    ]
    survival = create(client, auth, name="OS", label_type="Survival").json
    assert {x["patient_id"]: x["label_content"] for x in survival["labels"]}["P1"] == {
        "Time": "Undefined",
        "Event": "Undefined",
    }
    listed = client.get(f"/label-categories/{ALBUM}", headers=auth.headers()).json
    assert [c["name"] for c in listed] == ["Response", "OS"]
    assert client.get(f"/label-categories/{ALBUM}", headers=auth.headers("carol")).json == []


def test_outcome_names_are_unique_per_album_and_types_are_checked(client, auth):
    assert create(client, auth).status_code == 200
    clash = create(client, auth)
    assert clash.status_code == 409
    assert clash.json == {"error": "An outcome named 'Response' already exists for this album"}
    assert create(client, auth, user="carol").status_code == 200  # another user's own outcome
    bad = create(client, auth, name="X", label_type="Regression")
    assert bad.status_code == 400 and "label_type" in str(bad.json)


def test_labels_are_replaced_and_checked_against_the_outcome_type(client, auth):
    category = create(client, auth, name="OS", label_type="Survival").json
    url = f"/labels/{category['id']}"
    first = {"P1": {"Time": "12.5", "Event": "1"}, "P2": {"Time": "30", "Event": "0"}}
    response = client.post(url, json={"label_map": first, "pos_label": "1"}, headers=auth.headers())
    assert response.status_code == 200
    assert [x["patient_id"] for x in response.json] == ["P1", "P2"]
    second = {"P3": {"Time": "7", "Event": ""}}
    saved = client.post(url, json={"label_map": second}, headers=auth.headers()).json
    assert [(x["patient_id"], x["label_content"]) for x in saved] == [
        ("P3", {"Time": "7", "Event": ""})
    ]
    stored = client.get(f"/label-categories/{ALBUM}", headers=auth.headers()).json[0]
    assert stored["pos_label"] == "1" and len(stored["labels"]) == 1  # kept, not cleared
    patients_url = f"/labels/patients_from_label_category/{category['id']}"
    patients = client.get(patients_url, headers=auth.headers())
    assert patients.json == ["P3"]

    wrong = client.post(url, json={"label_map": {"P9": {"Outcome": "1"}}}, headers=auth.headers())
    assert wrong.status_code == 400
    assert wrong.json["error"] == (
        "Label of patient 'P9': a Survival outcome needs exactly Event, Time; got Outcome"
    )
    assert client.get(patients_url, headers=auth.headers()).json == ["P3"]  # nothing lost


def test_another_users_outcome_answers_like_a_missing_one(client, auth):
    category = create(client, auth).json
    url = f"/labels/{category['id']}"
    for method, body in (
        ("post", {"label_map": {}}),
        ("patch", {"name": "Mine"}),
        ("delete", None),
    ):
        response = getattr(client, method)(url, json=body, headers=auth.headers("carol"))
        assert (response.status_code, response.json) == (404, {"error": "Label category not found"})
    missing = client.delete("/labels/987654", headers=auth.headers())
    assert (missing.status_code, missing.json) == (404, {"error": "Label category not found"})
    selected = client.patch(
        f"/albums/{ALBUM}/current-outcome/{category['id']}", headers=auth.headers("carol")
    )
    assert selected.status_code == 404


def test_rename_and_delete(client, auth):
    category = create(client, auth).json
    create(client, auth, name="Other")
    url = f"/labels/{category['id']}"
    renamed = client.patch(url, json={"name": "Recurrence"}, headers=auth.headers())
    assert renamed.status_code == 200 and renamed.json["name"] == "Recurrence"
    assert client.patch(url, json={"name": "Other"}, headers=auth.headers()).status_code == 409
    client.patch(f"/albums/{ALBUM}/current-outcome/{category['id']}", headers=auth.headers())
    deleted = client.delete(url, headers=auth.headers())
    assert deleted.status_code == 200 and deleted.json["name"] == "Recurrence"
    listed = client.get(f"/label-categories/{ALBUM}", headers=auth.headers()).json
    assert [c["name"] for c in listed] == ["Other"]
    # The album's current outcome was that one: now there is none (not a crash).
    current = client.get(f"/albums/{ALBUM}/current-outcome", headers=auth.headers())
    assert current.status_code == 200 and current.json is None


def test_current_outcome_select_clear_and_album_check(client, auth):
    assert client.get(f"/albums/{ALBUM}/current-outcome", headers=auth.headers()).json is None
    category = create(client, auth).json
    selected = client.patch(
        f"/albums/{ALBUM}/current-outcome/{category['id']}", headers=auth.headers()
    )
    assert selected.status_code == 200
    keys = ["id", "created_at", "updated_at", "album_id", "user_id", "outcome_id"]
    assert list(selected.json) == keys
    assert selected.json["outcome_id"] == category["id"]
    current = client.get(f"/albums/{ALBUM}/current-outcome", headers=auth.headers()).json
    assert current["id"] == category["id"] and current["labels"] == []
    other_album = client.patch(
        f"/albums/elsewhere/current-outcome/{category['id']}", headers=auth.headers()
    )
    assert other_album.status_code == 400
    assert "belongs to album 'album-x'" in other_album.json["error"]
    cleared = client.patch(f"/albums/{ALBUM}/current-outcome", headers=auth.headers())
    assert cleared.status_code == 200 and cleared.json["outcome_id"] is None
    assert client.get(f"/albums/{ALBUM}/current-outcome", headers=auth.headers()).json is None


def test_outcome_set_through_the_api_ranks_the_features(client, auth, extraction):  # noqa: F811
    category = create(client, auth).json
    labels = {"P1": {"Outcome": "0"}, "P2": {"Outcome": "1"}, "P3": {"Outcome": "0"}}
    client.post(f"/labels/{category['id']}", json={"label_map": labels}, headers=auth.headers())
    url = f"/extractions/{extraction.id}/feature-details"
    headers = {**auth.headers(), "Accept": "multipart/form-data"}
    assert parts(client.get(url, headers=headers))["features_chart"].startswith(
        "FeatureID,P1,P2,P3,P4\n"
    )
    client.patch(f"/albums/{ALBUM}/current-outcome/{category['id']}", headers=auth.headers())
    chart = parts(client.get(url, headers=headers))["features_chart"]
    assert chart.startswith("FeatureID,P1,P2,P3,P4,Ranking\n")
