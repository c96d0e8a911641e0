"""The HTTP client's pools over real loopback HTTP."""

from __future__ import annotations

import anyio
import anyio.abc
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from connectors.base import TransientError
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


async def test_a_response_trickling_a_byte_at_a_time_is_cut_off_at_the_whole_request_deadline():
    async def trickle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
            with anyio.move_on_after(10):
                while True:  # each byte well inside the read timeout, the whole never done
                    await stream.send(b" ")
                    await anyio.sleep(0.1)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, trickle)
        client = HttpClient("slow", HttpSettings(base_url=f"http://127.0.0.1:{port}", timeout=0.4, retries=0))
        await client.open()
        try:
            started = anyio.current_time()
            with pytest.raises(TransientError, match="timeout on GET"):
                await client.request("GET", "tasks")
            assert anyio.current_time() - started < 5
        finally:
            await client.aclose()
            tg.cancel_scope.cancel()
