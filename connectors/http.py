"""The HTTP machinery every HTTP connector shares.

One httpx client per connection, behind the connection's rate limiter, with retries
and backoff for network faults, 5xx and 429 (honouring `Retry-After`), and every
failure translated into the connector error tree. Error messages carry the method,
the status and the URL path: never headers, query strings or credentials.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from connectors.base import (
    AuthError,
    ConflictError,
    ConnectorError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    RequestInfo,
    RequestObserver,
    TransientError,
    ignore_request,
)
from connectors.ratelimit import RateLimiter
from connectors.secrets import Masker, header_secrets
from connectors.values import loads_deep

log = structlog.get_logger(__name__)

MAX_INLINE_WAIT = 10.0
"""A Retry-After longer than this is not slept through inside one request: the key is
requeued for later instead, so a worker is not held for minutes."""


WHOLE_REQUEST = 3.0
"""A request's whole exchange may take this many times the connection's `timeout`."""

MAX_PAUSE = 600.0
"""The longest pause a server's `backoff_header` or `Retry-After` can impose on a
connection: a bogus value (`inf`, `1e300`, a date in the year 9999) would otherwise stop
every request of the connection for good while its probes say healthy."""


@dataclass(frozen=True, slots=True)
class HttpSettings:
    base_url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 10.0
    retries: int = 3
    rate_limit: float | None = None
    backoff_base: float = 0.1
    backoff_cap: float = 5.0
    concurrency: int = 8
    """How many requests may be in flight at once (the binding's workers)."""
    backoff_header: str | None = None
    """A header by which the server asks clients to slow down for so many seconds even on
    success (Kinto's `Backoff`): honoured like a `Retry-After` for the whole connection."""
    max_pause: float = MAX_PAUSE
    """The most a `Retry-After` or `backoff_header` may pause the connection, in seconds."""


def retry_after_seconds(response: httpx.Response, *, now: float | None = None) -> float | None:
    """What the server's `Retry-After` asks for in seconds from now (delta-seconds or an
    HTTP date), uncapped; None where it says nothing usable (absent, garbled, NaN)."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - (now if now is not None else time.time())
        except (TypeError, ValueError, OverflowError):
            return None
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def json_body(response: httpx.Response, label: str) -> Any:
    """The response's JSON; a garbled body is a fault on the way, worth another try. A body
    nested deeper than `json.loads` can read is read all the same, so that only the
    records too deep to take are refused, each on its own."""
    try:
        return response.json()
    except RecursionError:
        return loads_deep(response.content)
    except ValueError as exc:
        path = response.request.url.path
        raise TransientError(f"{label}: invalid JSON from {response.request.method} {path}") from exc


def json_object(response: httpx.Response, label: str) -> dict[str, Any]:
    """The response's JSON, which must be an object."""
    body = json_body(response, label)
    if not isinstance(body, dict):
        raise TransientError(f"{label}: expected a JSON object from {response.request.url.path}")
    return body


def is_scalar(value: Any) -> bool:
    """Whether a value can go into a query string as a filter."""
    return value is None or isinstance(value, str | int | float | bool)


def describe(response: httpx.Response, masker: Masker) -> str:
    """A short, secret-free excerpt of an error body, to say why a record was refused.
    Masked before it is cut, so a secret at the cut is not left half shown."""
    text = masker.mask(response.text.strip().replace("\n", " "))
    return f": {text[:200]}" if text else ""


class HttpClient:
    def __init__(
        self,
        name: str,
        settings: HttpSettings,
        *,
        observer: RequestObserver = ignore_request,
    ) -> None:
        self.name = name
        self.settings = settings
        self._observer = observer
        self._limiter = RateLimiter(settings.rate_limit)
        self._clients: list[httpx.AsyncClient] = []
        self._idle: list[httpx.AsyncClient] = []  # pools no request of ours is using
        self._turn = itertools.count()
        self._origin = urlsplit(settings.base_url)[:2]
        self.masker = Masker(header_secrets(settings.headers))
        """Masks the connection's credentials in any text that came back from the server."""

    async def open(self) -> None:
        if self._clients:
            return
        # A pool of one connection per request the connection may have in flight. One
        # shared pool slows down as requests in flight grow (each request scans all its
        # connections, a socket call apiece), and pools shared in turn queue a request
        # behind another while a third pool idles (bench/RESULTS.md has the measurements).
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        # One TLS context for all the pools: each loads the CA bundle, about 1 MB apiece.
        # A plain-HTTP server needs none: its context has no CA at all (loading the bundle
        # costs start-up 20 ms), so a TLS connection could never be trusted with it.
        https = self._origin[0] == "https"
        tls = httpx.create_ssl_context() if https else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._clients = [
            httpx.AsyncClient(
                base_url=self.settings.base_url.rstrip("/") + "/",
                headers=dict(self.settings.headers),
                timeout=self.settings.timeout,
                follow_redirects=False,
                limits=limits,
                verify=tls,
            )
            for _ in range(max(1, self.settings.concurrency))
        ]
        self._idle = list(self._clients)

    async def aclose(self) -> None:
        clients, self._clients, self._idle = self._clients, [], []
        for client in clients:
            await client.aclose()

    def same_origin(self, url: str) -> bool:
        """Whether `url` points at this connection's server (credentials go nowhere else)."""
        return urlsplit(url)[:2] == self._origin

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        allow_not_found: bool = False,
        idempotent: bool | None = None,
    ) -> httpx.Response:
        """Send with retries; 2xx (and 404 where allowed) come back, the rest raise.

        A POST is not idempotent: after a timeout or a 5xx the server may have created the
        record all the same, so only a 429 (refused before any work) is retried here. The
        caller settles anything else by lookup (the write intent), never by sending again.
        A caller that knows its POST is safe to repeat says so with `idempotent`."""
        if idempotent is None:
            idempotent = method.upper() != "POST"
        retryable = _worth_retrying if idempotent else _refused
        send = partial(
            self._once, method, url, params=params, json=json, headers=headers, allow_not_found=allow_not_found
        )
        # The first attempt goes without the retry machinery: setting it up costs more
        # than the rest of a request's own work, and most requests need no second try.
        try:
            return await send()
        except ConnectorError as exc:
            if not (self.settings.retries and retryable(exc)):
                raise
            await anyio.sleep(self._delay(exc, attempt=1))
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.retries),
            wait=self._tenacity_wait,
            retry=retry_if_exception(retryable),
            sleep=anyio.sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await send()
        raise AssertionError("unreachable")  # pragma: no cover

    def _tenacity_wait(self, state: RetryCallState) -> float:
        # Its attempts are the second and later: the first went before it.
        return self._delay(state.outcome.exception() if state.outcome else None, state.attempt_number + 1)

    def _delay(self, exc: BaseException | None, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (from 1)."""
        backoff = min(self.settings.backoff_cap, self.settings.backoff_base * 2.0 ** (attempt - 1))
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            return max(backoff, exc.retry_after)
        return backoff

    async def _once(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None,
        json: Any,
        headers: Mapping[str, str] | None,
        allow_not_found: bool,
    ) -> httpx.Response:
        if not self._clients:
            raise ConnectorError(f"{self.name}: connection is not open")
        # An idle pool if there is one; past `concurrency` in flight, requests share the
        # pools in turn and queue inside them.
        borrowed = self._idle.pop() if self._idle else None
        client = borrowed if borrowed is not None else self._clients[next(self._turn) % len(self._clients)]
        try:
            await self._limiter.acquire()
            started = time.perf_counter()
            path = urlsplit(url).path or url
            try:
                # httpx's timeout bounds each read, so a server trickling a byte at a time
                # never trips it: the whole exchange has a deadline of its own as well.
                with anyio.fail_after(self.settings.timeout * WHOLE_REQUEST):
                    response = await client.request(method, url, params=params, json=json, headers=headers)
            except (httpx.TimeoutException, TimeoutError) as exc:
                self._observe(method, "timeout", started)
                raise TransientError(f"{self.name}: timeout on {method} {path}") from exc
            except httpx.TransportError as exc:
                self._observe(method, "error", started)
                raise TransientError(f"{self.name}: {type(exc).__name__} on {method} {path}") from exc
        finally:
            if borrowed is not None and borrowed in self._clients:  # not closed meanwhile
                self._idle.append(borrowed)
        self._observe(method, str(response.status_code), started)
        self._honour_backoff(response)
        return self._check(response, method=method, path=path, allow_not_found=allow_not_found)

    def _check(self, response: httpx.Response, *, method: str, path: str, allow_not_found: bool) -> httpx.Response:
        status = response.status_code
        if 200 <= status < 300 or (status == 404 and allow_not_found):
            return response
        message = f"{self.name}: HTTP {status} {method} {path}"
        if status == 429:
            wait = self._retry_after(response, method=method, path=path)
            self._limiter.pause(wait if wait is not None else self.settings.backoff_base)
            if wait is not None and wait > MAX_INLINE_WAIT:
                # Give the worker back; the key is requeued after the server's delay.
                raise _NoInlineRetry(message, retry_after=wait)
            raise RateLimitedError(message, retry_after=wait)
        if status >= 500 or status == 408:
            raise TransientError(message, retry_after=self._retry_after(response, method=method, path=path))
        if status == 404:
            raise NotFoundError(message + describe(response, self.masker))
        if status in (401, 403):
            raise AuthError(message + describe(response, self.masker))
        if status in (409, 412):
            raise ConflictError(message + describe(response, self.masker))
        raise PermanentError(message + describe(response, self.masker))

    def _retry_after(self, response: httpx.Response, *, method: str, path: str) -> float | None:
        asked = retry_after_seconds(response)
        cap = self.settings.max_pause
        if asked is not None and asked > cap:
            log.warning(
                "http.retry_after_capped", connection=self.name, method=method, path=path,
                asked=response.headers.get("Retry-After", "")[:40], waiting=cap,
            )  # fmt: skip
        return None if asked is None else min(asked, cap)

    def _honour_backoff(self, response: httpx.Response) -> None:
        name = self.settings.backoff_header
        value = response.headers.get(name) if name else None
        if value is None:
            return
        with contextlib.suppress(ValueError):  # not a number of seconds: nothing to honour
            seconds = float(value)
            if not math.isnan(seconds):
                self._limiter.pause(min(max(0.0, seconds), self.settings.max_pause))

    def _observe(self, method: str, code: str, started: float) -> None:
        self._observer(RequestInfo(self.name, method, code, time.perf_counter() - started))


class _NoInlineRetry(RateLimitedError):
    """A rate limit too long to wait out inside one request."""


def _worth_retrying(exc: BaseException) -> bool:
    # A conflict is answered the same way however often it is asked: the caller re-plans.
    return isinstance(exc, TransientError) and not isinstance(exc, _NoInlineRetry | ConflictError)


def _refused(exc: BaseException) -> bool:
    return isinstance(exc, RateLimitedError) and not isinstance(exc, _NoInlineRetry)
