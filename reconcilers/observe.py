"""The resync's decision of which keys to look at, from two full listings and the links.

Pure: given what both listings held (and whether each completed) and the link table,
it says which keys need a reconcile, pairs unlinked records by their match fields,
and counts the deletions the resync would carry out. A linked pair whose both sides
still equal the base is left alone, so a quiet resync costs listings and no writes.
Absence means deletion only where that side's listing completed.

The decision is made a link at a time (`classify_link`) and for the unlinked records
together (`classify_unlinked`), so the resync can stream the links from the state
database and never hold both listings; `classify` composes the two over listings
already in memory.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
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


def digest(record: Record, side: Side, policy: Policy) -> str | None:
    """The record's mapped values as a base is stored, or None where they do not map."""
    try:
        return fingerprint(view(record, side, policy))
    except MappingError:
        return None


def _match_keys(records: Iterable[Record], side: Side, policy: Policy) -> dict[str, list[Record]]:
    by_key: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        try:
            key = match_key(view(record, side, policy), policy)
        except MappingError:
            continue
        if key is not None:
            by_key[key].append(record)
    return by_key


@dataclass(frozen=True, slots=True)
class _Pairing:
    pairs: dict[RecordId, Record]  # app id → its unique external match
    ambiguous: set[Key]  # records whose match is not unique: the reconcile looks for itself


def _pair_unlinked(app: list[Record], external: list[Record], policy: Policy) -> _Pairing:
    if not policy.match:
        return _Pairing({}, set())
    app_keys = _match_keys(app, Side.APP, policy)
    ext_keys = _match_keys(external, Side.EXTERNAL, policy)
    pairs: dict[RecordId, Record] = {}
    ambiguous: set[Key] = set()
    for key, apps in app_keys.items():
        exts = ext_keys.get(key, [])
        if len(apps) == 1 and len(exts) == 1:
            pairs[apps[0].id] = exts[0]
        elif exts:
            ambiguous.update((Side.APP, r.id) for r in apps)
            ambiguous.update((Side.EXTERNAL, r.id) for r in exts)
    return _Pairing(pairs, ambiguous)


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
    classify_unlinked(
        [r for i, r in app.records.items() if i not in linked_app],
        [r for i, r in external.records.items() if i not in linked_external],
        app_complete=app.complete,
        external_complete=external.complete,
        policy=policy,
        work=work,
    )
    return work


def classify_unlinked(
    unlinked_app: list[Record],
    unlinked_external: list[Record],
    *,
    app_complete: bool,
    external_complete: bool,
    policy: Policy,
    work: ResyncWork,
) -> None:
    """Pair the records no link holds by their match fields; the rest are to be created
    on the other side where that side's listing completed."""
    pairing = _pair_unlinked(unlinked_app, unlinked_external, policy)
    paired_external = {record.id for record in pairing.pairs.values()}
    for record in unlinked_app:
        key = (Side.APP, record.id)
        twin = pairing.pairs.get(record.id)
        if twin is not None:
            twin_key = (Side.EXTERNAL, twin.id)
            work.add(key, (key, Observation(record, twin, True)), (twin_key, Observation(twin)))
            continue
        known = external_complete and key not in pairing.ambiguous
        work.add(key, (key, Observation(record, None, known)))
    for record in unlinked_external:
        if record.id in paired_external:
            continue
        key = (Side.EXTERNAL, record.id)
        known = app_complete and key not in pairing.ambiguous
        work.add(key, (key, Observation(record, None, known)))


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
