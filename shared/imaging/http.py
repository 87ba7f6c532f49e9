"""One HTTP helper for the image-source clients: timeouts, bounded retries, readable errors.

Every call has an explicit timeout (the reference backend had none and hung workers for hours),
transient failures are retried a bounded number of times with backoff, and HTTP failures become
`shared.errors` whose messages name the service and status but never carry a token.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import httpx

from shared.errors import DomainError, Forbidden, NotFound, UpstreamError

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 502, 503, 504})
# A POST may have been processed when the answer was lost; only retry it when the server
# surely did not act on it (no connection, or an explicit "come back later").
SAFE_RETRY_STATUSES_NON_IDEMPOTENT = frozenset({429, 503})
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
MAX_BACKOFF_SECONDS = 8.0
QUERY_SAFE = "!$'()*,/:;?@[]^`{|}"  # kept as is in query values (& = # % + space are escaped)

_pool_lock = threading.Lock()
_pools: dict[tuple[int, float], httpx.Client] = {}


def shared_client(timeout: float) -> httpx.Client:
    """Return this process's pooled client for a timeout (re-created after a fork)."""
    # Sources are built per request and rarely closed; one pool per process avoids leaking
    # sockets, and keying on the pid keeps Celery's forked children off the parent's sockets.
    key = (os.getpid(), timeout)
    with _pool_lock:
        client = _pools.get(key)
        if client is None:
            client = httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False)
            _pools[key] = client
        return client


@atexit.register
def close_shared_clients() -> None:
    """Close the pooled clients of this process."""
    with _pool_lock:
        for (pid, _), client in list(_pools.items()):
            if pid == os.getpid():
                client.close()
        _pools.clear()


class HttpClient:
    """Calls to one upstream service with timeouts, retries and error mapping."""

    def __init__(
        self,
        service: str,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        client: httpx.Client | None = None,
    ) -> None:
        self.service = service
        self.base_url = base_url.rstrip("/")
        self._headers = dict(headers or {})
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self._client = client or shared_client(timeout)

    def __repr__(self) -> str:
        # Never show the headers: they hold the bearer token.
        return f"HttpClient({self.service!r}, {self.base_url!r})"

    def url(self, path: str) -> str:
        """Join a path to the base URL (absolute URLs pass through)."""
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send a request and read the whole answer; raise a domain error unless it is 2xx."""

        def attempt() -> httpx.Response:
            response = self._open(method, path, params=params, data=data, headers=headers)
            try:
                response.read()
            except httpx.TransportError as exc:
                raise _Transient(exc) from exc
            finally:
                response.close()
            return response

        return self._retrying(method, path, attempt)

    def get_json(self, path: str, *, params: Any = None, accept: str = "application/json") -> Any:
        """GET a JSON document; an empty 204 answer gives None."""
        response = self.request("GET", path, params=params, headers={"Accept": accept})
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise UpstreamError(f"{self.service} sent invalid JSON for {path_only(path)}") from exc

    @contextmanager
    def stream(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Iterator[httpx.Response]:
        """Open a streamed 2xx response, retrying transient failures before the body is read.

        Errors while the caller reads the body are raised as they come (httpx.TransportError);
        `body_error` turns them into a readable UpstreamError.
        """
        response = self._retrying(
            method, path, lambda: self._open(method, path, params=params, headers=headers)
        )
        try:
            yield response
        finally:
            response.close()

    def body_error(self, method: str, path: str, exc: httpx.TransportError) -> DomainError:
        """Describe a failure that happened while a streamed body was read."""
        return self._transport_error(method.upper(), path, exc)

    # one attempt, and the loop around it ---------------------------------------------------
    def _open(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send once; return a streamed 2xx response, or raise _Transient."""
        method = method.upper()
        url = self.url(path)
        if params:
            url += ("&" if "?" in url else "?") + query_string(params)
        request = self._client.build_request(
            method, url, data=data, headers={**self._headers, **(headers or {})}
        )
        try:
            response = self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise _Transient(exc) from exc
        if response.is_success:
            return response
        response.close()
        raise _Transient(None, response.status_code, response.headers.get("Retry-After"))

    def _retrying(
        self, method: str, path: str, attempt_once: Callable[[], httpx.Response]
    ) -> httpx.Response:
        """Run `attempt_once` until it succeeds, fails for good, or the retries run out."""
        method = method.upper()
        attempt = 0
        while True:
            try:
                return attempt_once()
            except _Transient as failure:
                if failure.exc is not None:
                    if not self._may_retry_transport(method, failure.exc, attempt):
                        raise self._transport_error(method, path, failure.exc) from failure.exc
                    reason = type(failure.exc).__name__
                else:
                    assert failure.status is not None
                    if not self._may_retry_status(method, failure.status, attempt):
                        raise self.status_error(method, path, failure.status) from None
                    reason = f"HTTP {failure.status}"
                self._sleep(method, path, attempt, reason, failure.retry_after)
                attempt += 1

    # retry policy -------------------------------------------------------------------------
    def _may_retry_transport(self, method: str, exc: httpx.TransportError, attempt: int) -> bool:
        """Retry connection failures always, other transport errors only when idempotent."""
        if attempt >= self.retries:
            return False
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            return True
        return method in IDEMPOTENT

    def _may_retry_status(self, method: str, status: int, attempt: int) -> bool:
        """Retry 429/502/503/504 (only 429/503 for non-idempotent methods)."""
        if attempt >= self.retries:
            return False
        allowed = RETRY_STATUSES if method in IDEMPOTENT else SAFE_RETRY_STATUSES_NON_IDEMPOTENT
        return status in allowed

    def _sleep(
        self, method: str, path: str, attempt: int, reason: str, retry_after: str | None
    ) -> None:
        """Wait before the next attempt: exponential backoff with jitter, or Retry-After."""
        delay = min(MAX_BACKOFF_SECONDS, self.backoff * (2**attempt))
        delay *= 0.5 + random.random() / 2
        if retry_after and retry_after.strip().isdigit():
            delay = min(MAX_BACKOFF_SECONDS, float(retry_after))
        log.warning(
            "%s: %s %s failed (%s); retry %d/%d in %.2f s",
            self.service,
            method,
            path_only(path),
            reason,
            attempt + 1,
            self.retries,
            delay,
        )
        time.sleep(delay)

    # errors ---------------------------------------------------------------------------------
    def status_error(self, method: str, path: str, status: int) -> DomainError:
        """Turn an HTTP error status into a readable domain error."""
        where = f"{method} {path_only(path)}"
        if status in (401, 403):
            return Forbidden(
                f"{self.service}: access denied (HTTP {status}) for {where}; "
                "the credentials are missing, expired or do not grant access"
            )
        if status == 404:
            return NotFound(f"{self.service}: not found (HTTP 404) for {where}")
        return UpstreamError(f"{self.service} answered HTTP {status} for {where}")

    def _transport_error(self, method: str, path: str, exc: httpx.TransportError) -> DomainError:
        """Turn a network failure into a readable UpstreamError."""
        where = f"{method} {path_only(path)}"
        if isinstance(exc, httpx.TimeoutException):
            message = f"{self.service} did not answer within {self.timeout:g} s ({where})"
        elif isinstance(exc, httpx.ConnectError):
            message = f"{self.service} is unreachable ({where})"
        else:
            message = f"{self.service}: connection failed ({type(exc).__name__}) during {where}"
        return UpstreamError(message)


class _Transient(Exception):
    """One failed attempt: a transport error, or an HTTP error status."""

    def __init__(
        self,
        exc: httpx.TransportError | None,
        status: int | None = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(status)
        self.exc = exc
        self.status = status
        self.retry_after = retry_after


def query_string(params: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> str:
    """Encode query parameters, escaping only what would break the URL.

    Orthanc's DICOMweb plugin does not percent-decode query values, so QIDO wildcards and
    UID lists (`PatientID=STS_0*`, `StudyInstanceUID=1.2,1.3`) must travel as they are.
    """
    pairs = params.items() if isinstance(params, Mapping) else params
    parts = []
    for key, value in pairs:
        for item in value if isinstance(value, list | tuple) else [value]:
            parts.append(f"{quote(str(key), safe=QUERY_SAFE)}={quote(str(item), safe=QUERY_SAFE)}")
    return "&".join(parts)


def path_only(path: str) -> str:
    """Strip the scheme, host and query from a URL so messages show only its path."""
    if "://" in path:
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    return path.split("?", 1)[0]
