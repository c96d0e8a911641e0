"""A keyed work queue with client-go's promises.

Fair: keys come out first in, first out. Stingy: a key added many times before it
is taken is processed once; a key is never handed to two workers at once; a key
added while it is being processed is handed out once more after `done`. Failing
keys come back after a per-key exponential backoff (5 ms doubling, capped), which
`forget` resets. The clock is injected, so tests move time by hand.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import anyio

K = TypeVar("K", bound=Hashable)


class QueueObserver(Protocol):
    def added(self) -> None: ...
    def retried(self) -> None: ...
    def depth(self, depth: int) -> None: ...
    def waited(self, seconds: float) -> None: ...
    def worked(self, seconds: float) -> None: ...
    def worked_many(self, seconds: Sequence[float]) -> None: ...


class _Quiet:
    def added(self) -> None: ...
    def retried(self) -> None: ...
    def depth(self, depth: int) -> None: ...
    def waited(self, seconds: float) -> None: ...
    def worked(self, seconds: float) -> None: ...
    def worked_many(self, seconds: Sequence[float]) -> None: ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """Per-key exponential backoff: `base` doubling per failure, capped at `cap` seconds."""

    base: float = 0.005
    cap: float = 300.0

    def delay(self, failures: int) -> float:
        return min(self.cap, self.base * 2.0 ** min(failures, 64))


class WorkQueue(Generic[K]):
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        backoff: Backoff | None = None,
        observer: QueueObserver | None = None,
    ) -> None:
        self._clock = clock
        self._backoff = backoff or Backoff()
        self._observer: QueueObserver = observer or _Quiet()
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: dict[K, float] = {}
        self._added_at: dict[K, float] = {}
        self._failures: dict[K, int] = {}
        self._delayed: list[tuple[float, int, K]] = []
        self._delayed_keys: dict[K, float] = {}
        self._sequence = itertools.count()
        self._shutting_down = False
        self._wakeup = anyio.Event()
        self._delay_changed = anyio.Event()

    # --- intake ------------------------------------------------------------------

    def add(self, key: K) -> None:
        if self._shutting_down or key in self._dirty:
            return
        self._observer.added()
        self._dirty.add(key)
        self._added_at.setdefault(key, self._clock())
        if key in self._processing:
            return  # handed out again by `done`
        self._queue.append(key)
        self._observer.depth(len(self._queue))
        self._wake()

    def add_after(self, key: K, delay: float) -> None:
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        ready_at = self._clock() + delay
        earlier = self._delayed_keys.get(key)
        if earlier is not None and earlier <= ready_at:
            return  # already due sooner
        self._delayed_keys[key] = ready_at
        heapq.heappush(self._delayed, (ready_at, next(self._sequence), key))
        self._delay_changed.set()

    def add_rate_limited(self, key: K, *, at_least: float = 0.0) -> float:
        """Requeue a failed key after its backoff (or `at_least`, if longer)."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        self._observer.retried()
        delay = max(self._backoff.delay(failures), at_least)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        return self._failures.get(key, 0)

    # --- hand-out ----------------------------------------------------------------

    async def get(self) -> K | None:
        """The next key, marked as processing; None once the queue is shut down."""
        while True:
            while not self._queue:
                if self._shutting_down:
                    return None
                await self._wakeup.wait()
            key = self._queue.popleft()
            self._observer.depth(len(self._queue))
            if key in self._dirty and key not in self._processing:
                break
            # The place of a key a batch claimed: `done` queues it again if it was re-added.
        now = self._clock()
        self._observer.waited(now - self._added_at.pop(key, now))
        self._processing[key] = now
        self._dirty.discard(key)
        return key

    def claim(self, key: K) -> bool:
        """Mark a key as processing outside `get` (a batch takes it), unless a worker has
        it in hand; `done` releases it as for any key. A queued key is taken off the queue
        (its place there is skipped: only keys marked dirty are handed out)."""
        if self._shutting_down or key in self._processing:
            return False
        self._dirty.discard(key)
        self._added_at.pop(key, None)
        self._processing[key] = self._clock()
        return True

    def done(self, key: K) -> None:
        started = self._processing.pop(key, None)
        if started is not None:
            self._observer.worked(self._clock() - started)
        self._hand_out_again(key)

    def done_many(self, keys: Iterable[K]) -> None:
        """`done` for each key (a batch's page of them), their times observed together:
        one observation at a time costs about three times the release itself."""
        now = self._clock()
        worked: list[float] = []
        for key in keys:
            started = self._processing.pop(key, None)
            if started is not None:
                worked.append(now - started)
            self._hand_out_again(key)
        if worked:
            self._observer.worked_many(worked)

    def _hand_out_again(self, key: K) -> None:
        """A key added while it was processed goes back on the queue."""
        if key in self._dirty and not self._shutting_down:
            self._queue.append(key)
            self._observer.depth(len(self._queue))
            self._wake()

    def shut_down(self) -> None:
        """Take no more keys; workers waiting in `get` receive None."""
        self._shutting_down = True
        self._queue.clear()
        self._dirty.clear()
        self._delayed.clear()
        self._delayed_keys.clear()
        self._observer.depth(0)
        self._wake()
        self._delay_changed.set()

    # --- delayed keys ------------------------------------------------------------

    def pump(self) -> float | None:
        """Move due delayed keys onto the queue; seconds until the next one is due."""
        now = self._clock()
        while self._delayed:
            ready_at, _, key = self._delayed[0]
            if self._delayed_keys.get(key) != ready_at:
                heapq.heappop(self._delayed)  # superseded by an earlier add_after
                continue
            if ready_at > now:
                return ready_at - now
            heapq.heappop(self._delayed)
            del self._delayed_keys[key]
            self.add(key)
        return None

    async def run_delays(self) -> None:
        """Feed delayed keys in as they come due, until shut down."""
        while not self._shutting_down:
            wait = self.pump()
            self._delay_changed = anyio.Event()
            with anyio.move_on_after(wait if wait is not None else float("inf")):
                await self._delay_changed.wait()

    # --- introspection -----------------------------------------------------------

    def __len__(self) -> int:
        return len(self._queue)

    def unfinished_seconds(self) -> tuple[float, float]:
        """Total and longest time the keys now being processed have been running."""
        now = self._clock()
        spans = [now - started for started in self._processing.values()]
        return sum(spans), max(spans, default=0.0)

    def _wake(self) -> None:
        self._wakeup.set()
        self._wakeup = anyio.Event()
