"""OpenAPI 3 document generated from the route and schema declarations, plus browsable docs.

The docs page is Swagger UI with its assets served from the installed `swagger-ui-bundle`
package under /docs/assets/: the page loads nothing from another host.

The document also states, as OpenAPI links, which answers name the ids that the by-id routes
take, so that a client (and Schemathesis' stateful phase, `./qi2 fuzz`) can follow a list or a
creation into them instead of guessing ids.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask, abort, jsonify, redirect, send_from_directory
from swagger_ui_bundle import swagger_ui_path

from shared.db.base import ALBUM_ID_LENGTH
from shared.schemas import INT64_MAX
from webapp.auth import public
from webapp.extensions import spec

ASSETS_URL = "/docs/assets"
ASSETS = frozenset(
    {
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
        "favicon-16x16.png",
        "favicon-32x32.png",
        "oauth2-redirect.html",
    }
)
ASSET_MAX_AGE = 24 * 3600
# Path parameter -> the success answers that name such an id: (path, method, JSON pointer). A
# list's first item stands for the list (a runtime expression names one value).
ID_SOURCES: dict[str, list[tuple[str, str, str]]] = {
    "extraction_id": [
        ("/extractions/album/{album_id}", "get", "/id"),
        ("/extract/album/{album_id}", "post", "/id"),
    ],
    "category_id": [
        ("/label-categories/{album_id}", "post", "/id"),
        ("/label-categories/{album_id}", "get", "/0/id"),
    ],
    "model_id": [("/models/{album_id}", "get", "/0/id")],
    "collection_id": [("/feature-collections/new", "post", "/collection/id")],
    "preset_id": [("/feature-presets", "post", "/id"), ("/feature-presets", "get", "/0/id")],
    "prediction_id": [
        ("/models/{model_id}/predict", "post", "/id"),
        ("/models/{model_id}/predictions", "get", "/0/id"),
    ],
}

# spectree formats this with str.format (spec_url, ...): literal braces are doubled.
SWAGGER_PAGE = f"""<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>QuantImage v2 API</title>
    <link rel="stylesheet" href="{ASSETS_URL}/swagger-ui.css">
    <link rel="icon" type="image/png" href="{ASSETS_URL}/favicon-32x32.png">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="{ASSETS_URL}/swagger-ui-bundle.js"></script>
    <script src="{ASSETS_URL}/swagger-ui-standalone-preset.js"></script>
    <script>
      window.onload = function () {{{{
        window.ui = SwaggerUIBundle({{{{
          url: "{{spec_url}}",
          dom_id: "#swagger-ui",
          presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
          layout: "StandaloneLayout",
          oauth2RedirectUrl: location.origin + "{ASSETS_URL}/oauth2-redirect.html",
        }}}});
      }}}};
    </script>
  </body>
</html>
"""


def document() -> dict[str, Any]:
    """Return the OpenAPI document, its path parameters bounded as `webapp.bodies` enforces and
    its id-naming answers linked to the routes that take the id."""
    generated = spec.spec  # built once and cached by spectree (also served at /docs/openapi.json)
    if not generated.get("x-path-bounds"):
        for operations in generated.get("paths", {}).values():
            for operation in operations.values():
                for parameter in operation.get("parameters", []):
                    if parameter.get("in") == "path":
                        _bound(parameter["schema"])
        _link_ids(generated.get("paths", {}))
        generated["x-path-bounds"] = True
    return generated


def _link_ids(paths: dict[str, Any]) -> None:
    """Add an OpenAPI link from each id-naming answer to every operation taking that id."""
    for name, sources in ID_SOURCES.items():
        takers = [
            (path, operation)
            for path, operations in paths.items()
            for operation in operations.values()
            if any(p["in"] == "path" and p["name"] == name for p in operation.get("parameters", []))
        ]
        for path, method, pointer in sources:
            responses = paths[path][method]["responses"]
            answer = next(responses[code] for code in ("200", "201", "202") if code in responses)
            links = answer.setdefault("links", {})
            for target_path, target in takers:
                parameters = {name: f"$response.body#{pointer}"}
                if "{album_id}" in target_path and "{album_id}" in path:
                    parameters["album_id"] = "$request.path.album_id"
                # Link names follow the components' key pattern; operation ids hold braces.
                key = re.sub(r"[^A-Za-z0-9._-]", "", target["operationId"])
                links[key] = {"operationId": target["operationId"], "parameters": parameters}


def _bound(schema: dict[str, Any]) -> None:
    """Ids are 64-bit and not negative; text path values are album ids (their column's length)."""
    if schema.get("type") == "integer":
        schema.update(format="int64", minimum=0, maximum=INT64_MAX)
    elif schema.get("type") == "string":
        schema.update(minLength=1, maxLength=ALBUM_ID_LENGTH)


@public
def openapi_json() -> Any:
    """Serve the OpenAPI document."""
    return jsonify(document())


@public
def docs_index() -> Any:
    """Send the browser to the interactive docs."""
    return redirect("/docs/swagger/")


@public
def docs_asset(name: str) -> Any:
    """Serve one Swagger UI file from the installed package (a fixed list, nothing else)."""
    if name not in ASSETS:
        abort(404)
    return send_from_directory(swagger_ui_path, name, max_age=ASSET_MAX_AGE)


def init_app(app: Flask) -> None:
    """Register the docs routes (spectree adds /docs/swagger/ from SWAGGER_PAGE)."""
    app.add_url_rule("/openapi.json", "openapi_json", openapi_json)
    app.add_url_rule("/docs", "openapi_docs_index", docs_index)
    app.add_url_rule(f"{ASSETS_URL}/<name>", "openapi_docs_asset", docs_asset)
    # Only Swagger UI, on our own assets: spectree's stock pages load theirs from CDNs.
    spec.config.page_templates = {"swagger": SWAGGER_PAGE}
    spec.register(app)
