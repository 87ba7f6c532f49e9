"""Liveness, readiness, and the generated OpenAPI document."""

from __future__ import annotations

import re


def test_liveness_needs_no_token(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.json == {"status": "QuantImage v2 Backend is running"}


def test_readiness_checks_database_and_redis(client):
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.json == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}


def test_readiness_reports_redis_down(app, client):
    settings = app.config["SETTINGS"]
    original = settings.celery_broker_url
    settings.celery_broker_url = "redis://127.0.0.1:1/0"  # nothing listens there
    try:
        response = client.get("/health/ready")
    finally:
        settings.celery_broker_url = original
    assert response.status_code == 503
    assert response.json["checks"]["database"] == "ok"
    assert response.json["checks"]["redis"].startswith("error")


def test_openapi_lists_every_api_route(app, client):
    document = client.get("/openapi.json").json
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/docs") or rule.rule == "/openapi.json":
            continue
        openapi_path = rule.rule.replace("<int:", "{").replace("<", "{").replace(">", "}")
        assert openapi_path in paths, openapi_path
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in paths[openapi_path], (method, openapi_path)


def test_openapi_schemas_come_from_declarations(client):
    document = client.get("/openapi.json").json
    preset_get = document["paths"]["/feature-presets/{preset_id}"]["get"]
    ref = preset_get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"id", "name", "config", "config-raw", "config_path"} <= set(schema["properties"])
    nav = document["paths"]["/navigation"]["post"]
    assert "requestBody" in nav
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_docs_page_is_browsable(client):
    assert client.get("/docs").status_code == 302
    page = client.get("/docs/swagger/")
    assert page.status_code == 200
    assert b"openapi.json" in page.data


def test_docs_page_loads_nothing_from_another_host(app, client):
    page = client.get("/docs/swagger/").data.decode()
    assert "://" not in page.replace("location.origin", "")
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"} <= set(assets)
    for url in assets:
        with client.get(url) as response:
            assert response.status_code == 200, url
            assert len(response.data) > 500, url
            assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/docs/assets/index.j2").status_code == 404
    # spectree's stock pages (redoc, scalar) load their scripts from CDNs: not served.
    assert [r.rule for r in app.url_map.iter_rules() if r.rule.startswith("/docs/")] == [
        "/docs/assets/<name>",
        "/docs/openapi.json",
        "/docs/swagger/",
    ]


def test_authenticated_responses_are_not_cached_nor_sniffed(client, auth):
    for url in ("/feature-presets", "/navigation", "/no/such/route"):
        response = client.get(url, headers=auth.headers())
        assert response.headers["X-Content-Type-Options"] == "nosniff", url
        assert response.headers["Cache-Control"] == "no-store", url
    refused = client.get("/feature-presets")
    assert refused.status_code == 401
    assert refused.headers["Cache-Control"] == "no-store"
    assert client.get("/").headers["X-Content-Type-Options"] == "nosniff"


def test_openapi_path_parameters_state_their_bounds(client):
    paths = client.get("/openapi.json").json["paths"]
    parameters = {
        p["name"]: p["schema"]
        for p in paths["/albums/{album_id}/current-outcome/{category_id}"]["patch"]["parameters"]
    }
    assert parameters["category_id"] == {
        "type": "integer",
        "format": "int64",
        "minimum": 0,
        "maximum": 2**63 - 1,
    }
    assert parameters["album_id"] == {"type": "string", "minLength": 1, "maxLength": 128}


def test_openapi_links_carry_ids_into_the_routes_that_take_them(client):
    paths = client.get("/openapi.json").json["paths"]
    operations = {
        op["operationId"]: (path, op) for path, ops in paths.items() for op in ops.values()
    }
    latest = paths["/extractions/album/{album_id}"]["get"]["responses"]["200"]["links"]
    assert latest["get__extractions_extraction_id"] == {
        "operationId": "get__extractions_{extraction_id}",
        "parameters": {"extraction_id": "$response.body#/id"},
    }
    created = paths["/label-categories/{album_id}"]["post"]["responses"]["200"]["links"]
    assert created["patch__albums_album_id_current-outcome_category_id"]["parameters"] == {
        "category_id": "$response.body#/id",
        "album_id": "$request.path.album_id",
    }
    started = paths["/models/{model_id}/predict"]["post"]["responses"]["202"]["links"]
    assert started["get__predictions_prediction_id"]["parameters"] == {
        "prediction_id": "$response.body#/id"
    }
    linked = set()
    for ops in paths.values():
        for op in ops.values():
            answers = [a for code, a in op["responses"].items() if code.startswith("2")]
            for link in (link for a in answers for link in a.get("links", {}).values()):
                path, target = operations[link["operationId"]]
                names = {p["name"] for p in target["parameters"] if p["in"] == "path"}
                assert set(link["parameters"]) == names, (path, link)
                linked.add(path)
    # Every route that takes an id in its path is reachable through a link.
    taking_ids = {path for path in paths if re.search(r"\{(?!album_id)\w+\}", path)}
    assert taking_ids <= linked, sorted(taking_ids - linked)
