"""Real servers on loopback for the tests: the sample app in-process or as a process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
from starlette.applications import Starlette

from daemon.http import serve
from daemon.listen import bind
from examples.sample_app import Options, build_app

ROOT = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[str]:
    """Serve an ASGI app on 127.0.0.1 (a free port) inside the test's event loop."""
    sock = bind("127.0.0.1:0", "127.0.0.1", 0)
    port = sock.getsockname()[1]
    try:
        async with anyio.create_task_group() as tg:
            server = await tg.start(serve, app, sock)
            yield f"http://127.0.0.1:{port}"
            server.should_exit = True
    finally:
        sock.close()


@asynccontextmanager
async def sample_app(**options: Any) -> AsyncIterator[str]:
    async with serving(build_app(Options(**options))) as url:
        yield url


@contextmanager
def sample_app_process(*args: str) -> Iterator[str]:
    """The sample app as its own process (for end-to-end tests); stopped afterwards."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "sample_app.py"), "--port", "0", *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.search(r"listening on ([\d.]+):(\d+)", line)
        assert found, f"sample app did not start: {line!r}"
        yield f"http://{found.group(1)}:{found.group(2)}"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def inject(url: str, **fault: Any) -> None:
    async with httpx.AsyncClient() as client:
        (await client.post(f"{url}/_admin/faults", json=fault)).raise_for_status()


async def request_counts(url: str) -> dict[str, int]:
    async with httpx.AsyncClient() as client:
        counts: dict[str, int] = (await client.get(f"{url}/_admin/stats")).json()["requests"]
        return counts


async def seed(url: str, collection: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.post(f"{url}/_admin/seed/{collection}", json=records)
        response.raise_for_status()
        created: list[dict[str, Any]] = response.json()
        return created
