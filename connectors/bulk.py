"""Group commit: writes that arrive while one is in flight go out together as one request.

The first writer sends at once, alone, so a quiet binding waits for nothing. Writers
that arrive meanwhile queue up, and the writer in flight sends them all as the next
batch when its own request returns: under load (an initial sync with many workers)
batches grow by themselves, with no timer and no task of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from connectors.base import PermanentError, TransientError

Doc = dict[str, Any]
Send = Callable[[Sequence[Doc]], Awaitable[Sequence[Doc]]]
"""Writes a batch; returns one result per document, in the same order."""


@dataclass(slots=True)
class _Slot:
    doc: Doc
    done: anyio.Event = field(default_factory=anyio.Event)
    result: Doc | None = None
    error: BaseException | None = None

    def settle(self, *, result: Doc | None = None, error: BaseException | None = None) -> None:
        if not self.done.is_set():
            self.result, self.error = result, error
            self.done.set()


class GroupCommit:
    def __init__(self, send: Send, *, limit: int) -> None:
        self._send = send
        self._limit = max(1, limit)
        self._queue: list[_Slot] = []
        self._sending = False
        self.batches = 0  # how many requests went out (for tests and benchmarks)

    async def write(self, doc: Doc) -> Doc:
        slot = _Slot(doc)
        self._queue.append(slot)
        if not self._sending:
            await self._lead()
        await slot.done.wait()
        if slot.error is not None:
            raise slot.error
        assert slot.result is not None
        return slot.result

    async def _lead(self) -> None:
        self._sending = True
        batch: list[_Slot] = []
        try:
            while self._queue:
                batch, self._queue = self._queue[: self._limit], self._queue[self._limit :]
                await self._flush(batch)
        finally:
            self._sending = False
            # Cancelled mid-request: the outcome of the batch is unknown, and nobody is
            # left to send the queue. Both hear it, and their callers look again.
            stranded = [slot for slot in batch if not slot.done.is_set()] + self._queue
            self._queue = []
            for slot in stranded:
                slot.settle(error=TransientError("a batched write was interrupted; its outcome is unknown"))

    async def _flush(self, batch: list[_Slot]) -> None:
        self.batches += 1
        try:
            results = await self._send([slot.doc for slot in batch])
        except PermanentError as exc:
            if len(batch) == 1:
                batch[0].settle(error=exc)
                return
            # Refused as a whole (too large, one malformed document): one at a time, so
            # only the document at fault fails.
            for slot in batch:
                await self._flush([slot])
            return
        except Exception as exc:
            for slot in batch:
                slot.settle(error=exc)
            return
        if len(results) != len(batch):
            error = TransientError(f"a batch of {len(batch)} writes was answered with {len(results)} results")
            for slot in batch:
                slot.settle(error=error)
            return
        for slot, result in zip(batch, results, strict=True):
            slot.settle(result=result)
