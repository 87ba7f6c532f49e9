"""Feature presets P1-P4: defaults, admin-only writes, YAML validated against the preset schema."""

from __future__ import annotations

import io

import pytest
import yaml

from shared.presets import service as preset_service
from tests.webapp.conftest import DEFAULTS


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


@pytest.mark.parametrize(
    ("body", "sent"),
    [
        ({}, "no Content-Type"),
        ({"json": {"name": "PET/CT v2"}}, "Content-Type 'application/json'"),
        ({"data": b"name=x", "content_type": "text/plain"}, "Content-Type 'text/plain'"),
    ],
    ids=["no-body", "json", "text"],
)
def test_patch_without_a_form_is_a_400_naming_the_form(client, auth, seeded, body, sent):
    # Issue #13: no body (or a non-form body) reached update_preset with form=None, a 500.
    preset_id = client.get("/feature-presets", headers=auth.headers()).json[0]["id"]
    response = client.patch(f"/feature-presets/{preset_id}", headers=auth.headers("alice"), **body)
    assert response.status_code == 400, response.get_data()
    assert response.json["error"] == (
        f"request body must be multipart/form-data with the field(s) name; got {sent}"
    )
    assert client.post("/feature-presets", headers=auth.headers("alice"), **body).status_code == 400


def test_patch_with_a_form_but_no_name_names_the_field(client, auth, seeded):
    preset_id = client.get("/feature-presets", headers=auth.headers()).json[0]["id"]
    response = client.patch(
        f"/feature-presets/{preset_id}",
        data={"file": "PETCT_all.yaml"},
        headers=auth.headers("alice"),
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    assert response.json["details"] == [{"key": "name", "message": "Field required"}]


# --- hostile presets (issue #8 §2) -------------------------------------------------------------

ANCHOR = "    bspline_resampler:"  # the first processor of `common` in the PET/CT preset


def alias_bomb(levels: int = 6) -> io.BytesIO:
    """A few hundred bytes of nested YAML aliases that expand to 10**levels items."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, levels):
        refs = ", ".join([f"*l{level - 1}"] * 10)
        lines.append(f"l{level}: &l{level} [{refs}]")
    body = "\n".join("        " + line for line in lines)
    text = (DEFAULTS / "PETCT_all.yaml").read_text()
    text = text.replace(ANCHOR, "    identity_processor:\n" + body + "\n" + ANCHOR, 1)
    return io.BytesIO(text.encode())


def with_binary_identity(preset_yaml) -> io.BytesIO:
    """The PET/CT preset with a `!!binary` value under the open identity_processor field."""
    text = preset_yaml().read().decode()
    return io.BytesIO(
        text.replace(ANCHOR, "    identity_processor: {a: !!binary /w==}\n" + ANCHOR, 1).encode()
    )


def test_alias_bomb_is_rejected(client, auth, preset_yaml, seeded):
    bomb = alias_bomb()
    assert len(bomb.getvalue()) < 6000
    response = upload(client, auth, preset_yaml, file=bomb)
    assert response.status_code == 400
    assert "alias" in response.json["error"] or "anchor" in response.json["error"]
    listed = client.get("/feature-presets", headers=auth.headers())
    assert len(listed.data) < 200_000


def test_anchor_alone_is_rejected(client, auth, preset_yaml):
    text = preset_yaml().read().decode().replace("binWidth: 20", "binWidth: &w 20", 1)
    response = upload(client, auth, preset_yaml, file=io.BytesIO(text.encode()))
    assert response.status_code == 400
    assert "anchor" in response.json["error"]


@pytest.mark.parametrize("tag", ["!!binary /w==", "!!python/name:os.system ''", "!custom 3"])
def test_explicit_tags_are_rejected(client, auth, preset_yaml, tag):
    text = preset_yaml().read().decode().replace("binWidth: 20", f"binWidth: {tag}", 1)
    response = upload(client, auth, preset_yaml, file=io.BytesIO(text.encode()))
    assert response.status_code == 400
    assert "tag" in response.json["error"]


def test_binary_in_open_field_does_not_poison_the_list(client, auth, preset_yaml, seeded):
    response = upload(client, auth, preset_yaml, file=with_binary_identity(preset_yaml))
    assert response.status_code == 400
    petct = next(
        p
        for p in client.get("/feature-presets", headers=auth.headers()).json
        if p["name"] == "PET/CT"
    )
    url = f"/feature-presets/{petct['id']}"
    patched = upload(
        client, auth, preset_yaml, method="patch", url=url, file=with_binary_identity(preset_yaml)
    )
    assert patched.status_code == 400
    listed = client.get("/feature-presets", headers=auth.headers())
    assert listed.status_code == 200
    assert {p["name"] for p in listed.json} == {"PET/CT", "MRI", "MRI/CT", "MRI/PET"}


@pytest.mark.parametrize(
    ("block", "key"),
    [
        ("identity_processor: {payload: [1, 2, 3]}", "identity_processor"),
        ("identity_processor: {level: 3}", "identity_processor"),
    ],
)
def test_open_fields_have_a_schema(client, auth, preset_yaml, block, key):
    text = preset_yaml().read().decode().replace(ANCHOR, f"    {block}\n{ANCHOR}", 1)
    response = upload(client, auth, preset_yaml, file=io.BytesIO(text.encode()))
    assert response.status_code == 400
    assert key in response.json["error"]


def test_voxel_setting_is_checked(client, auth, preset_yaml):
    base = preset_yaml().read().decode()
    anchor = "        setting:\n          binWidth: 20"
    assert anchor in base
    good = base.replace(
        anchor, "        voxelSetting: {kernelRadius: 2, maskedKernel: true}\n" + anchor, 1
    )
    assert upload(client, auth, preset_yaml, file=io.BytesIO(good.encode())).status_code == 200
    bad = base.replace(
        anchor, "        voxelSetting: {kernelRadius: 2, blob: [1, 2]}\n" + anchor, 1
    )
    response = upload(client, auth, preset_yaml, name="Other", file=io.BytesIO(bad.encode()))
    assert response.status_code == 400
    assert "voxelSetting.blob" in response.json["error"]


def test_oversized_preset_is_rejected(client, auth, preset_yaml):
    text = preset_yaml().read().decode() + "#" + "x" * 300_000 + "\n"
    response = upload(client, auth, preset_yaml, file=io.BytesIO(text.encode()))
    assert response.status_code == 400
    assert "too large" in response.json["error"]


def test_stored_text_is_the_canonical_validated_document(client, auth, preset_yaml):
    text = preset_yaml().read().decode().replace("binWidth: 20", "binWidth: 20  # tuned", 1)
    response = upload(client, auth, preset_yaml, file=io.BytesIO(text.encode()))
    assert response.status_code == 200
    raw = response.json["config-raw"]
    assert "# tuned" not in raw
    assert yaml.safe_load(raw) == response.json["config"]
    assert (
        client.get(f"/feature-presets/{response.json['id']}", headers=auth.headers()).json[
            "config-raw"
        ]
        == raw
    )


def test_admin_deletes_a_preset(client, auth, preset_yaml, seeded):
    created = upload(client, auth, preset_yaml).json
    url = f"/feature-presets/{created['id']}"
    assert client.delete(url, headers=auth.headers("bob")).status_code == 403
    response = client.delete(url, headers=auth.headers("alice"))
    assert response.status_code == 200
    assert response.json == {"deleted": True, "id": created["id"]}
    assert client.get(url, headers=auth.headers()).status_code == 404
    assert client.delete(url, headers=auth.headers("alice")).status_code == 404
    names = {p["name"] for p in client.get("/feature-presets", headers=auth.headers()).json}
    assert "Custom" not in names and "PET/CT" in names


def test_rows_stored_before_the_plain_yaml_rules_do_not_break_the_list(client, auth, db, seeded):
    from shared.presets.models import FeaturePreset

    legacy = FeaturePreset(
        name="Legacy",
        file_name="legacy.yaml",
        config_yaml=alias_bomb(3).getvalue().decode().replace("# PET/CT", "a: !!binary /w==\n#"),
    )
    db.add(legacy)
    db.commit()
    listed = client.get("/feature-presets", headers=auth.headers())
    assert listed.status_code == 200
    row = next(p for p in listed.json if p["name"] == "Legacy")
    assert row["config"] == {}
    assert "!!binary" in row["config-raw"]
    url = f"/feature-presets/{legacy.id}"
    assert client.delete(url, headers=auth.headers("alice")).status_code == 200
    assert "Legacy" not in {
        p["name"] for p in client.get("/feature-presets", headers=auth.headers()).json
    }
