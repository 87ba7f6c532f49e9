"""Extension singletons, initialised inside create_app()."""

from __future__ import annotations

from typing import Any

from flask import current_app, make_response
from pydantic import BaseModel, ValidationError
from spectree import SecurityScheme, SpecTree
from spectree.models import SecureType, SecuritySchemeData
from spectree.plugins.flask_plugin import FlaskPlugin
from spectree.plugins.werkzeug_utils import flask_response_unpack

from shared.errors import InvalidInput
from shared.schemas import ErrorBody


def validation_failed(_req: Any, _resp: Any, error: Exception | None, *_args: Any) -> None:
    """spectree hook: report request-validation errors through our one error mapping."""
    if error is None:
        return
    details = []
    if isinstance(error, ValidationError):
        for item in error.errors():
            key = ".".join(str(part) for part in item["loc"]) or "body"
            details.append({"key": key, "message": item["msg"]})
    listed = "; ".join(f"{d['key']}: {d['message']}" for d in details[:5])
    raise InvalidInput(f"Invalid request: {listed or error}", details=details)


class ResponsePlugin(FlaskPlugin):
    """spectree's Flask plugin, validating responses only when the settings ask for it.

    Request bodies are always validated. Checking our own responses against their declared
    schemas is a test-time concern (`validate_responses`, on in the test suite); unchecked
    responses also skip spectree's recursive scan for model instances in the payload.
    """

    def validate_response(
        self, resp: Any, resp_model: Any, skip_validation: bool, force_resp_serialize: bool
    ) -> tuple[Any, Exception | None]:
        """Validate when configured; else send the view's result as Flask would."""
        if current_app.config["SETTINGS"].validate_responses:
            return super().validate_response(
                resp, resp_model, skip_validation, force_resp_serialize
            )
        payload, status, headers = flask_response_unpack(resp)
        if isinstance(payload, BaseModel):
            payload = current_app.response_class(
                payload.model_dump_json(by_alias=True), mimetype="application/json"
            )
        return make_response(payload, status, headers), None


spec = SpecTree(
    "flask",
    backend=ResponsePlugin,
    title="QuantImage v2 backend API",
    version="4.0",
    description="REST API of the QuantImage v2 radiomics platform. Every route except the "
    "health checks and these docs needs a Keycloak access token (`Authorization: Bearer`).",
    path="docs",
    before=validation_failed,
    validation_error_status=400,
    validation_error_model=ErrorBody,
    mode="normal",
    annotations=True,
    security_schemes=[
        SecurityScheme(
            name="bearer",
            data=SecuritySchemeData(type=SecureType.HTTP, scheme="bearer", bearer_format="JWT"),
        )
    ],
    security={"bearer": []},
)
