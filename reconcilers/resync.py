"""A full resync: list both sides to the end, compare with the links, pick the work.

The listings run concurrently. A listing cut short by an error is marked incomplete,
and `classify` then infers no deletion from it; a shutdown cancels the resync whole.
The mass-delete guard holds back every deletion of a resync that would delete more
than the binding allows, until an operator asks for it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio
import structlog

from connectors.base import Collection, ConnectorError, Record, RecordId
from reconcilers.model import Policy
from reconcilers.observe import Key, Listing, ResyncWork, classify
from reconcilers.state import StateStore

log = structlog.get_logger(__name__)


async def list_all(collection: Collection) -> Listing:
    records: dict[RecordId, Record] = {}
    cursor: str | None = None
    try:
        while True:
            page = await collection.list_page(cursor)
            for record in page.records:
                records[record.id] = record
            if page.cursor is None:
                return Listing(records, complete=True)
            cursor = page.cursor
    except ConnectorError as exc:
        log.warning("resync.listing_incomplete", collection=collection.label, error=str(exc))
        return Listing(records, complete=False, error=str(exc))


@dataclass(frozen=True, slots=True)
class Observed:
    app: Listing
    external: Listing
    links: int
    work: ResyncWork
    blocked: tuple[Key, ...]
    listed_at: float
    """When the listings began: their records are no newer than this."""

    @property
    def complete(self) -> bool:
        return self.app.complete and self.external.complete


async def observe(
    *,
    name: str,
    app: Collection,
    external: Collection,
    store: StateStore,
    policy: Policy,
    allow_deletes: bool,
) -> Observed:
    """List both sides, classify, and apply the mass-delete guard."""
    listings: dict[str, Listing] = {}
    listed_since = time.time()

    async def take(label: str, collection: Collection) -> None:
        listings[label] = await list_all(collection)

    async with anyio.create_task_group() as tg:
        tg.start_soon(take, "app", app)
        tg.start_soon(take, "external", external)
    digests = [digest async for digest in store.digests(name)]
    work = classify(
        app=listings["app"],
        external=listings["external"],
        links=digests,
        policy=policy,
        listed_since=listed_since,
    )
    blocked: tuple[Key, ...] = ()
    guarded = not allow_deletes and policy.delete_guard.blocks(len(work.deletions), len(digests))
    if work.deletions and guarded:
        blocked = tuple(work.deletions)
        held = set(blocked)
        work.keys = [key for key in work.keys if key not in held]
    return Observed(listings["app"], listings["external"], len(digests), work, blocked, listed_since)
