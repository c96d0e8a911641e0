"""Per-link locks: the two keys of one pair (its app id and its external id) are
different queue keys, so the queue alone would let them reconcile at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio


class PairLocks:
    """One lock per link row, so the two keys of one pair never reconcile at once."""

    def __init__(self) -> None:
        self._locks: dict[int, tuple[anyio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, row: int) -> AsyncIterator[None]:
        lock, users = self._locks.get(row, (anyio.Lock(), 0))
        self._locks[row] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[row]
            if users == 1:
                del self._locks[row]
            else:
                self._locks[row] = (lock, users - 1)
