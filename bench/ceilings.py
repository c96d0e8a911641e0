"""The ceilings: the plainest code that does the same work as tandem, each in its own process.

    python bench/ceilings.py import --url URL --db app.db         page the API, executemany into SQLite
    python bench/ceilings.py import-linked --url URL --db app.db --state state.db
                                                                  the same, keeping a link table as tandem must
    python bench/ceilings.py push --url URL --records N --concurrency C --clients shared|per-worker|bulk
    python bench/ceilings.py capacity --url URL --seconds 3 --connections 8

Each prints one JSON line: what it did, seconds, and its own peak RSS. `capacity` asks the
API with hand-written HTTP over raw sockets (no client library), to show the server's own
limit, far above any client's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sqlite3
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from reconcilers.state import open_state

PAGE = 1000


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def pages(client: httpx.AsyncClient) -> AsyncIterator[list[dict[str, Any]]]:
    """The API's records a page at a time, following its cursor to the end."""
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": PAGE}
        if cursor:
            params["cursor"] = cursor
        body = (await client.get("/records", params=params)).json()
        yield body["data"]
        cursor = body["next_cursor"]
        if not cursor:
            return


def task_rows(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(r["title"], int(bool(r["completed"])), r.get("note")) for r in records]


async def import_ceiling(url: str, db_path: str) -> dict[str, Any]:
    db = sqlite3.connect(db_path)
    started = time.perf_counter()
    count, calls = 0, 0
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        async for records in pages(client):
            calls += 1
            rows = task_rows(records)
            with db:
                db.executemany("INSERT INTO tasks (title, done, note) VALUES (?, ?, ?)", rows)
            count += len(rows)
    seconds = time.perf_counter() - started
    db.close()
    return {"records": count, "seconds": seconds, "api_calls": calls, "peak_rss_mb": peak_rss_mb()}


CANONICAL: dict[str, Any] = {"sort_keys": True, "separators": (",", ":"), "ensure_ascii": False}


async def import_linked_ceiling(url: str, db_path: str, state_path: str) -> dict[str, Any]:
    """The import ceiling plus the least a crash-safe sync must store per page: each
    record's intent (its values, before the create), then the link settled with the new
    id and the values as its base. One thread, one statement per step, nothing else, on
    tandem's own state schema (made by opening it as tandem does, before the clock starts)."""
    async with open_state(state_path):
        pass  # WAL, and the link table with its indexes
    db = sqlite3.connect(db_path)
    state = sqlite3.connect(state_path, isolation_level=None)
    state.execute("PRAGMA synchronous = NORMAL")  # tandem's, set per connection
    started = time.perf_counter()
    count, calls = 0, 0
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        async for records in pages(client):
            calls += 1
            rows = task_rows(records)
            values = [
                json.dumps({"done": bool(r["completed"]), "note": r.get("note"), "title": r["title"]}, **CANONICAL)
                for r in records
            ]
            now = time.time()
            (last,) = state.execute("SELECT COALESCE(MAX(row), 0) FROM links").fetchone()
            state.execute("BEGIN")
            state.executemany(
                "INSERT INTO links (binding, external_id, state, intent_side, intent_values, updated_at)"
                " VALUES ('records', ?, 'pending', 'app', ?, ?)",
                [(str(r["id"]), v, now) for r, v in zip(records, values, strict=True)],
            )
            state.execute("COMMIT")
            with db:
                (found,) = db.execute("SELECT COALESCE(MAX(rowid), 0) FROM tasks").fetchone()
                db.executemany("INSERT INTO tasks (title, done, note) VALUES (?, ?, ?)", rows)
                made = [
                    new_id for (new_id,) in db.execute("SELECT id FROM tasks WHERE rowid > ? ORDER BY rowid", (found,))
                ]
            state.execute("BEGIN")
            state.executemany(
                "UPDATE links SET app_id = ?, state = 'synced', base = intent_values, intent_side = NULL,"
                " intent_values = NULL, synced_at = ?, updated_at = ? WHERE row = ?",
                [(str(new_id), now, now, last + 1 + index) for index, new_id in enumerate(made)],
            )
            state.execute("COMMIT")
            count += len(rows)
    seconds = time.perf_counter() - started
    db.close()
    state.close()
    return {"records": count, "seconds": seconds, "api_calls": calls, "peak_rss_mb": peak_rss_mb()}


async def push_ceiling(url: str, records: int, concurrency: int, clients: str) -> dict[str, Any]:
    bodies = [{"title": f"push {i}", "completed": i % 2 == 0, "note": None} for i in range(records)]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    shared = httpx.AsyncClient(base_url=url, timeout=60, limits=limits)
    calls = 0

    async def worker(first: int) -> None:
        nonlocal calls
        client = httpx.AsyncClient(base_url=url, timeout=60) if clients == "per-worker" else shared
        try:
            if clients == "bulk":
                for start in range(first * PAGE, records, concurrency * PAGE):
                    (await client.post("/records/_bulk", json=bodies[start : start + PAGE])).raise_for_status()
                    calls += 1
                return
            for i in range(first, records, concurrency):
                (await client.post("/records", json=bodies[i])).raise_for_status()
                calls += 1
        finally:
            if client is not shared:
                await client.aclose()

    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    seconds = time.perf_counter() - started
    await shared.aclose()
    return {"records": records, "seconds": seconds, "api_calls": calls, "peak_rss_mb": peak_rss_mb()}


async def capacity(url: str, seconds: float, connections: int) -> dict[str, Any]:
    host, port = url.removeprefix("http://").split(":")
    request = f"GET /records/1 HTTP/1.1\r\nhost: {host}\r\n\r\n".encode()
    done = 0
    deadline = time.perf_counter() + seconds

    async def connection() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(host, int(port))
        while time.perf_counter() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            done += 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    return {"requests": done, "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["import", "import-linked", "push", "capacity"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--db")
    parser.add_argument("--state")
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--clients", choices=["shared", "per-worker", "bulk"], default="shared")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    if args.what == "import":
        result = asyncio.run(import_ceiling(args.url, args.db))
    elif args.what == "import-linked":
        result = asyncio.run(import_linked_ceiling(args.url, args.db, args.state))
    elif args.what == "push":
        result = asyncio.run(push_ceiling(args.url, args.records, args.concurrency, args.clients))
    else:
        result = asyncio.run(capacity(args.url, args.seconds, args.connections))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
