"""The streamed resync (listings in the state database, the diff a join) decides exactly
as `classify` does over the same listings held in memory."""

import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from connectors.base import Page, Record, RecordId, TransientError
from reconcilers import listed, resync
from reconcilers.model import FieldMap, LinkState, Policy, Side
from reconcilers.observe import Listing, classify
from reconcilers.resync import observe
from reconcilers.state import StateStore, open_state

POLICY = Policy(fields=(FieldMap("title", "title"),), match=("title",))
TITLES = st.sampled_from(["a", "b", "c"])
FAILS_AT = st.sampled_from([None, None, None, 0, 1, 2])  # mostly complete listings


@dataclass
class Pages:
    """A collection listing `records` two at a time, failing at page `fail_at` if set."""

    records: Sequence[Record]
    fail_at: int | None = None
    label: str = "pages"

    async def list_page(self, cursor: str | None) -> Page:
        start = int(cursor or 0)
        if self.fail_at is not None and start // 2 >= self.fail_at:
            raise TransientError("HTTP 503")
        end = start + 2
        return Page(self.records[start:end], str(end) if end < len(self.records) else None)


@st.composite
def worlds(draw: st.DrawFn) -> dict[str, Any]:
    app = [Record(RecordId(str(i)), {"title": draw(TITLES)}) for i in range(draw(st.integers(0, 7)))]
    external = [Record(RecordId(f"e{i}"), {"title": draw(TITLES)}) for i in range(draw(st.integers(0, 7)))]
    app_ids = draw(st.permutations([r.id for r in app] + [RecordId("gone1"), RecordId("gone2")]))
    ext_ids = draw(st.permutations([r.id for r in external] + [RecordId("egone1"), RecordId("egone2")]))
    links = []
    for i in range(draw(st.integers(0, min(len(app_ids), len(ext_ids))))):
        links.append(
            {
                "app_id": app_ids[i] if draw(st.booleans()) or i % 3 else None,
                "external_id": ext_ids[i] if draw(st.booleans()) or i % 3 else None,
                "state": draw(st.sampled_from(list(LinkState))),
                "base": draw(st.one_of(st.none(), TITLES)),
                "fresh": draw(st.booleans()) and draw(st.booleans()),
            }
        )
    return {
        "app": app,
        "external": external,
        "links": [link for link in links if link["app_id"] or link["external_id"]],
        "app_fails_at": draw(FAILS_AT),
        "external_fails_at": draw(FAILS_AT),
    }


async def _seed(store: StateStore, world: dict[str, Any], *, now: float) -> None:
    for link in world["links"]:
        await store.insert_link(
            "b",
            app_id=link["app_id"],
            external_id=link["external_id"],
            state=link["state"],
            now=now + 3600 if link["fresh"] else now - 3600,
            base={"title": link["base"]} if link["base"] is not None else None,
        )


def _listing(records: Sequence[Record], fails_at: int | None) -> Listing:
    """What `Pages` lists: page `fails_at` fails only if the listing gets that far."""
    fails = fails_at is not None and (fails_at == 0 or fails_at * 2 < len(records))
    held = records[: fails_at * 2] if fails and fails_at is not None else records
    return Listing({r.id: r for r in held}, complete=not fails)


def _every_state_unchanged() -> dict[str, Any]:
    """One link in each state whose both records equal its base: only some are quiet."""
    states = list(LinkState)
    return {
        "app": [Record(RecordId(str(i)), {"title": "a"}) for i in range(len(states))],
        "external": [Record(RecordId(f"e{i}"), {"title": "a"}) for i in range(len(states))],
        "links": [
            {"app_id": RecordId(str(i)), "external_id": RecordId(f"e{i}"), "state": state, "base": "a", "fresh": False}
            for i, state in enumerate(states)
        ],
        "app_fails_at": None,
        "external_fails_at": None,
    }


@pytest.fixture(autouse=True, scope="module")
def _pages_of_two() -> Iterator[None]:
    """Unlinked records two to a page, so a world of a few records spans pages."""
    page, resync.UNLINKED_PAGE = resync.UNLINKED_PAGE, 2
    yield
    resync.UNLINKED_PAGE = page


@settings(max_examples=300, deadline=None)
@given(world=worlds())
@example(world=_every_state_unchanged())
def test_the_streamed_diff_decides_as_classify_in_memory(world: dict[str, Any]) -> None:
    async def run() -> None:
        now = time.time()
        with tempfile.TemporaryDirectory() as folder:
            async with open_state(Path(folder) / "state.db") as store:
                await _seed(store, world, now=now)
                digests = [digest async for digest in store.digests("b")]
                streamed = await observe(
                    name="b",
                    app=Pages(world["app"], world["app_fails_at"]),  # type: ignore[arg-type]
                    external=Pages(world["external"], world["external_fails_at"]),  # type: ignore[arg-type]
                    store=store,
                    policy=POLICY,
                    allow_deletes=True,
                )
        app = _listing(world["app"], world["app_fails_at"])
        external = _listing(world["external"], world["external_fails_at"])
        expected = classify(app=app, external=external, links=digests, policy=POLICY, listed_since=now)
        assert (streamed.app.complete, streamed.external.complete) == (app.complete, external.complete)
        assert (streamed.app.count, streamed.external.count) == (len(app.records), len(external.records))
        assert sorted(streamed.work.keys) == sorted(expected.keys)
        assert streamed.work.observations == expected.observations
        assert sorted(streamed.work.deletions) == sorted(expected.deletions)
        assert streamed.work.unchanged == expected.unchanged
        assert streamed.links == len(digests)

    anyio.run(run)


def test_the_temporary_listings_are_gone_after_a_resync(tmp_path: Path) -> None:
    async def run() -> list[str]:
        async with open_state(tmp_path / "state.db") as store:
            records = [Record(RecordId("1"), {"title": "a"})]
            await observe(
                name="b",
                app=Pages(records),  # type: ignore[arg-type]
                external=Pages([], fail_at=0),  # type: ignore[arg-type]
                store=store,
                policy=POLICY,
                allow_deletes=False,
            )
            async with store._db.execute("SELECT name FROM sqlite_temp_master") as cursor:
                return [row[0] async for row in cursor]

    assert anyio.run(run) == []


def test_a_record_listed_twice_counts_once_and_is_read_again(tmp_path: Path) -> None:
    """Which sighting is right is not known (an API listing one id twice with different
    values): the reconcile reads the record itself rather than trust either."""

    async def run() -> None:
        async with open_state(tmp_path / "state.db") as store:
            await store.insert_link(
                "b", app_id=RecordId("1"), external_id=RecordId("x"), state=LinkState.SYNCED, now=0.0,
                base={"title": "a"},
            )  # fmt: skip
            moved = [Record(RecordId("1"), {"title": "a"}), Record(RecordId("1"), {"title": "b"})]
            observed = await observe(
                name="b",
                app=Pages(moved),  # type: ignore[arg-type]
                external=Pages([Record(RecordId("x"), {"title": "a"})]),  # type: ignore[arg-type]
                store=store,
                policy=POLICY,
                allow_deletes=False,
            )
        assert observed.app.count == 1
        assert observed.work.unchanged == 0
        assert (Side.APP, RecordId("1")) not in observed.work.observations
        assert (Side.APP, RecordId("1")) in observed.work.keys

    anyio.run(run)


def test_a_value_json_cannot_hold_comes_back_as_it_was(tmp_path: Path) -> None:
    """An SQLite BLOB, say: the record reaches the reconcile unchanged, for the mapping to read,
    and the rest of the listing is classified as usual."""

    async def run() -> None:
        async with open_state(tmp_path / "state.db") as store:
            odd = Record(RecordId("1"), {"title": b"\x00\xff"})
            plain = Record(RecordId("2"), {"title": "a"})
            observed = await observe(
                name="b",
                app=Pages([odd, plain]),  # type: ignore[arg-type]
                external=Pages([Record(RecordId("x"), {"title": "a"})]),  # type: ignore[arg-type]
                store=store,
                policy=POLICY,
                allow_deletes=False,
            )
        assert observed.work.observations[(Side.APP, RecordId("1"))].record == odd
        paired = observed.work.observations[(Side.APP, RecordId("2"))]
        assert paired.twin is not None and paired.twin.id == "x"

    anyio.run(run)


def test_a_read_in_progress_on_the_connection_never_fails_the_resync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite refuses DROP TABLE while any statement on the connection is active: another
    task's read between two fetches (a gauge, a status request) made a resync fail. Here
    the read stays open through the whole resync: its tables are left, and it completes."""
    monkeypatch.setattr(listed, "_DROP_RETRIES", (0.01, 0.01))

    async def run() -> tuple[bool, int, int]:
        async with open_state(tmp_path / "state.db") as store:
            for i in range(3):  # another binding's links, for a read to be in the middle of
                await store.insert_link(
                    "other", app_id=RecordId(str(i)), external_id=None, state=LinkState.ERROR, now=0.0
                )
            reading = await store._db.execute("SELECT row FROM links")
            await reading.fetchone()  # active until closed
            observed = await observe(
                name="b",
                app=Pages([Record(RecordId("1"), {"title": "a"})]),  # type: ignore[arg-type]
                external=Pages([]),  # type: ignore[arg-type]
                store=store,
                policy=POLICY,
                allow_deletes=False,
            )
            kept = await _temp_tables(store)
            await reading.close()
            observe_again = await observe(
                name="b",
                app=Pages([]),  # type: ignore[arg-type]
                external=Pages([]),  # type: ignore[arg-type]
                store=store,
                policy=POLICY,
                allow_deletes=False,
            )
            assert observe_again.complete
            return observed.complete, kept, await _temp_tables(store)

    complete, kept, after_next = anyio.run(run)
    assert complete and kept == 3  # the two listings and the match counts, left behind
    assert after_next == kept  # the next resync drops its own and fails nothing either


async def _temp_tables(store: StateStore) -> int:
    async with store._db.execute("SELECT COUNT(*) FROM sqlite_temp_master WHERE type = 'table'") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0
