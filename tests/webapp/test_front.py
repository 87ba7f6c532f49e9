"""The Socket.IO front as users reach the API through it (issue #13): gunicorn behind the front.

The front forwards every request target byte for byte (still percent-encoded), so it answers
exactly what the API answers, in the API's JSON error shape, and never a plain-text 500. Every
answer carries one `Date` and no `Server`.
"""

from __future__ import annotations

import httpx
import pytest

from shared.db.session import session_scope
from shared.presets import service as preset_service

# Request targets as a client may send them. The API judges each with a JSON 4xx (or a 200);
# the front once decoded the path first and httpx refused `\r`, `\n`, NUL, ... with a 500, and
# httpx still drops `..` segments from any URL it parses.
TARGETS = [
    b"/extractions/album/%C3%86%C3%B6%F1%B9%BD%BA%0D",
    b"/albums/%0A/current-outcome",
    b"/label-categories/a%00b",
    b"/models/%7F",
    b"/extractions/%1D%18%EE%AB%A5%1A%C3%BF%5D%08/status",
    b"/models/%0D/feature-importances",
    b"/extractions/album/..",
    b"/extractions/album/a%2Fb",
    b"/extractions/album/%F0%9F%98%80",
    b"/clinical-features-definitions?album_id=%0D",
    b"/feature-presets/1/../2",
]


def send(base_url: str, target: bytes, headers: dict[str, str], method: str = "GET"):
    """Send one request whose target goes out exactly as given (no client-side normalising)."""
    with httpx.Client(timeout=10) as client:
        return client.request(method, base_url, headers=headers, extensions={"target": target})


@pytest.mark.parametrize("target", TARGETS, ids=[t.decode() for t in TARGETS])
def test_the_front_answers_what_the_api_answers(served_front, auth, target):
    headers = auth.headers("alice")
    direct = send(served_front.api_url, target, headers)
    through = send(served_front.url, target, headers)
    assert through.status_code < 500, through.text
    assert through.headers["content-type"].startswith("application/json"), through.text
    assert (through.status_code, through.json()) == (direct.status_code, direct.json())


def test_a_patch_or_post_with_a_control_character_in_the_path_is_judged_by_the_api(
    served_front, auth
):
    target = b"/albums/%C3%86%0D/current-outcome"
    for method in ("PATCH", "POST"):
        through = send(served_front.url, target, auth.headers("alice"), method)
        direct = send(served_front.api_url, target, auth.headers("alice"), method)
        assert through.status_code in (400, 405), through.text
        assert (through.status_code, through.json()) == (direct.status_code, direct.json())


def test_what_gunicorn_refuses_itself_still_gets_the_json_error_shape(served_front, auth):
    # gunicorn answers a request line over 4094 bytes with its own HTML 414 (./qi2 fuzz, seed
    # 2026, found it through the front); the front gives it the API's shape.
    target = b"/clinical-features-definitions?album_id=" + b"%C3%86" * 1000
    direct = send(served_front.api_url, target, auth.headers())
    assert (direct.status_code, direct.headers["content-type"]) == (414, "text/html")
    through = send(served_front.url, target, auth.headers())
    assert through.status_code == 414
    assert through.json() == {"error": "URI Too Long"}


def test_one_date_and_no_server_header_on_every_answer(served_front, auth):
    url = served_front.url
    answers = {
        "forwarded JSON": httpx.get(f"{url}/feature-presets", headers=auth.headers()),
        "forwarded error": httpx.get(f"{url}/no/such/route", headers=auth.headers()),
        "forwarded file": httpx.get(f"{url}/docs/assets/favicon-16x16.png"),
        "forwarded control character": send(url, TARGETS[0], auth.headers()),
        "the front's own": httpx.get(f"{url}/health/sockets"),
        "Socket.IO": httpx.get(f"{url}/socket.io/?EIO=4&transport=polling"),
    }
    for name, answer in answers.items():
        assert answer.status_code < 500, name
        assert len(answer.headers.get_list("date")) == 1, (name, answer.headers)
        assert "server" not in answer.headers, (name, answer.headers)


def test_a_preset_patch_without_a_form_is_a_400_through_the_front(served_front, auth):
    with session_scope() as session:
        preset_service.seed_default_presets(session)
    preset = httpx.get(f"{served_front.url}/feature-presets", headers=auth.headers()).json()[0]
    response = httpx.patch(
        f"{served_front.url}/feature-presets/{preset['id']}", headers=auth.headers("alice")
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith(
        "request body must be multipart/form-data with the field(s) name"
    )
