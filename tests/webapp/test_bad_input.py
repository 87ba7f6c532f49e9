"""Bad input gives a JSON 4xx naming the problem, never a 5xx (issue #8 §3)."""

from __future__ import annotations

import pytest
from werkzeug.routing import IntegerConverter

from shared.extractions.models import FeatureExtraction
from shared.labels import service as label_service
from webapp.bodies import NOT_JSON, takes_json

HUGE = 2**63
DEEP = 10_000


def json_routes(app) -> list[tuple[str, str]]:
    """(method, url) of every route that declares a JSON body, with placeholder path values."""
    routes = []
    for rule in app.url_map.iter_rules():
        if not takes_json(app.view_functions[rule.endpoint]):
            continue
        values = {
            arg: 1 if isinstance(rule._converters[arg], IntegerConverter) else "album-1"
            for arg in rule.arguments
        }
        url = rule.build(values, append_unknown=False)[1]
        for method in sorted(rule.methods & {"POST", "PUT", "PATCH"}):
            routes.append((method, url))
    return routes


@pytest.fixture(scope="module")
def routes(app) -> list[tuple[str, str]]:
    """The JSON routes (the issue counted 14)."""
    found = json_routes(app)
    assert len(found) >= 14
    return found


def send(client, auth, method, url, **kwargs):
    """Call one route as bob."""
    return client.open(url, method=method, headers=auth.headers(), **kwargs)


def assert_not_json(response) -> None:
    """The one answer to an unreadable JSON body."""
    assert response.status_code == 400, (response.status_code, response.json)
    assert response.json["error"] == NOT_JSON


@pytest.mark.parametrize(
    "body",
    [
        "[" * DEEP + "]" * DEEP,
        '{"a":' * DEEP + "1" + "}" * DEEP,
        '{"a": ' + "[" * 100 + "]" * 100 + "}",
    ],
    ids=["array-10000", "object-10000", "object-100"],
)
def test_deep_json_is_400_on_every_json_route(client, auth, routes, body):
    for method, url in routes:
        response = send(client, auth, method, url, data=body, content_type="application/json")
        assert_not_json(response)
        assert "nested" in response.json["details"][0]["message"], (method, url)


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("{not json", "application/json"),
        ("", "application/json"),
        (b"\xff\xfe{}", "application/json"),
        ('{"name": "x"}', "text/plain"),
        ('{"name": "x"}', None),
        ("[1, 2]", "application/json"),
        ("null", "application/json"),
        ('{"path": "/x", "n": NaN}', "application/json"),
        ('{"path": "/x", "n": -Infinity}', "application/json"),
    ],
    ids=["invalid", "empty", "not-utf8", "text-plain", "no-type", "array", "null", "nan", "inf"],
)
def test_unreadable_body_is_400_on_every_json_route(client, auth, routes, data, content_type):
    for method, url in routes:
        kwargs = {"data": data}
        if content_type:
            kwargs["content_type"] = content_type
        assert_not_json(send(client, auth, method, url, **kwargs))


def test_patch_extraction_with_invalid_json_is_not_200(client, auth, db):
    extraction = FeatureExtraction(
        user_id="user-bob", album_id="a1", config_yaml="{}", rois=["GTV"]
    )
    db.add(extraction)
    db.commit()
    url = f"/extractions/{extraction.id}"
    response = send(client, auth, "PATCH", url, data="{oops", content_type="application/json")
    assert_not_json(response)
    ok = send(client, auth, "PATCH", url, json={"train_test_split_type": "manual"})
    assert ok.status_code == 200, ok.json


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", f"/extractions/{HUGE}"),
        ("GET", f"/extractions/{HUGE * 10**6}/status"),
        ("DELETE", f"/feature-collections/{HUGE}"),
        ("GET", f"/feature-presets/{HUGE}"),
        ("DELETE", f"/labels/{HUGE}"),
        ("PATCH", f"/albums/a1/current-outcome/{HUGE}"),
    ],
)
def test_huge_path_ids_are_404(client, auth, method, url):
    response = send(client, auth, method, url)
    assert response.status_code == 404
    assert response.json == {"error": "Not found"}


@pytest.fixture
def on_sqlite(engine, tmp_path):
    """Point the app at an embedded SQLite database, as `./qi2 run` does, for one test."""
    import shared.db.all_models  # noqa: F401  (every table on the metadata)
    from shared.db import session as db_session
    from shared.db.base import Base

    sqlite = db_session.make_engine(f"sqlite:///{tmp_path / 'qi2.db'}")
    Base.metadata.create_all(sqlite)
    db_session.configure(engine=sqlite)
    try:
        yield
    finally:
        db_session.configure(engine=engine)
        sqlite.dispose()


def test_huge_ids_on_sqlite_are_4xx_not_overflow(client, auth, on_sqlite):
    # SQLite's driver raises OverflowError for integers past 64 bits: they must not reach it.
    for method, url in (
        ("GET", f"/extractions/{HUGE}"),
        ("GET", f"/feature-presets/{HUGE}"),
        ("DELETE", f"/labels/{HUGE}"),
    ):
        assert send(client, auth, method, url).status_code == 404, url
    body = {"featureExtractionID": HUGE, "name": "c", "featureIDs": ["f"]}
    response = send(client, auth, "POST", "/feature-collections/new", json=body)
    assert response.status_code == 400
    assert "featureExtractionID" in response.json["error"]
    assert send(client, auth, "GET", "/feature-presets/1").status_code == 404  # SQLite answers


def test_largest_64_bit_path_id_reaches_the_route(client, auth):
    response = send(client, auth, "GET", f"/extractions/{HUGE - 1}")
    assert response.status_code == 404
    assert response.json["error"] != "Not found"  # the route's own "... not found"


@pytest.mark.parametrize(
    ("url", "body", "key"),
    [
        (
            "/feature-collections/new",
            {"featureExtractionID": HUGE, "name": "c", "featureIDs": ["f"]},
            "featureExtractionID",
        ),
        (
            "/feature-collections/new",
            {"featureExtractionID": -HUGE - 1, "name": "c", "featureIDs": ["f"]},
            "featureExtractionID",
        ),
        (
            "/clinical-features-definitions?album_id=a1",
            {"clinical_feature_definitions": {}, "clinical_feature_file_id": HUGE},
            "clinical_feature_file_id",
        ),
    ],
)
def test_huge_ids_in_bodies_are_400(client, auth, url, body, key):
    response = send(client, auth, "POST", url, json=body)
    assert response.status_code == 400, response.json
    assert key in response.json["error"]


def _category(db, user="bob"):
    """An outcome of bob's album a1."""
    category = label_service.create(
        db, user_id=f"user-{user}", album_id="a1", label_type="Classification", name="Outcome"
    )
    db.commit()
    return category


@pytest.mark.parametrize("bad", ["a\x00b", "tab\there", "line\nbreak", "bell\x07", "del\x7f"])
def test_control_characters_in_names_are_400_naming_the_field(client, auth, db, bad):
    checks = [
        ("POST", "/label-categories/a1", {"label_type": "Classification", "name": bad}, "name"),
        (
            "POST",
            "/feature-collections/new",
            {"featureExtractionID": 1, "name": bad, "featureIDs": ["f"]},
            "name",
        ),
        (
            "POST",
            "/clinical-features-definitions?album_id=a1",
            {
                "clinical_feature_definitions": {
                    bad: {"feat_type": "Number", "encoding": "None", "missing_values": "Drop"}
                }
            },
            "clinical_feature_definitions",
        ),
    ]
    category = _category(db)
    checks += [
        ("PATCH", f"/labels/{category.id}", {"name": bad}, "name"),
        ("POST", f"/labels/{category.id}", {"label_map": {bad: {"Outcome": "1"}}}, "label_map"),
        ("POST", "/navigation", {"path": f"/albums/{bad}"}, "path"),
        (
            "PATCH",
            f"/extractions/{HUGE - 1}",
            {"training_patients": ["P1", bad]},
            "training_patients",
        ),
    ]
    for method, url, body, key in checks:
        response = send(client, auth, method, url, json=body)
        assert response.status_code == 400, (url, response.json)
        assert response.json["error"].startswith("Invalid request: " + key), response.json


def test_nul_in_free_text_values_is_400(client, auth, db):
    category = _category(db)
    response = send(
        client,
        auth,
        "POST",
        f"/labels/{category.id}",
        json={"label_map": {"P1": {"Outcome": "a\x00"}}},
    )
    assert response.status_code == 400
    assert "label_map" in response.json["error"]


def test_control_characters_in_preset_name_are_400(client, auth, preset_yaml):
    response = client.post(
        "/feature-presets",
        data={"name": "x\x00y", "file": (preset_yaml(), "p.yaml", "application/x-yaml")},
        headers=auth.headers("alice"),
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    assert response.json["error"].startswith("Invalid request: name")


@pytest.mark.parametrize("album", ["a%00b", "a%0Ab", "a%1Fb"])
def test_control_characters_in_path_ids_are_400(client, auth, album):
    for url in (f"/extractions/album/{album}", f"/label-categories/{album}", f"/albums/{album}"):
        response = send(client, auth, "GET", url)
        assert response.status_code == 400, url
        assert response.json["error"] == "album_id: must not contain control characters"


def test_openapi_says_e1_and_a3_may_be_null(client):
    paths = client.get("/openapi.json").json["paths"]
    for path in ("/extractions/album/{album_id}", "/albums/{album_id}/current-outcome"):
        schema = paths[path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        ref = schema["$ref"].rsplit("/", 1)[-1]
        component = client.get("/openapi.json").json["components"]["schemas"][ref]
        assert {"type": "null"} in component["anyOf"], component


def test_album_ids_longer_than_their_column_are_400(client, auth):
    album = "a" * 129
    definition = {"feat_type": "Number", "encoding": "None", "missing_values": "Drop"}
    checks = [
        ("POST", f"/label-categories/{album}", {"label_type": "Classification", "name": "n"}),
        ("PATCH", f"/albums/{album}/current-outcome", None),
        ("GET", f"/extractions/album/{album}", None),
        ("POST", f"/clinical-features?album_id={album}", {"clinical_feature_map": {"P1": {}}}),
        (
            "POST",
            f"/clinical-features-definitions?album_id={album}",
            {"clinical_feature_definitions": {"n": definition}},
        ),
    ]
    for method, url, body in checks:
        response = send(client, auth, method, url, **({"json": body} if body else {}))
        assert response.status_code == 400, (url, response.json)
        assert "album_id" in response.json["error"], response.json
    longest = send(client, auth, "GET", f"/extractions/album/{'a' * 128}")
    assert longest.status_code == 200
