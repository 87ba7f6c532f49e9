"""Extension singletons, initialised inside create_app()."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from spectree import SecurityScheme, SpecTree
from spectree.models import SecureType, SecuritySchemeData

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


spec = SpecTree(
    "flask",
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
