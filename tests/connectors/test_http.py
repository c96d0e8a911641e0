"""The HTTP client's pools over real loopback HTTP."""

from __future__ import annotations

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from connectors.http import HttpClient, HttpSettings
from tests.support.servers import serving

pytestmark = pytest.mark.anyio


def _holding_app(released: anyio.Event, held: anyio.Event) -> Starlette:
    async def hold(request: Request) -> JSONResponse:
        held.set()
        await released.wait()
        return JSONResponse({"held": True})

    async def quick(request: Request) -> JSONResponse:
        return JSONResponse({"port": request.client.port if request.client else None})

    return Starlette(routes=[Route("/hold", hold), Route("/quick", quick)])


async def test_a_request_never_queues_behind_another_while_a_pool_is_idle():
    """With room for 3 in flight and one held by the server, each further request takes
    a pool no request is using: were pools taken in turn, one would land behind the held
    request and wait for it."""
    released, held = anyio.Event(), anyio.Event()
    async with serving(_holding_app(released, held)) as url:
        client = HttpClient("api", HttpSettings(base_url=url, concurrency=3, retries=0))
        await client.open()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.request, "GET", "/hold")
                await held.wait()
                ports = set()
                with anyio.fail_after(10):
                    for _ in range(6):
                        ports.add((await client.request("GET", "/quick")).json()["port"])
                released.set()
        finally:
            await client.aclose()
    assert len(ports) == 1  # one idle pool kept its connection for them all


async def test_past_its_concurrency_a_connection_shares_its_pools_and_every_request_completes():
    released, held = anyio.Event(), anyio.Event()
    async with serving(_holding_app(released, held)) as url:
        client = HttpClient("api", HttpSettings(base_url=url, concurrency=2, retries=0))
        await client.open()
        answers: list[int] = []

        async def quick() -> None:
            answers.append((await client.request("GET", "/quick")).status_code)

        try:
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    for _ in range(2):
                        tg.start_soon(client.request, "GET", "/hold")
                    await held.wait()
                    for _ in range(3):
                        tg.start_soon(quick)
                    await anyio.wait_all_tasks_blocked()
                    assert answers == []  # both pools hold a request: the three wait in them
                    released.set()
        finally:
            await client.aclose()
    assert answers == [200, 200, 200]
