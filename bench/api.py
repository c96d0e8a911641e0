"""A fast in-memory JSON API for the benchmarks: plain asyncio and httptools, no framework.

It must never be the bottleneck, so it does as little as an HTTP server can: records
live in a dict in insertion order, and every answer is built by hand. `bench/suite.py`
measures its own throughput with a plain client in the same run and prints it.

    GET    /records?limit=N[&cursor=ID][&since=SEQ]   {"data": [...], "next_cursor": ID | null}
    GET    /records/{id}                              the record, or 404
    POST   /records                                   create (the server picks the id) -> 201
    POST   /records/_bulk                             a JSON list of records -> 201, the list with ids
    PATCH  /records/{id}                              merge the body -> 200
    DELETE /records/{id}                              -> 204 (404 if absent)
    POST   /_admin/seed                               a JSON list, stored without counting
    GET    /_admin/stats                              {"requests": {method: count}, "records": n}
    POST   /_admin/reset                              forget everything

Each record carries `id` and `seq`, a counter bumped by every write, so `since=SEQ` lists
what changed after SEQ in write order (the incremental listing).

    python bench/api.py --port 0      # prints "listening on 127.0.0.1:PORT"
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import socket
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httptools


class Store:
    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.order: list[int] = []  # every id ever given, ascending (deleted ones stay)
        self.next_id = 1
        self.seq = 0
        self.requests: Counter[str] = Counter()

    def add(self, fields: dict[str, Any]) -> dict[str, Any]:
        self.seq += 1
        record = {**fields, "id": str(self.next_id), "seq": self.seq}
        self.order.append(self.next_id)
        self.next_id += 1
        self.records[record["id"]] = record
        return record

    def page(self, *, limit: int, cursor: str | None, since: int | None) -> tuple[list[dict[str, Any]], str | None]:
        if since is not None:
            # Changed after `since`, in write order: a scan, cheap at the sizes of a change feed.
            after = int(cursor) if cursor else since
            changed = sorted((r for r in self.records.values() if r["seq"] > after), key=lambda r: r["seq"])
            chunk = changed[:limit]
            return chunk, (str(chunk[-1]["seq"]) if len(changed) > limit else None)
        # Ids are increasing integers: a page starts right after the cursor's id.
        position = bisect.bisect_right(self.order, int(cursor)) if cursor else 0
        chunk: list[dict[str, Any]] = []
        while position < len(self.order) and len(chunk) < limit:
            record = self.records.get(str(self.order[position]))
            position += 1
            if record is not None:
                chunk.append(record)
        return chunk, (chunk[-1]["id"] if chunk and position < len(self.order) else None)


class Handler(asyncio.Protocol):
    def __init__(self, store: Store) -> None:
        self.store = store
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._send(400, b'{"error": "bad request"}')
            assert self.transport is not None
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url, self.body = b"", []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        status, payload = self._route(method, self.url.decode(), b"".join(self.body))
        self._send(status, payload)

    def _route(self, method: str, url: str, body: bytes) -> tuple[int, bytes]:
        store = self.store
        parts = urlsplit(url)
        path = parts.path.rstrip("/")
        if path.startswith("/_admin/"):
            return self._admin(method, path, body)
        store.requests[method] += 1
        if path == "/records" and method == "GET":
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            since = int(query["since"]) if "since" in query else None
            chunk, following = store.page(limit=int(query.get("limit", 100)), cursor=query.get("cursor"), since=since)
            return 200, json.dumps({"data": chunk, "next_cursor": following}).encode()
        if path == "/records" and method == "POST":
            return 201, json.dumps(store.add(json.loads(body))).encode()
        if path == "/records/_bulk" and method == "POST":
            return 201, json.dumps([store.add(item) for item in json.loads(body)]).encode()
        if not path.startswith("/records/"):
            return 404, b'{"error": "not found"}'
        record_id = path.removeprefix("/records/")
        record = store.records.get(record_id)
        if record is None:
            return 404, b'{"error": "not found"}'
        if method == "GET":
            return 200, json.dumps(record).encode()
        if method == "PATCH":
            store.seq += 1
            record.update(json.loads(body))
            record.update(id=record_id, seq=store.seq)
            return 200, json.dumps(record).encode()
        if method == "DELETE":
            del store.records[record_id]
            return 204, b""
        return 405, b'{"error": "method not allowed"}'

    def _admin(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        store = self.store
        if path == "/_admin/seed" and method == "POST":
            for item in json.loads(body):
                store.add(item)
            return 200, json.dumps({"records": len(store.records)}).encode()
        if path == "/_admin/stats":
            return 200, json.dumps({"requests": dict(store.requests), "records": len(store.records)}).encode()
        if path == "/_admin/reset" and method == "POST":
            store.__init__()  # type: ignore[misc]
            return 200, b"{}"
        if path == "/_admin/records":
            return 200, json.dumps(list(store.records.values())).encode()
        return 404, b'{"error": "not found"}'

    def _send(self, status: int, payload: bytes) -> None:
        assert self.transport is not None
        reason = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 404: "Not Found"}.get(status, "")
        head = f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n"
        self.transport.write(head.encode() + payload)


async def main(port: int) -> None:
    store = Store()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Handler(store), "127.0.0.1", port)
    bound = server.sockets[0].getsockname()
    print(f"listening on {bound[0]}:{bound[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(main(parser.parse_args().port))
