"""A listing that would never end is cut off, incomplete, and says why."""

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from connectors.base import Page, Record, RecordId
from reconcilers.model import FieldMap, Policy, Side
from reconcilers.resync import DEFAULT_LIMITS, ListingLimits, list_into
from reconcilers.state import StateStore, open_state

pytestmark = pytest.mark.anyio

POLICY = Policy(fields=(FieldMap("title", "title"),))


@dataclass
class Scripted:
    """A collection whose next page is whatever `page_for(cursor)` says."""

    page_for: Callable[[str | None], Page]
    delay: float = 0.0
    label: str = "scripted"

    async def list_page(self, cursor: str | None) -> Page:
        await anyio.sleep(self.delay)
        return self.page_for(cursor)


def _records(*ids: str, title: str = "t") -> list[Record]:
    return [Record(RecordId(i), {"title": title}) for i in ids]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    async with open_state(tmp_path / "state.db") as opened:
        yield opened


async def _list(store: StateStore, collection: Scripted, limits: ListingLimits = DEFAULT_LIMITS):
    async with store.listed("tasks") as listed:
        with anyio.fail_after(10):  # the test itself must not hang if the guard fails
            return await list_into(collection, Side.EXTERNAL, listed, POLICY, limits=limits)  # type: ignore[arg-type]


async def test_an_api_ignoring_the_page_parameter_is_caught_at_the_second_page(store):
    outcome = await _list(store, Scripted(lambda cursor: Page(_records("1", "2"), str(int(cursor or 1) + 1))))
    assert not outcome.complete and outcome.fault
    assert "same records as the page before" in (outcome.error or "")


async def test_a_cursor_that_cycles_is_caught(store):
    pages = {None: ("1", "A"), "A": ("2", "B"), "B": ("3", "A")}
    outcome = await _list(store, Scripted(lambda cursor: Page(_records(pages[cursor][0]), pages[cursor][1])))
    assert not outcome.complete and outcome.fault and "a cycle" in (outcome.error or "")


async def test_a_listing_past_its_time_is_cut_off(store):
    slow = Scripted(lambda cursor: Page(_records(str(int(cursor or 0))), str(int(cursor or 0) + 1)), delay=0.05)
    outcome = await _list(store, slow, ListingLimits(seconds=0.3))
    assert not outcome.complete and outcome.fault and "longer than 0.3 s" in (outcome.error or "")


async def test_a_listing_past_its_size_is_cut_off(store):
    endless = Scripted(lambda cursor: Page(_records(f"{cursor}-a", f"{cursor}-b"), str(int(cursor or 0) + 1)))
    outcome = await _list(store, endless, ListingLimits(records=10))
    assert not outcome.complete and outcome.fault and "passed 10 records" in (outcome.error or "")


async def test_ids_listed_twice_are_reported_so_no_sighting_is_trusted(store):
    pages = {None: (_records("1", "2", title="old"), "p2"), "p2": (_records("2", "3", title="new"), None)}
    outcome = await _list(store, Scripted(lambda cursor: Page(*pages[cursor])))
    assert outcome.complete and not outcome.fault
    assert outcome.repeated == {"2"}
