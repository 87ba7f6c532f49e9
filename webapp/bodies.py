"""Strict request input for every route: JSON and form bodies, path values and integer ids.

A route that declares a JSON body (a `json` parameter, read by spectree) gets a valid, shallow
JSON object or a 400 "request body is not valid JSON"; spectree alone would read a broken or
missing body as `{}`. A route that declares a form (a `form` parameter) gets a form or a 400
naming its fields; spectree alone would call the route with `form=None`. Path values with
control characters and integer ids past 64 bits are refused here too, so no route (and no
database driver) sees them.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any, get_type_hints

from flask import Flask, current_app, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import BadRequest

from shared.db.base import ALBUM_ID_LENGTH
from shared.errors import InvalidInput, NotFound
from shared.schemas import CONTROL_CHARACTERS, INT64_MAX

NOT_JSON = "request body is not valid JSON"
MAX_JSON_DEPTH = 64
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
FORM_TYPES = frozenset({"multipart/form-data", "application/x-www-form-urlencoded"})
_body_kinds: dict[Callable[..., Any], str | None] = {}


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider whose `loads` refuses documents nested too deeply."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Parse JSON; deep nesting and NaN/Infinity are ValueErrors (Flask answers 400)."""
        kwargs.setdefault("parse_constant", _not_a_json_number)
        try:
            data = json.loads(s, **kwargs)
        except RecursionError as exc:
            raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels") from exc
        if _depth(data) > MAX_JSON_DEPTH:
            raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
        return data


def _not_a_json_number(name: str) -> Any:
    """Refuse NaN and Infinity, which Python reads but JSON does not have."""
    raise ValueError(f"{name} is not a JSON number")


def _depth(data: Any) -> int:
    """Return the nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, level)
            if level <= MAX_JSON_DEPTH:
                stack.extend((item, level + 1) for item in value)
    return deepest


def body_kind(view: Callable[..., Any]) -> str | None:
    """Return "json" or "form" when a view declares that body (a parameter of its innermost
    function, as spectree reads it), else None."""
    if view not in _body_kinds:
        parameters = inspect.signature(inspect.unwrap(view)).parameters
        _body_kinds[view] = next((k for k in ("json", "form") if k in parameters), None)
    return _body_kinds[view]


def takes_json(view: Callable[..., Any]) -> bool:
    """Tell whether a view declares a JSON body."""
    return body_kind(view) == "json"


def _not_json(reason: str) -> InvalidInput:
    """Build the one error of an unreadable JSON body."""
    return InvalidInput(NOT_JSON, details=[{"key": "body", "message": reason}])


def check_request_body() -> None:
    """Before a route with a declared body runs: a JSON body parsed strictly (Flask caches it
    for spectree), a form body present as a form."""
    if request.method not in BODY_METHODS or request.endpoint is None:
        return
    view = current_app.view_functions.get(request.endpoint)
    kind = body_kind(view) if view is not None else None
    if kind == "json":
        _parse_json_body()
    elif kind == "form" and request.mimetype not in FORM_TYPES:
        raise _not_a_form(view)  # type: ignore[arg-type]


def _not_a_form(view: Callable[..., Any]) -> InvalidInput:
    """Build the 400 of a missing form, naming the fields the route requires."""
    model = get_type_hints(inspect.unwrap(view))["form"]
    required = [name for name, field in model.model_fields.items() if field.is_required()]
    sent = f"Content-Type {request.mimetype!r}" if request.mimetype else "no Content-Type"
    message = f"request body must be multipart/form-data with the field(s) {', '.join(required)}"
    return InvalidInput(f"{message}; got {sent}", details=[{"key": "body", "message": message}])


def _parse_json_body() -> None:
    """Parse the JSON body: a JSON object nested at most MAX_JSON_DEPTH levels."""
    if not request.is_json:
        raise _not_json(f"Content-Type must be application/json, not {request.mimetype!r}")
    try:
        data = request.get_json()
    except BadRequest as exc:
        cause = exc.__context__ or exc
        raise _not_json(str(cause)) from exc
    if not isinstance(data, dict):
        raise _not_json("the body must be a JSON object")


def check_path_values() -> None:
    """Refuse ids past 64 bits (no such row: 404) and text values (album ids) that are too
    long for their column or hold control characters."""
    for name, value in (request.view_args or {}).items():
        if isinstance(value, int) and value > INT64_MAX:
            raise NotFound("Not found")
        if not isinstance(value, str):
            continue
        problem = None
        if CONTROL_CHARACTERS.search(value):
            problem = "must not contain control characters"
        elif len(value) > ALBUM_ID_LENGTH:  # album ids are the only text in our paths
            problem = f"must be at most {ALBUM_ID_LENGTH} characters"
        if problem:
            raise InvalidInput(f"{name}: {problem}", details=[{"key": name, "message": problem}])


def init_app(app: Flask) -> None:
    """Install the JSON provider and the hooks (after authentication)."""
    app.json_provider_class = StrictJSONProvider
    app.json = StrictJSONProvider(app)
    app.json.sort_keys = False  # the contract keeps insertion order
    app.before_request(check_path_values)
    app.before_request(check_request_body)
