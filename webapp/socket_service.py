"""The Socket.IO service: one asyncio process that holds every client connection (ADR 0001).

    python -m webapp.socket_service --port 5000 [--rest-upstream http://127.0.0.1:5001]

python-socketio's AsyncServer under uvicorn, subscribed to the same Redis message queue and
channel that the workers publish on (shared/events.py). A connection costs a few kilobytes of
memory and no thread, so open browser tabs never limit the REST API, which runs elsewhere
(gunicorn, webapp/wsgi.py) and holds no WebSocket at all.

Clients authenticate as they did against the API: a Keycloak access token in the `auth`
payload or the `token` query parameter, verified by webapp/tokens.py; the client joins the room
of the token's `sub`. With SOCKETIO_LEGACY_ANONYMOUS, clients without a token join the shared
legacy room.

Same origin: in production Traefik sends `/socket.io/` here and everything else to the API.
Where no such router exists (`./qi2 run`, the local and VM compose overlays), this service is
the front: with `--rest-upstream` it forwards every other path to the API (streamed, so
downloads and uploads pass through unchanged).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import socketio
import uvicorn

from shared import events
from shared.config import Settings, get_settings
from shared.errors import Unauthorized
from webapp.tokens import TokenVerifier

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

HEALTH_PATH = "/health/sockets"
# Connection-level headers that a proxy must not forward (RFC 9110 §7.6.1). Host is forwarded
# as the browser sent it, so the API builds any absolute URL with the public origin.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Headers of the API's response that the front replaces: uvicorn writes this process's one
# `Date` (on its own answers too), and no `Server`, which names the software to an attacker.
# gunicorn writes both and has no setting to stop, so forwarding them would send two `Date`
# fields (a singleton field, RFC 9110 §6.6.1) and two `Server`.
DROPPED_RESPONSE_HEADERS = HOP_BY_HOP | {b"date", b"server"}


def token_from(auth: Any, query_string: str) -> str | None:
    """Read the token from the `auth` payload or the `token` query parameter."""
    if isinstance(auth, dict) and auth.get("token"):
        token = str(auth["token"])
    else:
        token = (parse_qs(query_string).get("token") or [""])[0]
    if token.lower().startswith("bearer "):
        token = token[7:]
    return token or None


def cors_origins(settings: Settings) -> str | list[str]:
    """Engine.IO wants the string '*' for any origin, a list otherwise."""
    origins = settings.cors_allowed_origins
    return "*" if "*" in origins else list(origins)


class Server(socketio.AsyncServer):
    """AsyncServer that ends a closing session's open long-poll at once.

    python-engineio 4.15's asyncio socket, unlike its threaded one, does not wake a pending
    long-poll when the client closes the session (or is refused), so that request, and a client
    waiting for it, hangs until the ping timeout.
    """

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> None:
        await super()._handle_eio_disconnect(eio_sid, reason)
        socket = self.eio.sockets.get(eio_sid)
        if socket is not None:
            socket.queue.put_nowait(None)


def create_server(settings: Settings) -> socketio.AsyncServer:
    """Build the AsyncServer with the authenticating connect handler."""
    manager = events.listening_manager(settings.socket_message_queue, settings.socketio_channel)
    server = Server(
        async_mode="asgi",
        client_manager=manager,
        cors_allowed_origins=cors_origins(settings),
    )
    verifier = TokenVerifier(settings)

    @server.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        token = token_from(auth, environ.get("QUERY_STRING", ""))
        if token is None:
            if settings.socketio_legacy_anonymous:
                await server.enter_room(sid, events.LEGACY_ROOM)
                log.info("anonymous socket %s joined the legacy room", sid)
                return True
            log.info("socket %s refused: no token", sid)
            return False
        try:
            # A JWKS fetch blocks; a thread keeps it off the event loop.
            principal = await asyncio.to_thread(verifier.verify, token)
        except Unauthorized as exc:
            log.info("socket %s refused: %s", sid, exc.message)
            return False
        await server.enter_room(sid, events.user_room(principal.user_id))
        return True

    @server.event
    async def disconnect(sid: str, *_args: Any) -> None:
        log.debug("socket %s disconnected", sid)

    return server


async def send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    """Answer a plain HTTP request with a JSON body."""
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(payload)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class RestForwarder:
    """ASGI app for every path but /socket.io/: the health probe, then the API if configured."""

    def __init__(self, server: socketio.AsyncServer, upstream: str | None) -> None:
        self.server = server
        self.upstream = upstream.rstrip("/") if upstream else None
        self._client: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1000})
        elif scope["path"] == HEALTH_PATH:
            await send_json(
                send, 200, {"status": "ok", "connections": len(self.server.eio.sockets)}
            )
        elif self.upstream is None:
            await send_json(send, 404, {"error": "This service only serves /socket.io/"})
        else:
            await self._forward_or_answer(scope, receive, send)

    async def _forward_or_answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Forward; a failure before the response started still answers in the API's JSON shape
        (uvicorn's own answer would be a plain-text 500)."""
        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._forward(scope, receive, tracking_send)
        except Exception:
            log.exception("forwarding %s failed", scope["method"])
            if started:
                raise
            await send_json(send, 500, {"error": "Internal server error"})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Close the upstream connection pool on shutdown."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def client(self) -> httpx.AsyncClient:
        """Return the pooled upstream client, created inside the running loop."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(connect=5, read=600, write=600, pool=60),
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=64),
            )
        return self._client

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream the request to the API and its response back."""
        headers = [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP]
        client_addr = scope.get("client")
        if client_addr:
            headers.append((b"x-forwarded-for", client_addr[0].encode()))
        try:
            # The target goes out byte for byte as the client sent it, still percent-encoded
            # (httpcore's `target` extension), so the API judges what the client asked. A URL
            # rebuilt from the decoded ASGI path held e.g. `%0D` as a `\r` that httpx refuses,
            # and httpx also drops `.` and `..` segments from the URLs it parses.
            request = self.client().build_request(
                scope["method"],
                self.upstream,
                headers=headers,
                content=request_body(receive),
                extensions={"target": request_target(scope)},
            )
            response = await self.client().send(request, stream=True)
        except (httpx.InvalidURL, httpx.LocalProtocolError) as exc:
            log.info("request not forwarded: %s", exc)
            await send_json(send, 400, {"error": f"The request cannot be forwarded: {exc}"})
            return
        except httpx.HTTPError as exc:
            log.warning("API upstream unreachable: %s", exc)
            await send_json(send, 502, {"error": "The API is not reachable"})
            return
        if response.status_code >= 400 and not is_json(response):
            # The API answers every error in JSON: this one is gunicorn's own HTML page for a
            # request its parser refused (e.g. a request line over 4094 bytes: 414).
            await response.aclose()
            await send_json(send, response.status_code, {"error": response.reason_phrase})
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (k, v)
                        for k, v in response.headers.raw
                        if k.lower() not in DROPPED_RESPONSE_HEADERS
                    ],
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()


def is_json(response: httpx.Response) -> bool:
    """Tell whether a response declares a JSON body."""
    return response.headers.get("content-type", "").startswith("application/json")


def request_target(scope: Scope) -> bytes:
    """Return the request target as received: the raw path (still percent-encoded) and query."""
    target = scope.get("raw_path") or scope["path"].encode()
    if scope.get("query_string"):
        target += b"?" + scope["query_string"]
    return target


async def request_body(receive: Receive) -> AsyncIterator[bytes]:
    """Yield the ASGI request body as it arrives."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return


def create_app(settings: Settings | None = None, rest_upstream: str | None = None) -> Any:
    """Build the ASGI app: Socket.IO on /socket.io/, the forwarder on every other path."""
    settings = settings or get_settings()
    server = create_server(settings)
    return socketio.ASGIApp(server, other_asgi_app=RestForwarder(server, rest_upstream))


def main(argv: list[str] | None = None) -> None:
    """Parse the options and serve until stopped."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument(
        "--rest-upstream",
        default=None,
        help="base URL of the API to forward every other path to (omit behind Traefik)",
    )
    args = parser.parse_args(argv)
    settings = get_settings()
    logging.basicConfig(level=settings.log_level)
    uvicorn.run(
        create_app(settings, args.rest_upstream),
        host=args.host,
        port=args.port,
        ws="websockets",
        lifespan="on",
        access_log=False,
        # One Date per response (uvicorn's; the API's is dropped when forwarding), no Server.
        server_header=False,
        date_header=True,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
