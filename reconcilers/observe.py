"""The resync's decision of which keys to look at, from two full listings and the links.

Pure: given what both listings held (and whether each completed) and the link table,
it says which keys need a reconcile, pairs unlinked records by their match fields,
and counts the deletions the resync would carry out. A linked pair whose both sides
still equal the base is left alone, so a quiet resync costs listings and no writes.
Absence means deletion only where that side's listing completed.

The decision is made a link at a time (`classify_link`) and an unlinked record at a
time (`classify_unlinked_row`, given how many unlinked records of each side share its
match key), so the resync can stream both from the state database and never hold the
listings; `classify` composes the two over listings already in memory.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from connectors.base import Record, RecordId
from reconcilers.canonical import fingerprint
from reconcilers.mapping import MappingError, match_key, view
from reconcilers.model import LinkDigest, LinkState, Op, Policy, Side
from reconcilers.plan import plan

Key = tuple[Side, RecordId]


@dataclass(frozen=True, slots=True)
class Observation:
    """A record as a listing saw it, and what the same resync knows of its twin."""

    record: Record
    twin: Record | None = None
    twin_known: bool = False
    digest: str | None = None
    """The record's mapped values as the listing stored them, where it did."""


@dataclass(frozen=True, slots=True)
class Listing:
    records: Mapping[RecordId, Record]
    complete: bool
    error: str | None = None


@dataclass(slots=True)
class ResyncWork:
    keys: list[Key] = field(default_factory=list)
    observations: dict[Key, Observation] = field(default_factory=dict)
    deletions: list[Key] = field(default_factory=list)
    unchanged: int = 0

    def add(self, key: Key, *observed: tuple[Key, Observation]) -> None:
        self.keys.append(key)
        self.observations.update(observed)

    def extend(self, other: ResyncWork, *, without: Collection[Key] = ()) -> None:
        """Another part's work, less the keys in `without` (carried out already)."""
        self.keys.extend(key for key in other.keys if key not in without)
        self.observations.update((key, seen) for key, seen in other.observations.items() if key not in without)
        self.deletions.extend(other.deletions)
        self.unchanged += other.unchanged


def digest(record: Record, side: Side, policy: Policy) -> str | None:
    """The record's mapped values as a base is stored, or None where they do not map."""
    try:
        return fingerprint(view(record, side, policy))
    except MappingError:
        return None


def digest_and_match(record: Record, side: Side, policy: Policy) -> tuple[str | None, str | None]:
    """The record's digest and the key of its match fields, from one reading of it."""
    try:
        values = view(record, side, policy)
    except MappingError:
        return None, None
    return fingerprint(values), match_key(values, policy)


@dataclass(frozen=True, slots=True)
class UnlinkedRow:
    """A record no link holds, and how many unlinked records of each side (itself
    included) share its match key; `twin` is the external one where it is the only one
    of either side."""

    record: Record
    twin: Record | None
    apps: int
    externals: int
    digest: str | None = None


@dataclass(frozen=True, slots=True)
class LinkRow:
    """A link beside what the listings held of its two records (None: not listed)."""

    link: LinkDigest
    app: Record | None
    external: Record | None


def classify(
    *,
    app: Listing,
    external: Listing,
    links: Iterable[LinkDigest],
    policy: Policy,
    listed_since: float = float("inf"),
) -> ResyncWork:
    """The work of one resync. Links changed at or after `listed_since` (when the listings
    began) are left out: a listing cannot have seen a record linked after it started."""
    work = ResyncWork()
    linked_app: set[RecordId] = set()
    linked_external: set[RecordId] = set()
    for link in links:
        if link.app_id is not None:
            linked_app.add(link.app_id)
        if link.external_id is not None:
            linked_external.add(link.external_id)
        if link.updated_at < listed_since:
            row = LinkRow(
                link,
                app.records.get(link.app_id) if link.app_id is not None else None,
                external.records.get(link.external_id) if link.external_id is not None else None,
            )
            classify_link(row, app_complete=app.complete, external_complete=external.complete, policy=policy, work=work)
    unlinked = {
        Side.APP: [r for i, r in app.records.items() if i not in linked_app],
        Side.EXTERNAL: [r for i, r in external.records.items() if i not in linked_external],
    }
    for side, unlinked_row in _unlinked_rows(unlinked, policy):
        classify_unlinked_row(
            unlinked_row, side, app_complete=app.complete, external_complete=external.complete, work=work
        )  # fmt: skip
    return work


def _unlinked_rows(unlinked: Mapping[Side, list[Record]], policy: Policy) -> Iterator[tuple[Side, UnlinkedRow]]:
    """The unlinked records with their match counts, as the streamed resync counts them in SQL."""
    read = {side: [digest_and_match(record, side, policy) for record in records] for side, records in unlinked.items()}
    keys = {side: [match for _, match in pairs] for side, pairs in read.items()}
    counts = {side: Counter(key for key in side_keys if key is not None) for side, side_keys in keys.items()}
    only_external = {
        key: record for record, key in zip(unlinked[Side.EXTERNAL], keys[Side.EXTERNAL], strict=True) if key
    }
    for side in Side:
        for record, (digested, key) in zip(unlinked[side], read[side], strict=True):
            apps, externals = (counts[Side.APP][key], counts[Side.EXTERNAL][key]) if key is not None else (0, 0)
            if not (apps and externals):
                apps = externals = 0
            twin = only_external[key] if side is Side.APP and key is not None and apps == externals == 1 else None
            yield side, UnlinkedRow(record, twin, apps, externals, digested)


def classify_unlinked_row(
    row: UnlinkedRow, side: Side, *, app_complete: bool, external_complete: bool, work: ResyncWork
) -> None:
    """An unlinked record pairs with its twin where its match key is unique on both sides;
    otherwise it is to be created on the other side where that side's listing completed
    and no record there shares its match key (if one does, the reconcile looks itself)."""
    key = (side, row.record.id)
    unique_pair = row.apps == 1 and row.externals == 1
    if side is Side.APP:
        if unique_pair and row.twin is not None:
            twin_key = (Side.EXTERNAL, row.twin.id)
            seen = Observation(row.record, row.twin, True, row.digest)
            work.add(key, (key, seen), (twin_key, Observation(row.twin)))
            return
        known = external_complete and not row.externals
    else:
        if unique_pair:
            return  # observed with its app twin
        known = app_complete and not row.apps
    work.add(key, (key, Observation(row.record, None, known, row.digest)))


def classify_link(
    row: LinkRow, *, app_complete: bool, external_complete: bool, policy: Policy, work: ResyncWork
) -> None:
    """The work one link needs, if any: the same rules whichever way the rows arrive."""
    link, a, e = row.link, row.app, row.external
    app_key = (Side.APP, link.app_id) if link.app_id is not None else None
    ext_key = (Side.EXTERNAL, link.external_id) if link.external_id is not None else None
    key = app_key or ext_key
    if key is None:
        return  # a released write intent: the resync settles those itself
    observed: list[tuple[Key, Observation]] = []
    if a is not None and app_key:
        observed.append((app_key, Observation(a)))
    if e is not None and ext_key:
        observed.append((ext_key, Observation(e)))

    half = app_key is None or ext_key is None
    if link.state is LinkState.PENDING or (half and link.state is not LinkState.DELETED):
        work.add(key, *observed)  # a write intent to settle, or a parked half link
        return
    app_gone = a is None and app_complete
    ext_gone = e is None and external_complete
    if (a is None and not app_complete) or (e is None and not external_complete):
        return  # absent from a listing that was cut short: that says nothing
    if a is not None and e is not None:
        same = digest(a, Side.APP, policy) == link.base == digest(e, Side.EXTERNAL, policy)
        if same and link.state in (LinkState.SYNCED, LinkState.CONFLICT):
            work.unchanged += 1
            return
        work.add(key, *observed)
        return
    if app_gone and ext_gone:
        work.add(key)
        return
    survivor = a if a is not None else e
    side = Side.APP if a is not None else Side.EXTERNAL
    assert survivor is not None
    deleting = _would_delete(survivor, side, link.base, policy)
    if link.state is LinkState.DELETED and not deleting and digest(survivor, side, policy) == link.base:
        work.unchanged += 1  # a kept survivor, unchanged since: nothing to do
        return
    # A tombstone whose survivor the policy deletes was never decided: its other side's
    # id was handed out again before tandem saw the deletion.
    if deleting:
        work.deletions.append(key)
    work.add(key, *observed)


def _would_delete(record: Record, side: Side, base: str | None, policy: Policy) -> bool:
    """Would the reconcile delete the survivor, rather than recreate its twin or keep it?"""
    try:
        values = view(record, side, policy)
    except MappingError:
        return False
    decided = plan(
        app=values if side is Side.APP else None,
        external=values if side is Side.EXTERNAL else None,
        base=json.loads(base) if base is not None else None,
        linked=True,
        policy=policy,
    )
    return any(write.op is Op.DELETE for write in decided.writes)
