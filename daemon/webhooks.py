"""Webhook intake: change notifications that name keys to reconcile, never the decision.

`POST /webhooks/{binding}` (external side) and `POST /webhooks/{binding}/app` (app side).
With a secret configured the raw body must carry an HMAC-SHA256 signature
(`sha256=<hex>`, compared in constant time); with a timestamp header the signed text is
`<timestamp>.<body>` and a timestamp outside the tolerance is refused, so a captured
request cannot be replayed later. The answer is 202 as soon as the ids are on the queue:
the reconcile happens later, level-triggered, so duplicate, late or reordered
notifications only cost a little work.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from connectors.base import RecordId
from connectors.values import bad_text
from daemon.jsonbody import load_json
from reconcilers.controller import Controller
from reconcilers.model import Side

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class WebhookSpec:
    secret: str | None = None
    signature_header: str = "X-Tandem-Signature"
    ids: str = "id"
    timestamp_header: str | None = None
    tolerance: float = 300.0
    max_body: int = 1_048_576
    max_ids: int = 100
    """A notification naming more ids than this is taken as "this side changed": one look
    at its changes (the feed, or a resync) instead of a read per id, so one request cannot
    cause thousands of upstream requests."""


def sign(secret: str, body: bytes, *, timestamp: str | None = None) -> str:
    """The signature header value for `body` (what a sender computes)."""
    signed = f"{timestamp}.".encode() + body if timestamp is not None else body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify(spec: WebhookSpec, body: bytes, headers: Any, *, now: float) -> str | None:
    """None when the request is authentic; otherwise why it is not (no secret in it)."""
    if spec.secret is None:
        return None
    timestamp = None
    if spec.timestamp_header is not None:
        timestamp = headers.get(spec.timestamp_header)
        try:
            age = abs(now - float(timestamp))
        except (TypeError, ValueError):
            return f"missing or malformed {spec.timestamp_header}"
        if not math.isfinite(age):  # "nan" and "inf" parse as floats but name no time
            return f"missing or malformed {spec.timestamp_header}"
        if age > spec.tolerance:
            return f"{spec.timestamp_header} outside the tolerance"
    given = headers.get(spec.signature_header) or ""
    if not hmac.compare_digest(given.encode(), sign(spec.secret, body, timestamp=timestamp).encode()):
        return f"bad or missing {spec.signature_header}"
    return None


def ids_in(payload: Any, path: str) -> list[RecordId] | None:
    """The ids a notification names (one or a list at a dotted path); None: it names none."""
    value = payload
    for part in path.split(".") if path else ():
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    return [
        RecordId(str(v))
        for v in values
        if isinstance(v, str | int) and not isinstance(v, bool) and v != "" and not (isinstance(v, str) and bad_text(v))
    ]


class WebhookIntake:
    def __init__(
        self,
        controllers: dict[str, Controller],
        specs: dict[tuple[str, Side], WebhookSpec],
        registry: CollectorRegistry,
    ) -> None:
        self._controllers = controllers
        self._specs = specs
        self._counter = Counter(
            "tandem_webhooks_total",
            "Webhook requests by outcome.",
            ["binding", "side", "result"],
            registry=registry,
        )

    async def external(self, request: Request) -> Response:
        return await self._receive(request, Side.EXTERNAL)

    async def app(self, request: Request) -> Response:
        return await self._receive(request, Side.APP)

    async def _receive(self, request: Request, side: Side) -> Response:
        name = request.path_params["name"]
        controller = self._controllers.get(name)
        if controller is None:
            return self._answer("(unknown)", side, "unknown_binding", 404, "no such binding")
        spec = self._specs.get((name, side), WebhookSpec())
        body, read_whole = await _read_capped(request, spec.max_body)
        if body is None:
            answer = self._answer(name, side, "too_large", 413, f"body over {spec.max_body} bytes")
            if not read_whole:  # the rest of the body was never read: the connection is unusable
                answer.headers["Connection"] = "close"
            return answer
        problem = verify(spec, body, request.headers, now=time.time())
        if problem is not None:
            return self._answer(name, side, "unauthorized", 401, problem)
        try:
            payload = load_json(body) if body.strip() else {}
        except ValueError as exc:
            return self._answer(name, side, "invalid", 400, f"body is not usable JSON: {exc}")
        ids = ids_in(payload, spec.ids)
        if ids is not None and len(ids) > spec.max_ids:
            log.warning("webhook.too_many_ids", binding=name, side=side.value, ids=len(ids), max_ids=spec.max_ids)
            ids = None
        if ids is None:
            controller.poke(side)  # names nothing (or too much): look at that side's changes now
        else:
            for record_id in ids:
                controller.enqueue((side, record_id))
        return self._answer(name, side, "accepted", 202, None, accepted=len(ids or ()))

    def _answer(
        self, binding: str, side: Side, result: str, status: int, error: str | None, *, accepted: int = 0
    ) -> Response:
        self._counter.labels(binding, side.value, result).inc()
        if error is None:
            log.debug("webhook.accepted", binding=binding, side=side.value, ids=accepted)
            return JSONResponse({"accepted": accepted}, status_code=status)
        log.warning("webhook.refused", binding=binding, side=side.value, result=result, error=error)
        return JSONResponse({"error": error}, status_code=status)


DRAIN_LIMIT = 16 * 1_048_576
"""How much of a body over `max_body` is read and thrown away so that its sender, still
writing, reads the 413 rather than a broken pipe (and gives up instead of retrying)."""


async def _read_capped(request: Request, limit: int) -> tuple[bytes | None, bool]:
    """The body, or None once it is longer than `limit`, and whether it was read to its end:
    the rest of a body too long is drained up to DRAIN_LIMIT, and not read past it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + DRAIN_LIMIT:
        return None, False
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit + DRAIN_LIMIT:
            return None, False
        if size <= limit:
            chunks.append(chunk)
    return (None if size > limit else b"".join(chunks)), True
