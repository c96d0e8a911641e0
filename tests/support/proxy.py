"""A pass-through HTTP proxy in front of a real server, to time faults exactly.

It forwards every request unchanged (the Host header too, so links the server builds
point back at the proxy) and answers with the server's answer. A test can hook writes:
act before one is forwarded (an edit by someone else between tandem's read and its
write), or forward it and then lose the answer (a crash or a cut connection after the
server acted), which a real server cannot be asked to do on demand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.servers import serving

WRITES = ("PUT", "PATCH", "POST", "DELETE")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


@dataclass(frozen=True, slots=True)
class Seen:
    method: str
    path: str
    body: bytes


Hook = Callable[[Seen], Awaitable[None]]


@dataclass
class Proxy:
    upstream: str
    url: str = ""
    before_write: Hook | None = None
    """Runs before a write is forwarded."""
    after_write: Hook | None = None
    """Runs after a write was forwarded; it may raise `LoseAnswer` to drop the answer."""
    statuses: list[tuple[str, str, int]] = field(default_factory=list)
    """Every request forwarded: method, path with query string, the server's status."""


class LoseAnswer(Exception):
    """Raised by `after_write`: the write happened, but its answer never arrives."""


@asynccontextmanager
async def proxy(upstream: str) -> AsyncIterator[Proxy]:
    state = Proxy(upstream.rstrip("/"))
    async with httpx.AsyncClient(timeout=30) as client:

        async def forward(request: Request) -> Response:
            body = await request.body()
            seen = Seen(request.method, request.url.path, body)
            is_write = request.method in WRITES
            if is_write and state.before_write is not None:
                await state.before_write(seen)
            upstream_url = state.upstream + request.url.path
            headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
            answer = await client.request(
                request.method, upstream_url, params=request.query_params, headers=headers, content=body
            )
            query = f"?{request.url.query}" if request.url.query else ""
            state.statuses.append((request.method, request.url.path + query, answer.status_code))
            if is_write and state.after_write is not None:
                try:
                    await state.after_write(seen)
                except LoseAnswer:
                    return Response(status_code=502, content=b"the answer was lost on the way")
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
            return Response(content=answer.content, status_code=answer.status_code, headers=kept)

        app = Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "HEAD", *WRITES])])
        async with serving(app) as url:
            state.url = url
            yield state
