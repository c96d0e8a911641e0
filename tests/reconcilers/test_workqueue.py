"""The work queue keeps client-go's promises; time is moved by hand."""

from collections.abc import Sequence

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from reconcilers.workqueue import Backoff, WorkQueue

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_fifo_and_dedup():
    queue: WorkQueue[str] = WorkQueue()
    for key in ("a", "b", "a", "c", "b"):
        queue.add(key)
    assert [await queue.get() for _ in range(3)] == ["a", "b", "c"]
    assert len(queue) == 0


async def test_a_key_is_never_handed_to_two_workers_and_is_processed_again_after():
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    assert await queue.get() == "a"
    queue.add("a")  # changed while being processed
    assert len(queue) == 0  # not handed out while in hand
    queue.done("a")
    assert await queue.get() == "a"


async def test_per_key_backoff_doubles_and_resets_on_forget():
    clock = Clock()
    queue: WorkQueue[str] = WorkQueue(clock=clock, backoff=Backoff(base=0.005, cap=1.0))
    delays = [queue.add_rate_limited("a") for _ in range(10)]
    assert delays[:4] == [0.005, 0.01, 0.02, 0.04]
    assert delays[-1] == 1.0  # capped
    queue.forget("a")
    assert queue.add_rate_limited("a") == 0.005


async def test_delayed_keys_come_due_with_the_clock():
    clock = Clock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add_after("late", 10)
    queue.add_after("soon", 1)
    assert queue.pump() == 1
    clock.now = 1.5
    queue.pump()
    assert await queue.get() == "soon"
    clock.now = 10
    queue.pump()
    assert await queue.get() == "late"


async def test_retry_after_longer_than_backoff_wins():
    clock = Clock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    assert queue.add_rate_limited("a", at_least=30) == 30


async def test_shutdown_releases_waiting_workers():
    queue: WorkQueue[str] = WorkQueue()
    got: list[str | None] = []

    async def worker() -> None:
        got.append(await queue.get())

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker)
        tg.start_soon(worker)
        await wait_all_tasks_blocked()
        queue.shut_down()
    assert got == [None, None]
    queue.add("ignored")
    assert len(queue) == 0


async def test_run_delays_feeds_keys_in_real_time():
    queue: WorkQueue[str] = WorkQueue()
    async with anyio.create_task_group() as tg:
        tg.start_soon(queue.run_delays)
        queue.add_after("a", 0.02)
        with anyio.fail_after(2):
            assert await queue.get() == "a"
        queue.shut_down()


async def test_a_claimed_key_leaves_the_queue_and_comes_back_once_if_added_meanwhile():
    queue: WorkQueue[str] = WorkQueue()
    for key in ("a", "b", "c"):
        queue.add(key)
    assert queue.claim("b")  # a batch takes it off the queue
    assert not queue.claim("b")  # not twice
    queue.add("b")  # reported again while the batch holds it
    assert [await queue.get(), await queue.get()] == ["a", "c"]  # its old place is skipped
    queue.done("b")
    assert await queue.get() == "b"  # once, after the batch let it go
    queue.done("b")
    queue.done("a")
    queue.done("c")
    queue.add("d")
    assert await queue.get() == "d"
    assert not queue.claim("d")  # a worker has it in hand


class Worked:
    """Records the work times the queue observes, one call at a time or many."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.calls = 0

    def added(self) -> None: ...
    def retried(self) -> None: ...
    def depth(self, depth: int) -> None: ...
    def waited(self, seconds: float) -> None: ...

    def worked(self, seconds: float) -> None:
        self.seconds.append(seconds)
        self.calls += 1

    def worked_many(self, seconds: Sequence[float]) -> None:
        self.seconds.extend(seconds)
        self.calls += 1


async def test_keys_a_batch_lets_go_together_are_released_requeued_and_timed_each():
    clock, worked = Clock(), Worked()
    queue: WorkQueue[str] = WorkQueue(clock=clock, observer=worked)
    assert queue.claim("a")
    clock.now = 1.0
    assert queue.claim("b") and queue.claim("c")
    queue.add("b")  # reported again while the batch holds it
    clock.now = 3.0
    queue.done_many(["a", "b", "c", "never-claimed"])
    assert sorted(worked.seconds) == [2.0, 2.0, 3.0]  # each key's own time, in one call
    assert worked.calls == 1
    with anyio.fail_after(2):
        assert await queue.get() == "b"  # once, after the batch let it go
    assert len(queue) == 0
    assert queue.claim("a") and queue.claim("c")  # released
