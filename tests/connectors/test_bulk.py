"""Group commit: batching, a refused batch split up, and a cancelled sender."""

from collections.abc import Sequence

import anyio
import pytest

from connectors.base import PermanentError, TransientError
from connectors.bulk import Doc, GroupCommit

pytestmark = pytest.mark.anyio


async def test_writes_arriving_during_a_send_go_out_together_as_the_next_batch():
    sent: list[list[int]] = []
    release = anyio.Event()

    async def send(docs: Sequence[Doc]) -> Sequence[Doc]:
        sent.append([d["n"] for d in docs])
        if len(sent) == 1:
            await release.wait()
        return [{"ok": True, "n": d["n"]} for d in docs]

    commit = GroupCommit(send, limit=3)
    results: list[int] = []

    async def write(n: int) -> None:
        results.append((await commit.write({"n": n}))["n"])

    async with anyio.create_task_group() as tg:
        for n in range(6):
            tg.start_soon(write, n)
            await anyio.sleep(0)
        release.set()
    assert sent == [[0], [1, 2, 3], [4, 5]]  # the first alone; the rest in batches of 3
    assert sorted(results) == list(range(6))


async def test_a_batch_refused_as_a_whole_is_sent_one_by_one():
    async def send(docs: Sequence[Doc]) -> Sequence[Doc]:
        if any(d.get("bad") for d in docs):
            raise PermanentError("refused: a bad document")
        return [{"ok": True} for _ in docs]

    outcomes: dict[int, object] = {}
    blocker = anyio.Event()

    async def write(n: int, doc: Doc) -> None:
        try:
            outcomes[n] = await commit.write(doc)
        except PermanentError as exc:
            outcomes[n] = exc

    async def slow_first(docs: Sequence[Doc]) -> Sequence[Doc]:
        await blocker.wait()
        return await send(docs)

    commit = GroupCommit(slow_first, limit=10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(write, 0, {"n": 0})
        await anyio.sleep(0)
        for n, doc in ((1, {"n": 1}), (2, {"bad": True}), (3, {"n": 3})):
            tg.start_soon(write, n, doc)
        await anyio.sleep(0)
        blocker.set()
    assert isinstance(outcomes[2], PermanentError)
    assert all(outcomes[n] == {"ok": True} for n in (0, 1, 3))


async def test_a_cancelled_sender_leaves_no_writer_waiting_forever():
    started = anyio.Event()

    async def send(docs: Sequence[Doc]) -> Sequence[Doc]:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    commit = GroupCommit(send, limit=10)
    errors: list[BaseException] = []

    async def follower() -> None:
        try:
            await commit.write({"n": 2})
        except TransientError as exc:
            errors.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg, anyio.create_task_group() as leader:
            leader.start_soon(commit.write, {"n": 1})
            await started.wait()
            tg.start_soon(follower)
            await anyio.sleep(0.05)
            leader.cancel_scope.cancel()
    assert len(errors) == 1 and "outcome is unknown" in str(errors[0])
    assert commit.batches == 1
