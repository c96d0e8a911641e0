"""Delivery of the outbox: signed change notifications POSTed to the app.

Events are written to the outbox in the state database by the binding's workers, so
they survive a restart; this task POSTs them in order, signed like incoming webhooks
(`sha256=<hex>` HMAC of the body, plus an `X-Tandem-Event-Id` to deduplicate on), and
deletes each once the app answered 2xx. A failure is retried with backoff (1 s doubling,
capped at 5 minutes) while the sync goes on: delivery never blocks a reconcile.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass

import anyio
import httpx
import structlog
from prometheus_client import Counter, Gauge

from daemon.webhooks import sign
from reconcilers.state import OutboxEntry, StateStore, state_busy

log = structlog.get_logger(__name__)

BATCH = 50
MAX_BACKOFF = 300.0


@dataclass(frozen=True, slots=True)
class NotifySpec:
    url: str
    secret: str | None = None
    signature_header: str = "X-Tandem-Signature"
    timeout: float = 10.0


class Notifier:
    def __init__(self, binding: str, spec: NotifySpec, store: StateStore, *, delivered: Counter, depth: Gauge) -> None:
        self.binding = binding
        self.spec = spec
        self._store = store
        self._wake = anyio.Event()
        self._delivered = delivered
        self._depth = depth.labels(binding)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=self.spec.timeout, follow_redirects=False) as client:
            while True:
                try:
                    wait = await self._round(client)
                except sqlite3.OperationalError as exc:
                    if not state_busy(exc):
                        raise
                    log.warning("notify.state_busy", binding=self.binding, error=str(exc))
                    wait = 1.0
                if wait:
                    with anyio.move_on_after(wait):
                        await self._wake.wait()
                    self._wake = anyio.Event()

    async def _round(self, client: httpx.AsyncClient) -> float:
        """Deliver what is due; return how long to wait before the next round."""
        due = await self._store.due_events(self.binding, now=time.time(), limit=BATCH)
        for entry in due:
            await self._deliver(client, entry)
        self._depth.set(await self._store.outbox_depth(self.binding))
        if len(due) == BATCH:
            return 0.0
        next_at = await self._store.next_event_at(self.binding)
        return max(0.0, next_at - time.time()) if next_at is not None else MAX_BACKOFF

    async def _deliver(self, client: httpx.AsyncClient, entry: OutboxEntry) -> None:
        body = entry.body.encode()
        event_id = json.loads(entry.body).get("id", "")
        headers = {"Content-Type": "application/json", "X-Tandem-Event-Id": event_id}
        if self.spec.secret is not None:
            headers[self.spec.signature_header] = sign(self.spec.secret, body)
        try:
            response = await client.post(self.spec.url, content=body, headers=headers)
            error = None if response.is_success else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        if error is None:
            await self._store.event_delivered(entry.row)
            self._delivered.labels(self.binding, "delivered").inc()
            return
        delay = min(MAX_BACKOFF, 2.0**entry.attempts)
        await self._store.event_failed(entry.row, error=error, next_at=time.time() + delay)
        self._delivered.labels(self.binding, "failed").inc()
        log.warning("notify.failed", binding=self.binding, error=error, attempts=entry.attempts + 1, retry_in_s=delay)
