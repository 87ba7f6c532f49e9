"""Feature collections (F1-F6) through the API."""

from __future__ import annotations

import csv
import io
import zipfile

from tests.webapp.test_feature_downloads import NAMES, SEP, extraction  # noqa: F401 (fixture)

CT_MEAN = f"CT{SEP}GTV{SEP}original_firstorder_Mean"
PT_VOLUME = f"PT{SEP}GTV{SEP}original_shape_VoxelVolume"


def new(client, auth, extraction_id, user="bob", **fields):
    """POST a collection the way the frontend does (camelCase)."""
    body = {
        "featureExtractionID": extraction_id,
        "name": "Shape and mean",
        "featureIDs": [CT_MEAN, PT_VOLUME, "Age"],
        "dataSplittingType": "traintest",
        "trainTestSplitType": "automatic",
        "trainingPatients": None,
        "testPatients": None,
        **fields,
    }
    return client.post("/feature-collections/new", json=body, headers=auth.headers(user))


def test_create_describes_the_collection_and_is_idempotent(client, auth, extraction):  # noqa: F811
    response = new(client, auth, extraction.id)
    assert response.status_code == 200, response.json
    body = response.json
    assert list(body) == ["collection", "modalities", "rois", "features"]
    assert list(body["collection"]) == [
        "id", "created_at", "updated_at", "name", "feature_extraction_id",
        "data_splitting_type", "train_test_split_type", "feature_ids",
        "training_patients", "test_patients",
    ]  # fmt: skip
    assert body["collection"]["feature_ids"] == [CT_MEAN, PT_VOLUME, "Age"]
    # A clinical (bare) ID adds "" to the modalities and ROIs and its name to the features.
    assert body["modalities"] == ["", "CT", "PT"] and body["rois"] == ["", "GTV"]
    assert body["features"] == ["Age", "original_firstorder_Mean", "original_shape_VoxelVolume"]
    again = new(client, auth, extraction.id).json
    assert again["collection"]["id"] == body["collection"]["id"]
    other = new(client, auth, extraction.id, name="Other").json
    assert other["collection"]["id"] != body["collection"]["id"]
    listed = client.get(
        f"/feature-collections/extraction/{extraction.id}", headers=auth.headers()
    ).json
    assert [item["collection"]["name"] for item in listed] == ["Shape and mean", "Other"]


def test_bad_requests_name_the_problem(client, auth, extraction):  # noqa: F811
    unknown = new(client, auth, extraction.id, featureIDs=[CT_MEAN, f"MR{SEP}GTV{SEP}x"])
    assert unknown.status_code == 400
    assert unknown.json == {"error": f"Extraction {extraction.id} has no feature MR{SEP}GTV{SEP}x"}
    empty = new(client, auth, extraction.id, featureIDs=[])
    assert empty.status_code == 400 and "featureIDs" in str(empty.json)
    split = new(client, auth, extraction.id, dataSplittingType="random")
    assert split.status_code == 400 and "dataSplittingType" in str(split.json)
    foreign = new(client, auth, extraction.id, user="carol")
    assert (foreign.status_code, foreign.json) == (404, {"error": "Feature extraction not found"})
    listing = client.get(
        f"/feature-collections/extraction/{extraction.id}", headers=auth.headers("carol")
    )
    assert listing.status_code == 404


def test_update_get_and_delete(client, auth, extraction):  # noqa: F811
    created = new(client, auth, extraction.id, trainingPatients=["P1"], testPatients=["P2"])
    url = f"/feature-collections/{created.json['collection']['id']}"
    changes = {"name": "Means", "feature_ids": [CT_MEAN], "training_patients": None, "name2": 1}
    updated = client.patch(url, json=changes, headers=auth.headers())
    assert updated.status_code == 200
    collection = updated.json["collection"]
    assert (collection["name"], collection["feature_ids"]) == ("Means", [CT_MEAN])
    assert (collection["training_patients"], collection["test_patients"]) == (None, ["P2"])
    assert updated.json["modalities"] == ["CT"]
    keeps = client.patch(url, json={"name": None}, headers=auth.headers()).json
    assert keeps["collection"]["name"] == "Means"  # a required field is not nulled
    bad_ids = {"feature_ids": [f"CT{SEP}GTV{SEP}nope"]}
    bad = client.patch(url, json=bad_ids, headers=auth.headers())
    assert bad.status_code == 400
    assert client.get(url, headers=auth.headers()).json["collection"]["feature_ids"] == [CT_MEAN]
    for method in ("get", "patch", "delete"):
        response = getattr(client, method)(url, json={}, headers=auth.headers("carol"))
        assert (response.status_code, response.json) == (
            404,
            {"error": "Feature collection not found"},
        )
    deleted = client.delete(url, headers=auth.headers())
    assert deleted.status_code == 200 and deleted.json["collection"]["name"] == "Means"
    assert client.get(url, headers=auth.headers()).status_code == 404


def test_download_holds_only_the_collections_features(client, auth, extraction):  # noqa: F811
    created = new(client, auth, extraction.id, name="Shape set").json
    response = client.get(
        f"/feature-collections/{created['collection']['id']}/download", headers=auth.headers()
    )
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == (
        "attachment; filename=features_album_My-Album_Shape-set.zip"
    )
    with zipfile.ZipFile(io.BytesIO(response.data)) as archive:
        members = sorted(archive.namelist())
        tables = {m: list(csv.reader(io.TextIOWrapper(archive.open(m)))) for m in members}
    assert members == [
        "features_album_My-Album_collection_Shape-set_CT-GTV.csv",
        "features_album_My-Album_collection_Shape-set_PT-GTV.csv",
    ]
    ct = tables[members[0]]
    pt = tables[members[1]]
    assert ct[0][:3] == ["PatientID", "Modality", "ROI"] and pt[0][:3] == ct[0][:3]
    # Only the chosen feature has values in each group (CT: the mean; PT: the volume).
    ct_filled = {ct[0][j] for row in ct[1:] for j in range(3, len(row)) if row[j]}
    pt_filled = {pt[0][j] for row in pt[1:] for j in range(3, len(row)) if row[j]}
    assert ct_filled == {"original_intensity_Mean"}
    assert pt_filled == {"original_shape_VoxelVolume"}
    assert NAMES[2] not in ct[0] + pt[0]  # glcm Contrast is in no selection
