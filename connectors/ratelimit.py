"""A per-connection token bucket, and a shared pause for `Retry-After`.

Requests are spaced evenly at `rate` per second (a bucket of one token), so no
window of a second ever holds more than `rate` requests. A 429 pauses every
request of the connection until the server's `Retry-After` has passed, not only
the one that was refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio


class RateLimiter:
    def __init__(
        self,
        rate: float | None,
        *,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive")
        self._rate = rate
        self._capacity = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._updated: float | None = None
        self._paused_until = 0.0
        self._lock = anyio.Lock()

    @property
    def rate(self) -> float | None:
        return self._rate

    def pause(self, seconds: float) -> None:
        """Hold every request until `seconds` from now (never shortens a pause)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    async def acquire(self) -> None:
        if self._rate is None and self._clock() >= self._paused_until:
            return  # nothing to wait for: no lock (it costs as much as a small request)
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._paused_until:
                    await anyio.sleep(self._paused_until - now)
                    continue
                if self._rate is None:
                    return
                if self._updated is not None:
                    elapsed = now - self._updated
                    self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await anyio.sleep((1 - self._tokens) / self._rate)
