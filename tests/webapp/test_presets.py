"""Feature presets P1-P4: defaults, admin-only writes, YAML validated against the preset schema."""

from __future__ import annotations

import pytest

from shared.presets import service as preset_service


@pytest.fixture
def seeded(db):
    """The four default presets."""
    preset_service.seed_default_presets(db)
    db.commit()


def upload(
    client,
    auth,
    preset_yaml,
    *,
    name="Custom",
    user="alice",
    method="post",
    url=None,
    file=None,
    content_type="application/x-yaml",
    filename="custom.yaml",
):
    """Send a multipart preset form."""
    data = {"name": name}
    if file is not False:
        data["file"] = (file or preset_yaml(), filename, content_type)
    call = getattr(client, method)
    return call(
        url or "/feature-presets",
        data=data,
        headers=auth.headers(user),
        content_type="multipart/form-data",
    )


def test_four_default_presets_are_listed(client, auth, seeded):
    response = client.get("/feature-presets", headers=auth.headers())
    assert response.status_code == 200
    by_name = {p["name"]: p for p in response.json}
    assert set(by_name) == {"PET/CT", "MRI", "MRI/CT", "MRI/PET"}
    petct = by_name["PET/CT"]
    assert list(petct) == [
        "id",
        "created_at",
        "updated_at",
        "name",
        "config_path",
        "config",
        "config-raw",
    ]
    assert petct["config"]["general"]["combine_segmentation"] is True
    ct = petct["config"]["feature_extraction"]["CT"]["pyradiomics"]["original"]
    assert ct["setting"] == {"binWidth": 20, "voxelArrayShift": 1000, "label": 1}
    assert set(ct["featureClass"]) == {
        "shape",
        "firstorder",
        "glcm",
        "glszm",
        "glrlm",
        "ngtdm",
        "gldm",
    }
    assert ct["imageType"] == {"Original": {}}
    assert petct["config-raw"].startswith("# PET/CT")
    assert petct["config_path"].endswith("PETCT_all.yaml")
    mri = by_name["MRI"]["config"]
    assert mri["general"]["submodalities"] is True
    assert mri["volume_preprocessing"]["common"]["standardizer"] == {"threshold": 0.001}


def test_seeding_is_idempotent(db):
    assert len(preset_service.seed_default_presets(db)) == 4
    assert preset_service.seed_default_presets(db) == []


def test_get_one_preset_and_unknown_id(client, auth, seeded):
    first = client.get("/feature-presets", headers=auth.headers()).json[0]
    response = client.get(f"/feature-presets/{first['id']}", headers=auth.headers())
    assert response.json == first
    missing = client.get("/feature-presets/999999", headers=auth.headers())
    assert missing.status_code == 404
    assert missing.json == {"error": "Feature preset not found"}


def test_admin_creates_a_preset(client, auth, preset_yaml):
    response = upload(client, auth, preset_yaml, filename="../../etc/passwd.yaml")
    assert response.status_code == 200, response.json
    assert response.json["name"] == "Custom"
    # The client's file name is only a label: no directory part survives.
    assert response.json["config_path"] == "feature-presets/passwd.yaml"
    listed = client.get("/feature-presets", headers=auth.headers()).json
    assert "Custom" in [p["name"] for p in listed]


def test_non_admin_cannot_write(client, auth, preset_yaml):
    assert upload(client, auth, preset_yaml, user="bob").status_code == 403


def test_bad_key_is_a_400_naming_it(client, auth, preset_yaml):
    bad = preset_yaml(replace=("binWidth: 20", "binWidht: 20"))
    response = upload(client, auth, preset_yaml, file=bad)
    assert response.status_code == 400
    assert "feature_extraction.CT.pyradiomics.original.setting.binWidht" in response.json["error"]
    assert response.json["details"][0] == {
        "key": "feature_extraction.CT.pyradiomics.original.setting.binWidht",
        "message": "unknown key",
    }


@pytest.mark.parametrize(
    ("replace", "key"),
    [
        (("glcm:", "glcmm:"), "featureClass"),
        (("Original: {}", "Originall: {}"), "imageType"),
        (("binWidth: 20", "binWidth: -3"), "binWidth"),
        (("padding: 10", "padding: lots"), "general.padding"),
        (("order: 3\nmask", "order: 9\nmask"), "bspline_resampler.order"),
    ],
)
def test_invalid_values_are_rejected(client, auth, preset_yaml, replace, key):
    response = upload(client, auth, preset_yaml, file=preset_yaml(replace=replace))
    assert response.status_code == 400
    assert key in response.json["error"]


def test_not_yaml_is_rejected(client, auth, preset_yaml):
    import io

    response = upload(client, auth, preset_yaml, file=io.BytesIO(b"a: [unclosed"))
    assert response.status_code == 400
    assert "not valid YAML" in response.json["error"]


def test_wrong_part_content_type_is_rejected(client, auth, preset_yaml):
    response = upload(client, auth, preset_yaml, content_type="text/plain")
    assert response.status_code == 400
    assert "application/x-yaml" in response.json["error"]


def test_octet_stream_part_is_accepted(client, auth, preset_yaml):
    assert (
        upload(client, auth, preset_yaml, content_type="application/octet-stream").status_code
        == 200
    )


def test_missing_name_or_file(client, auth, preset_yaml):
    assert upload(client, auth, preset_yaml, name="").status_code == 400
    no_file = upload(client, auth, preset_yaml, file=False)
    assert no_file.status_code == 400
    assert "file" in no_file.json["error"]


def test_duplicate_name_is_409(client, auth, preset_yaml, seeded):
    response = upload(client, auth, preset_yaml, name="PET/CT")
    assert response.status_code == 409


def test_patch_renames_and_keeps_yaml_without_file(client, auth, preset_yaml, seeded):
    petct = next(
        p
        for p in client.get("/feature-presets", headers=auth.headers()).json
        if p["name"] == "PET/CT"
    )
    url = f"/feature-presets/{petct['id']}"
    # The frontend sends the old file name as a text field when the file did not change.
    response = client.patch(
        url,
        data={"name": "PET/CT v2", "file": "PETCT_all.yaml"},
        headers=auth.headers("alice"),
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.json
    assert response.json["name"] == "PET/CT v2"
    assert response.json["config-raw"] == petct["config-raw"]


def test_patch_replaces_yaml(client, auth, preset_yaml, seeded):
    petct = next(
        p
        for p in client.get("/feature-presets", headers=auth.headers()).json
        if p["name"] == "PET/CT"
    )
    url = f"/feature-presets/{petct['id']}"
    new = preset_yaml(replace=("binWidth: 20", "binWidth: 10"))
    response = upload(client, auth, preset_yaml, method="patch", url=url, name="PET/CT", file=new)
    assert response.status_code == 200
    assert (
        response.json["config"]["feature_extraction"]["CT"]["pyradiomics"]["original"]["setting"][
            "binWidth"
        ]
        == 10
    )


def test_patch_requires_name_and_admin(client, auth, preset_yaml, seeded):
    preset_id = client.get("/feature-presets", headers=auth.headers()).json[0]["id"]
    url = f"/feature-presets/{preset_id}"
    assert upload(client, auth, preset_yaml, method="patch", url=url, name="").status_code == 400
    assert upload(client, auth, preset_yaml, method="patch", url=url, user="bob").status_code == 403
    assert (
        upload(client, auth, preset_yaml, method="patch", url="/feature-presets/999999").status_code
        == 404
    )
