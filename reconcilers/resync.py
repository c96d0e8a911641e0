"""A full resync: list both sides to the end, compare with the links, pick the work.

The listings run concurrently, each page stored as it arrives in the state database's
temporary storage (`reconcilers.listed`), so the process holds a page, not a collection.
The diff is a join there; only the links that need a look, and the records no link
holds, come back to the pure `classify_link` and `classify_unlinked_row`. The unlinked
records come a page at a time, and each page may be handed to `take` (the batch path)
as it is decided, so an import holds a few pages, not the collection. An import into
an empty side skips the storing: its pages are decided as they are listed.

A listing cut short by an error is marked incomplete, and no deletion is inferred from
it; a shutdown cancels the resync whole. The mass-delete guard holds back every
deletion of a resync that would delete more than the binding allows, until an operator
asks for it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass

import anyio
import structlog

from connectors.base import Collection, ConnectorError, Record, RecordId
from reconcilers.listed import ListedRecords
from reconcilers.model import Policy, Side
from reconcilers.observe import (
    Key,
    ResyncWork,
    classify_link,
    classify_unlinked_row,
    digest_and_match,
)
from reconcilers.state import StateStore

log = structlog.get_logger(__name__)

UNLINKED_PAGE = 500

Take = Callable[[ResyncWork], Awaitable[set[Key]]]
"""Carries out what it can of a part of the work; returns the keys it took."""

TakeListed = Callable[[Side, Sequence[Record]], Awaitable[ResyncWork]]
"""Creates on the other side, which listed empty, a listed page's records that no link
holds; returns the work it left for the reconcile."""


@dataclass(frozen=True, slots=True)
class BatchPath:
    take: Take
    take_listed: TakeListed


Batch = Callable[[], AbstractAsyncContextManager[BatchPath]]
"""Opens a batch path for one resync; leaving it waits for what it took to be done."""


@dataclass(frozen=True, slots=True)
class ListingOutcome:
    count: int
    complete: bool
    error: str | None = None
    repeated: frozenset[RecordId] = frozenset()
    """Ids the listing showed more than once: which sighting is right is not known, so
    the reconcile reads each record itself."""
    fault: bool = False
    """The listing itself misbehaved (a cycle, a repeated page, a limit reached): not a
    passing fault but one that every resync will meet until the API or the bindings
    file changes, so the binding is reported not ready."""


@dataclass(frozen=True, slots=True)
class ListingLimits:
    """What makes a listing that never ends end: then it is incomplete and says why."""

    seconds: float = 3600.0
    records: int = 10_000_000


DEFAULT_LIMITS = ListingLimits()


class _EndlessListing(Exception):
    """A listing that would go on for ever: a cycle, a repeated page, a limit reached."""


class _Progress:
    """Watches a listing's pages for the signs of one that never ends. It keeps the last
    page's ids and the cursors, never the collection's ids: a page that repeats the one
    before is an API ignoring the page parameter, a cursor seen before is a cycle."""

    def __init__(self, label: str, limits: ListingLimits) -> None:
        self._label = label
        self._limits = limits
        self._cursors: set[str] = set()
        self._last_page: set[RecordId] = set()
        self._records = 0

    def check(self, records: Sequence[Record], cursor: str | None) -> None:
        ids = {record.id for record in records}
        if ids and ids == self._last_page:
            raise _EndlessListing(
                f"{self._label}: a page listed the same records as the page before: the API may be"
                " ignoring the page or cursor parameter (check the binding's pagination)"
            )
        self._last_page = ids
        self._records += len(records)
        if self._records > self._limits.records:
            raise _EndlessListing(f"{self._label}: the listing passed {self._limits.records} records")
        if cursor is not None:
            if cursor in self._cursors:
                raise _EndlessListing(f"{self._label}: the listing's next page came back to an earlier one (a cycle)")
            self._cursors.add(cursor)


Straight = Callable[[Side, Sequence[Record]], Awaitable[bool]]
"""Decides a listed page at once, if it can; False: the page is to be stored."""


async def list_into(
    collection: Collection,
    side: Side,
    listed: ListedRecords,
    policy: Policy,
    *,
    straight: Straight | None = None,
    limits: ListingLimits = DEFAULT_LIMITS,
) -> ListingOutcome:
    """List `collection` to the end into `listed`, each page offered to `straight` first;
    an error, a listing that would never end, or one past `limits` ends it incomplete."""
    decided = 0  # pages decided straight away are not stored, so not counted there
    progress = _Progress(collection.label, limits)
    error: str | None = None
    fault = False
    with anyio.move_on_after(limits.seconds) as deadline:
        try:
            cursor: str | None = None
            while True:
                page = await collection.list_page(cursor)
                progress.check(page.records, page.cursor)
                if straight is not None and await straight(side, page.records):
                    decided += len(page.records)
                else:
                    rows = [(record, *digest_and_match(record, side, policy)) for record in page.records]
                    await listed.add(side, rows)
                if page.cursor is None:
                    count = await listed.count(side) + decided
                    return ListingOutcome(count, complete=True, repeated=frozenset(await listed.repeated(side)))
                cursor = page.cursor
        except _EndlessListing as exc:
            error, fault = str(exc), True
        except ConnectorError as exc:
            error = str(exc)
    if deadline.cancelled_caught:
        error, fault = f"{collection.label}: the listing took longer than {limits.seconds:g} s", True
    log.warning("resync.listing_incomplete", collection=collection.label, error=error, stalled=fault)
    return ListingOutcome(await listed.count(side) + decided, complete=False, error=error, fault=fault)


async def diff(
    listed: ListedRecords,
    app: ListingOutcome,
    external: ListingOutcome,
    *,
    policy: Policy,
    listed_since: float,
    take: Take | None = None,
) -> ResyncWork:
    """The resync's work from the stored listings and the links: quiet links are only
    counted, the rest and the unlinked records are decided in Python. The work `take`
    takes of each page of unlinked records is left out of what is returned."""
    work = ResyncWork(unchanged=await listed.unchanged(listed_since))
    held = dict.fromkeys(Side, work.unchanged)  # listed records a link holds, by side
    async for row in listed.other_links(listed_since):
        held[Side.APP] += row.app is not None
        held[Side.EXTERNAL] += row.external is not None
        classify_link(row, app_complete=app.complete, external_complete=external.complete, policy=policy, work=work)
    # A side whose every listed record a link holds has none unlinked: a quiet resync
    # skips the two passes over its listing that would look for them.
    sides = [side for side in Side if await listed.count(side) > held[side]]
    async for side, rows in listed.unlinked(page_size=UNLINKED_PAGE, sides=sides):
        page = ResyncWork()
        for unlinked in rows:
            classify_unlinked_row(
                unlinked, side, app_complete=app.complete, external_complete=external.complete, work=page
            )  # fmt: skip
        work.extend(page, without=await take(page) if take is not None else ())
    return work


@dataclass(frozen=True, slots=True)
class Observed:
    app: ListingOutcome
    external: ListingOutcome
    links: int
    work: ResyncWork
    blocked: tuple[Key, ...]
    listed_at: float
    """When the listings began: their records are no newer than this."""

    @property
    def complete(self) -> bool:
        return self.app.complete and self.external.complete

    @property
    def listing_fault(self) -> str | None:
        """Why a listing would never end, where one would not."""
        return next((outcome.error for outcome in (self.app, self.external) if outcome.fault), None)


async def observe(
    *,
    name: str,
    app: Collection,
    external: Collection,
    store: StateStore,
    policy: Policy,
    allow_deletes: bool,
    batch: Batch | None = None,
    too_many: Callable[[int, int], bool] | None = None,
    limits: ListingLimits = DEFAULT_LIMITS,
) -> Observed:
    """List both sides, classify, and apply the mass-delete guard. A `batch` path is
    offered the unlinked records' work a page at a time (it never holds a deletion), and
    is done before the listings are dropped. `too_many(deletes, links)` is the mass-delete
    guard (the binding's rule alone, where no running guard counts recent deletions).

    An import skips the stored listing: where no link existed when the resync began and
    one side's listing has completed empty, every record the other side lists from then
    on is unlinked and has no twin to pair with, so its page is decided and handed to the
    batch path as it arrives, while the listing goes on."""
    outcomes: dict[Side, ListingOutcome] = {}
    listed_since = time.time()
    taking: AbstractAsyncContextManager[BatchPath | None] = batch() if batch is not None else nullcontext(None)
    async with store.listed(name) as listed, taking as path:
        decided = ResyncWork()

        async def straight(side: Side, records: Sequence[Record]) -> bool:
            other = outcomes.get(side.other)
            if path is None or other is None or not other.complete or other.count:
                return False
            decided.extend(await path.take_listed(side, records))
            return True

        unlinked_only = path is not None and await store.link_count(name) == 0

        async def list_side(side: Side, collection: Collection) -> None:
            offer = straight if unlinked_only else None
            outcomes[side] = await list_into(collection, side, listed, policy, straight=offer, limits=limits)

        async with anyio.create_task_group() as tg:
            tg.start_soon(list_side, Side.APP, app)
            tg.start_soon(list_side, Side.EXTERNAL, external)
        take = path.take if path is not None else None
        work = await diff(
            listed, outcomes[Side.APP], outcomes[Side.EXTERNAL], policy=policy, listed_since=listed_since, take=take
        )
        work.extend(decided)
    for side, outcome in outcomes.items():
        for record_id in outcome.repeated:  # listed twice: the reconcile reads it itself
            key = (side, record_id)
            work.observations.pop(key, None)
            if key not in work.keys:
                work.keys.append(key)
    links = await store.link_count(name)
    blocked: tuple[Key, ...] = ()
    too_many = too_many or policy.delete_guard.blocks
    guarded = not allow_deletes and too_many(len(work.deletions), links)
    if work.deletions and guarded:
        blocked = tuple(work.deletions)
        held = set(blocked)
        work.keys = [key for key in work.keys if key not in held]
    return Observed(outcomes[Side.APP], outcomes[Side.EXTERNAL], links, work, blocked, listed_since)
