"""A small external app: a JSON REST API of records, kept in memory.

It serves the demo (`make run`), the tests and the benchmark. It behaves like the
typical APIs tandem meets: any collection at /{name}, server-assigned integer or
string ids, PATCH and PUT, a bulk create (POST /{name}/_bulk, all or none), 404 for
missing records, filters by field (?title=x), an `updated_at` stamp with an
`updated_since` filter, and one of several pagination styles. Faults (429 with
Retry-After, 5xx, stalls) can be switched on through /_admin/faults so tests can watch
a client cope.

    python examples/sample_app.py --port 8080 --pagination page
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

PAGINATION_STYLES = ("none", "page", "offset", "cursor", "cursor-header", "link")


@dataclass
class Fault:
    status: int = 500
    count: int = 1
    retry_after: str | None = None
    delay: float = 0.0
    methods: tuple[str, ...] = ()
    path_prefix: str = ""
    query: str = ""  # a substring the query string must contain ("_page=2")
    unless: str = ""  # a substring the query string must not contain ("title=": not a lookup)
    body: str | None = None
    drop: str = ""  # "before": the connection breaks before the server acts; "after": once it has

    def applies(self, method: str, path: str, query: str) -> bool:
        return (
            (not self.methods or method in self.methods)
            and path.startswith(self.path_prefix)
            and self.query in query
            and not (self.unless and self.unless in query)
        )


class Dropped(Response):
    """A response cut off mid-body: the server closes the connection, the client sees it break."""

    def __init__(self) -> None:
        super().__init__(b"", status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"4096")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"id": ', "more_body": True})
        raise ConnectionAbortedError("injected: connection dropped")


@dataclass
class Options:
    pagination: str = "page"
    envelope: str = ""
    ids: str = "int"
    max_page_size: int = 1000
    required: tuple[str, ...] = ("title",)
    bools: tuple[str, ...] = ("completed",)


@dataclass
class Store:
    options: Options
    collections: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    faults: list[Fault] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)
    last_stamp: float = 0.0
    applied: list[tuple[float, str]] = field(default_factory=list)  # (when, title) of each write
    handling: list[float] = field(default_factory=list)  # seconds spent on each request
    arrivals: list[tuple[float, bool]] = field(default_factory=list)  # (monotonic time, refused by a fault)

    def record_write(self, record: dict[str, Any]) -> None:
        if len(self.applied) < 1_000_000:
            self.applied.append((time.time(), str(record.get("title"))))

    def stamp(self) -> str:
        # Strictly increasing, so `updated_since` never misses a record.
        now = max(time.time(), self.last_stamp + 1e-6)
        self.last_stamp = now
        return datetime.fromtimestamp(now, tz=UTC).isoformat(timespec="microseconds")

    def new_id(self) -> str | int:
        if self.options.ids == "str":
            return f"rec-{uuid.uuid4().hex[:12]}"
        return next(self.counter)


def _matches(record: dict[str, Any], key: str, wanted: str) -> bool:
    value = record.get(key)
    if isinstance(value, bool):
        return wanted.lower() == ("true" if value else "false")
    return value is not None and str(value) == wanted


def _invalid(store: Store, body: Any, *, partial: bool) -> str | None:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    for name in store.options.required:
        if name in body or not partial:
            value = body.get(name)
            if not isinstance(value, str) or not value.strip():
                return f"{name} is required and must be a non-empty string"
    for name in store.options.bools:
        if name in body and body[name] is not None and not isinstance(body[name], bool):
            return f"{name} must be a boolean"
    return None


def build_app(options: Options | None = None) -> Starlette:
    store = Store(options or Options())

    async def guard(request: Request) -> Response | None:
        """Count the request and apply the first matching fault, if any."""
        key = f"{request.method} {request.url.path.split('/')[1] if '/' in request.url.path else ''}"
        store.requests[key] = store.requests.get(key, 0) + 1
        arrived = time.monotonic()
        faulted = next(
            (f for f in store.faults if f.count > 0 and f.applies(request.method, request.url.path, request.url.query)),
            None,
        )
        if len(store.arrivals) < 1_000_000:
            store.arrivals.append((arrived, faulted is not None and faulted.status != 0))
        if faulted is None:
            return None
        faulted.count -= 1
        if faulted.delay:
            await anyio.sleep(faulted.delay)
        if faulted.drop == "before":
            return Dropped()
        if faulted.drop == "after":
            request.state.drop_after = True
            return None
        if faulted.status == 0:
            return None  # a pure delay
        headers = {"Retry-After": faulted.retry_after} if faulted.retry_after else {}
        content = faulted.body if faulted.body is not None else json.dumps({"error": "injected"})
        return Response(content, status_code=faulted.status, headers=headers, media_type="application/json")

    def collection(request: Request) -> dict[str, dict[str, Any]]:
        return store.collections.setdefault(request.path_params["collection"], {})

    async def list_records(request: Request) -> Response:
        if (faulty := await guard(request)) is not None:
            return faulty
        records = list(collection(request).values())
        params = request.query_params
        since = params.get("updated_since")
        if since:
            records = [r for r in records if r.get("updated_at", "") >= since]
        reserved = {"updated_since", "_page", "_limit", "offset", "limit", "cursor", "page"}
        for key, wanted in params.items():
            if key not in reserved and not key.startswith("_"):
                records = [r for r in records if _matches(r, key, wanted)]
        return _page(store, request, records)

    async def create(request: Request) -> Response:
        await request.body()  # read first: a slow create still completes if the client left
        if (faulty := await guard(request)) is not None:
            return faulty
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        problem = _invalid(store, body, partial=False)
        if problem:
            return JSONResponse({"error": problem}, status_code=422)
        return JSONResponse(_wrap(store, add(request, body)), status_code=201)

    async def bulk_create(request: Request) -> Response:
        """A JSON list of records, created all or none: one invalid record refuses the lot."""
        await request.body()
        if (faulty := await guard(request)) is not None:
            return faulty
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        if not isinstance(body, list):
            return JSONResponse({"error": "expected a list of records"}, status_code=400)
        problems = [
            (index, problem) for index, item in enumerate(body) if (problem := _invalid(store, item, partial=False))
        ]
        if problems:
            index, problem = problems[0]
            return JSONResponse({"error": f"record {index}: {problem}"}, status_code=422)
        return JSONResponse([add(request, item) for item in body], status_code=201)

    def add(request: Request, fields: dict[str, Any]) -> dict[str, Any]:
        record = {**fields, "id": store.new_id(), "updated_at": store.stamp()}
        collection(request)[str(record["id"])] = record
        store.record_write(record)
        return record

    async def item(request: Request) -> Response:
        await request.body()
        if (faulty := await guard(request)) is not None:
            return faulty
        records = collection(request)
        key = request.path_params["id"]
        current = records.get(key)
        if request.method == "DELETE":
            if current is None:
                return JSONResponse({"error": "not found"}, status_code=404)
            del records[key]
            return Response(status_code=204)
        if current is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        if request.method == "GET":
            return JSONResponse(_wrap(store, current))
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "invalid JSON"}, status_code=400)
        problem = _invalid(store, body, partial=request.method == "PATCH")
        if problem:
            return JSONResponse({"error": problem}, status_code=422)
        base = current if request.method == "PATCH" else {}
        updated = {**base, **body, "id": current["id"], "updated_at": store.stamp()}
        records[key] = updated
        store.record_write(updated)
        return JSONResponse(_wrap(store, updated))

    async def add_fault(request: Request) -> Response:
        body = await request.json()
        if body.get("drop", "") not in ("", "before", "after"):
            return JSONResponse({"error": "drop must be 'before' or 'after'"}, status_code=400)
        store.faults.append(
            Fault(
                status=int(body.get("status", 500)),
                count=int(body.get("count", 1)),
                retry_after=str(body["retry_after"]) if "retry_after" in body else None,
                delay=float(body.get("delay", 0.0)),
                methods=tuple(body.get("methods", ())),
                path_prefix=str(body.get("path_prefix", "")),
                query=str(body.get("query", "")),
                unless=str(body.get("unless", "")),
                body=body.get("body"),
                drop=str(body.get("drop", "")),
            )
        )
        return JSONResponse({"faults": len(store.faults)}, status_code=201)

    async def stats(request: Request) -> Response:
        return JSONResponse({"requests": store.requests, "arrivals": store.arrivals})

    async def reset(request: Request) -> Response:
        store.faults.clear()
        store.requests.clear()
        store.arrivals.clear()
        if request.query_params.get("data") == "true":
            store.collections.clear()
        return JSONResponse({"ok": True})

    async def applied(request: Request) -> Response:
        """When each write landed, and how long requests took (for latency benchmarks)."""
        answer = {"applied": store.applied, "handling": store.handling}
        store.applied, store.handling = [], []
        return JSONResponse(answer)

    async def direct_list(request: Request) -> Response:
        """Every record, past faults and pagination: a test's own view of the truth."""
        return JSONResponse(list(collection(request).values()))

    async def direct_item(request: Request) -> Response:
        """A change made by someone else than tandem: faults never apply to it."""
        records = collection(request)
        key = request.path_params["id"]
        if key not in records:
            return JSONResponse({"error": "not found"}, status_code=404)
        if request.method == "DELETE":
            del records[key]
            return Response(status_code=204)
        records[key] = {**records[key], **(await request.json()), "updated_at": store.stamp()}
        return JSONResponse(records[key])

    async def seed(request: Request) -> Response:
        """Bulk insert without validation or faults (for tests and benchmarks)."""
        body = await request.json()
        records = collection(request)
        created = []
        for fields in body:
            record = {**fields, "id": store.new_id(), "updated_at": store.stamp()}
            records[str(record["id"])] = record
            created.append(record)
        return JSONResponse(created, status_code=201)

    def timed(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            started = time.perf_counter()
            try:
                response = await handler(request)
                return Dropped() if getattr(request.state, "drop_after", False) else response
            finally:
                if len(store.handling) < 1_000_000:
                    store.handling.append(time.perf_counter() - started)

        return run

    return Starlette(
        routes=[
            Route("/_admin/faults", add_fault, methods=["POST"]),
            Route("/_admin/stats", stats, methods=["GET"]),
            Route("/_admin/reset", reset, methods=["POST"]),
            Route("/_admin/seed/{collection}", seed, methods=["POST"]),
            Route("/_admin/applied", applied, methods=["GET"]),
            Route("/_admin/direct/{collection}", direct_list, methods=["GET"]),
            Route("/_admin/direct/{collection}/{id:path}", direct_item, methods=["PATCH", "DELETE"]),
            Route("/{collection}", timed(list_records), methods=["GET"]),
            Route("/{collection}", timed(create), methods=["POST"]),
            Route("/{collection}/_bulk", timed(bulk_create), methods=["POST"]),
            Route("/{collection}/{id:path}", timed(item), methods=["GET", "PATCH", "PUT", "DELETE"]),
        ]
    )


async def _json_body(request: Request) -> Any:
    """The request's JSON, or the 400 answer to a body that is not JSON."""
    try:
        return await request.json()
    except ValueError:
        return JSONResponse({"error": "invalid JSON"}, status_code=400)


def _wrap(store: Store, record: dict[str, Any]) -> Any:
    return {store.options.envelope: record} if store.options.envelope else record


def _page(store: Store, request: Request, records: list[dict[str, Any]]) -> Response:
    options, params = store.options, request.query_params
    style = options.pagination
    limit = min(int(params.get("_limit") or params.get("limit") or 100), options.max_page_size)
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if style == "none":
        chunk = records
    elif style == "page":
        page = int(params.get("_page") or 1)
        chunk = records[(page - 1) * limit : page * limit]
    elif style == "offset":
        offset = int(params.get("offset") or 0)
        chunk = records[offset : offset + limit]
    else:
        given = params.get("cursor") if style != "link" else params.get("offset")
        if given is not None and not given.isdigit():
            return JSONResponse({"error": "unknown or expired cursor"}, status_code=400)
        start = int(given or 0)
        chunk = records[start : start + limit]
        following = start + limit if start + limit < len(records) else None
        if style == "cursor":
            extra["next_cursor"] = str(following) if following is not None else None
        elif style == "cursor-header" and following is not None:
            headers["X-Next-Cursor"] = str(following)
        elif style == "link" and following is not None:
            url = request.url.include_query_params(offset=following, limit=limit)
            headers["Link"] = f'<{url}>; rel="next"'
    if options.envelope:
        return JSONResponse({options.envelope: chunk, **extra}, headers=headers)
    if extra:
        return JSONResponse({"records": chunk, **extra}, headers=headers)
    return JSONResponse(chunk, headers=headers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--pagination", choices=PAGINATION_STYLES, default="page")
    parser.add_argument("--envelope", default="")
    parser.add_argument("--ids", choices=("int", "str"), default="int")
    args = parser.parse_args()
    app = build_app(Options(pagination=args.pagination, envelope=args.envelope, ids=args.ids))
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    # IPPROTO_TCP explicitly: asyncio disables Nagle only on sockets that declare it.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)  # accept connections as soon as the port is announced
    print(f"listening on {args.host}:{sock.getsockname()[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C in the demo reaches the whole group
        server.run(sockets=[sock])
    sys.exit(0)


if __name__ == "__main__":
    main()
