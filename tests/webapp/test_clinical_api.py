"""Clinical features (C1-C9) through the API, in the frontend's upload order."""

from __future__ import annotations

import pytest

ALBUM = "album-c"
Q = f"?album_id={ALBUM}"


def table(n: int = 12) -> dict[str, dict[str, str]]:
    """A clinical CSV as PapaParse hands it over: {PatientID: {column: cell}}."""
    rows = {}
    for i in range(n):
        rows[f"P{i}"] = {
            "PatientID": f"P{i}",
            "Age": str(40 + 3 * i),
            "Sex": "F" if i < 6 else "M",
            "Site": "Lyon",
            "Empty": "",
            "Sparse": "7" if i == 0 else "",
            "Diagnosis date": f"2020-01-{i + 1:02d}",
            "Grade": "N/A" if i == 9 else str(1 + i % 3),
        }
    rows["P0"]["__parsed_extra"] = ["spill"]
    return rows


def post(client, auth, url, body, user="bob"):
    """POST JSON as a user."""
    return client.post(url, json=body, headers=auth.headers(user))


def test_frontend_upload_sequence(client, auth):
    data = table()
    flags = post(client, auth, "/clinical-features/filter", {"clinical_feature_map": data}).json
    assert flags == {
        "only_one_value": ["Site", "Sparse"],
        "only_nulls": ["Empty"],
        "too_little_data": ["Empty", "Sparse"],
        "date_columns": ["Diagnosis date"],
    }
    kept = {p: {k: row[k] for k in ("PatientID", "Age", "Sex", "Grade")} for p, row in data.items()}
    deleted = client.delete(f"/clinical-features-definitions{Q}", headers=auth.headers())
    assert deleted.json == {"message": "feature definitions deleted successfully"}
    guessed = post(client, auth, "/clinical-features-definitions/guess",
                   {"clinical_feature_map": kept}).json  # fmt: skip
    assert guessed == {
        "Age": {"feat_type": "Number", "encoding": "Normalization", "missing_values": "Median"},
        "Sex": {"feat_type": "Categorical", "encoding": "One-Hot Encoding",
                "missing_values": "Mode"},
        "Grade": {"feat_type": "Categorical", "encoding": "One-Hot Encoding",
                  "missing_values": "Mode"},
    }  # fmt: skip
    body = {"clinical_feature_definitions": guessed, "album_id": ALBUM}
    saved = post(client, auth, f"/clinical-features-definitions{Q}", body)
    assert saved.status_code == 200
    assert [d["name"] for d in saved.json] == ["Age", "Sex", "Grade"]
    assert saved.json[0]["user_id"] == "user-bob" and saved.json[0]["album_id"] == ALBUM
    values = post(client, auth, f"/clinical-features{Q}", {"clinical_feature_map": kept})
    assert values.status_code == 200 and len(values.json) == 36  # 12 patients x 3
    assert set(values.json[0]) == {"value", "clinical_feature_definition_id", "patient_id"}

    read = post(client, auth, f"/clinical-features{Q}", {"patient_ids": ["P9", "P1", "nobody"]})
    assert read.json == {
        "P1": {"Age": "43", "Sex": "F", "Grade": "2"},
        "P9": {"Age": "67", "Sex": "M", "Grade": None},  # "N/A" is stored as missing
    }
    listed = client.get(f"/clinical-features-definitions{Q}", headers=auth.headers()).json
    assert [d["feat_type"] for d in listed] == ["Number", "Categorical", "Categorical"]
    summary = post(client, auth, "/clinical-features/unique-values", {
        "clinical_feature_map": read.json,
        "clinical_features_definitions": {d["name"]: d for d in listed},
    }).json  # fmt: skip
    assert summary == {
        "Age": ["min=43", "max=67"],
        "Sex": ["F (50.0%)", "M (50.0%)"],
        "Grade": ["2 (100.0%)"],
    }

    # A second upload replaces the first: the values of the old columns are gone.
    client.delete(f"/clinical-features-definitions{Q}", headers=auth.headers())
    post(client, auth, f"/clinical-features-definitions{Q}",
         {"clinical_feature_definitions": {"Sex": guessed["Sex"]}})  # fmt: skip
    post(client, auth, f"/clinical-features{Q}",
         {"clinical_feature_map": {"P1": {"PatientID": "P1", "Sex": "M"}}})  # fmt: skip
    again = post(client, auth, f"/clinical-features{Q}", {"patient_ids": ["P1", "P9"]}).json
    assert again == {"P1": {"Sex": "M"}}


def test_edit_definitions_by_id_or_name_owner_only(client, auth):
    spec = {"feat_type": "Number", "encoding": "Normalization", "missing_values": "Median"}
    saved = post(client, auth, f"/clinical-features-definitions{Q}",
                 {"clinical_feature_definitions": {"Age": spec, "BMI": spec}}).json  # fmt: skip
    edited = [
        {**saved[0], "missing_values": "Mean"},
        {"name": "BMI", "feat_type": "Categorical", "encoding": "One-Hot Encoding",
         "missing_values": "Drop"},
    ]  # fmt: skip
    response = client.patch(f"/clinical-features-definitions{Q}",
                            json={"clinical_feature_definitions": edited},
                            headers=auth.headers())  # fmt: skip
    assert response.status_code == 200
    assert [(d["name"], d["missing_values"]) for d in response.json] == [
        ("Age", "Mean"),
        ("BMI", "Drop"),
    ]
    foreign = client.patch(f"/clinical-features-definitions{Q}",
                           json={"clinical_feature_definitions": [edited[0]]},
                           headers=auth.headers("carol"))  # fmt: skip
    assert foreign.status_code == 404
    assert foreign.json == {"error": f"Clinical feature definition {saved[0]['id']} not found"}
    assert (
        client.get(f"/clinical-features-definitions{Q}", headers=auth.headers("carol")).json == []
    )
    assert post(client, auth, f"/clinical-features{Q}", {"patient_ids": ["P1"]}, "carol").json == {}


SPEC = {"feat_type": "Number", "encoding": "Normalization", "missing_values": "Median"}


def test_renaming_onto_an_existing_name_is_a_409_naming_it(client, auth):
    # Issue #13: the unique (file, name) key refused the UPDATE: an IntegrityError, a 500.
    url = "/clinical-features-definitions?album_id=0"
    saved = post(client, auth, url, {"clinical_feature_definitions": {"Age": SPEC, "BMI": SPEC}})
    age, bmi = saved.json

    def patch(*edits):
        body = {"clinical_feature_definitions": list(edits)}
        return client.patch(url, json=body, headers=auth.headers())

    onto = patch({**SPEC, "id": age["id"], "name": "BMI"})
    assert onto.status_code == 409, onto.get_data()
    assert onto.json["error"] == (
        f"Clinical feature definition 'BMI' already exists in this clinical file"
        f" (definition {bmi['id']}); rename that one first"
    )
    twice = patch(
        {**SPEC, "id": age["id"], "name": "Weight"}, {**SPEC, "id": bmi["id"], "name": "Weight"}
    )
    assert twice.status_code == 409
    assert "'Weight'" in twice.json["error"]
    swap = patch({**SPEC, "id": age["id"], "name": "BMI"}, {**SPEC, "id": bmi["id"], "name": "Age"})
    assert swap.status_code == 409
    names = [d["name"] for d in client.get(url, headers=auth.headers()).json]
    assert names == ["Age", "BMI"]  # nothing written
    renamed = patch({**SPEC, "id": age["id"], "name": "Weight"}, {**SPEC, "id": bmi["id"]})
    assert renamed.status_code == 400  # an edit without a name
    kept = patch({**age, "name": "Age", "missing_values": "Mean"})
    assert kept.status_code == 200 and kept.json[0]["missing_values"] == "Mean"


@pytest.mark.parametrize(
    ("url", "body", "message"),
    [
        ("/clinical-features", {"patient_ids": ["P1"]}, "The album_id query parameter is required"),
        (f"/clinical-features{Q}", {"patient_ids": ["P1"], "clinical_feature_map": {}}, "either"),
        (f"/clinical-features{Q}", {"clinical_feature_map": {"P1": {"Weight": "70"}}},
         "None of the table's columns has a clinical feature definition"),
        (f"/clinical-features-definitions{Q}",
         {"clinical_feature_definitions": {"Age": {"feat_type": "Date", "encoding": "None",
                                                   "missing_values": "None"}}}, "feat_type"),
        ("/clinical-features/unique-values",
         {"clinical_feature_map": {"P1": {"Age": "old"}},
          "clinical_features_definitions": {"Age": {"feat_type": "Vector"}}},
         "Column 'Age': unknown feature type 'Vector'"),
    ],
)  # fmt: skip
def test_bad_requests_are_400_with_the_reason(client, auth, url, body, message):
    response = post(client, auth, url, body)
    assert response.status_code == 400
    assert message in str(response.json)


def test_numeric_summary_reports_unparseable_columns(client, auth):
    body = {
        "clinical_feature_map": {"P1": {"Age": "41.5"}, "P2": {"Age": "old"}, "P3": {"Age": ""}},
        "clinical_features_definitions": {"Age": {"feat_type": "Number"}},
    }
    summary = post(client, auth, "/clinical-features/unique-values", body).json
    assert summary == {"Age": ["ERROR parsing numerical values for this column"]}
    body["clinical_feature_map"]["P2"]["Age"] = "39"
    summary = post(client, auth, "/clinical-features/unique-values", body).json
    assert summary == {"Age": ["min=39", "max=41.5"]}
