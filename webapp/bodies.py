"""Strict request input for every route: JSON bodies, path values and integer ids.

A route that declares a JSON body (a `json` parameter, read by spectree) gets a valid, shallow
JSON object or a 400 "request body is not valid JSON"; spectree alone would read a broken or
missing body as `{}`. Path values with control characters and integer ids past 64 bits are
refused here too, so no route (and no database driver) sees them.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import BadRequest

from shared.db.base import ALBUM_ID_LENGTH
from shared.errors import InvalidInput, NotFound
from shared.schemas import CONTROL_CHARACTERS, INT64_MAX

NOT_JSON = "request body is not valid JSON"
MAX_JSON_DEPTH = 64
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_takes_json: dict[Callable[..., Any], bool] = {}


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


def takes_json(view: Callable[..., Any]) -> bool:
    """Tell whether a view declares a JSON body (its innermost function has a `json` parameter)."""
    if view not in _takes_json:
        _takes_json[view] = "json" in inspect.signature(inspect.unwrap(view)).parameters
    return _takes_json[view]


def _not_json(reason: str) -> InvalidInput:
    """Build the one error of an unreadable JSON body."""
    return InvalidInput(NOT_JSON, details=[{"key": "body", "message": reason}])


def parse_json_body() -> None:
    """Before a JSON route runs: parse its body strictly (Flask caches it for spectree)."""
    if request.method not in BODY_METHODS or request.endpoint is None:
        return
    view = current_app.view_functions.get(request.endpoint)
    if view is None or not takes_json(view):
        return
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
    app.before_request(parse_json_body)
