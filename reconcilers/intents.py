"""Write intents: stored before every create, settled by a lookup when one was never confirmed.

A create whose link write did not follow (a crash, a timeout, a shutdown) leaves its
intent pending. The next look at the record asks the side the create went to for a
record that a create of the intent's values could have made: exactly one such unlinked
record is the twin and gets linked; none means the create never happened and the
record is decided afresh; several wait for an operator. A second create is never the
answer to not knowing.

Where the side takes the id tandem chooses (`chosen_ids`), the intent stores that id
before the create, and the lookup is a read of that one id.

The record the create was made from is checked too: a table that reuses the ids of
deleted rows (SQLite's `INTEGER PRIMARY KEY` without `AUTOINCREMENT`) can hand its id to
a new record while the intent waits. When its match fields no longer fit the intent, the
twin belongs to a record that is gone, and the link keeps only the twin, as a tombstone.
"""

from __future__ import annotations

import enum

from connectors.base import AuthError, RateLimitedError, Record
from reconcilers.binding import Binding
from reconcilers.canonical import Canon
from reconcilers.mapping import MappingError, match_values, matching, native, view, writable
from reconcilers.model import Link, LinkState, Policy, Side
from reconcilers.state import StateStore

INTENT_WINDOW = 30.0
"""How long a create may still land after tandem stopped waiting for it (a server that
finishes a request whose client timed out). A younger intent that no lookup can find
is looked at again later rather than created again."""


def refused(exc: BaseException) -> bool:
    """Did a create fail in a way that proves nothing was made? A 401/403 or a 429 is the
    server's refusal before it acts: its intent is withdrawn at once rather than left
    to wait out `INTENT_WINDOW` for a record that cannot land."""
    return isinstance(exc, AuthError | RateLimitedError)


class Settled(enum.StrEnum):
    FOUND = "intent-found"
    ABSENT = "intent-absent"
    AMBIGUOUS = "intent-ambiguous"
    WAITING = "intent-waiting"


def could_have_made(record: Record, side: Side, values: dict[str, Canon], policy: Policy) -> bool:
    """Could `record` (on `side`) be what a create of `values` made? By match fields, or all."""
    try:
        seen = view(record, side, policy)
    except MappingError:
        return False
    if policy.match:
        return bool(matching([record], values, side, policy))
    return all(seen.get(name) == value for name, value in values.items())


def _replaced(link: Link, source: Record | None, side: Side, values: dict[str, Canon], policy: Policy) -> bool:
    """Does the source's id now name another record? Released links say so; otherwise
    only match fields can tell."""
    if (link.app_id if side is Side.APP else link.external_id) is None:
        return True
    return source is not None and bool(policy.match) and not could_have_made(source, side, values, policy)


async def _could_be_ours(link: Link, binding: Binding, values: dict[str, Canon]) -> list[Record]:
    """The records the create could have made: the one with the id it chose, or a lookup."""
    side, policy = link.intent_side, binding.policy
    assert side is not None
    collection = binding.side(side)
    if link.intent_id is not None:
        # The id was fresh when chosen: a record under it is ours, whatever it holds now.
        found = await collection.get(link.intent_id)
        return [found] if found is not None else []
    if policy.match:
        query = match_values(values, policy, side)
    else:
        query = native(writable(values, side, policy), side, policy)
    return [record for record in await collection.find(query) if could_have_made(record, side, values, policy)]


async def settle_intent(
    link: Link, *, binding: Binding, store: StateStore, now: float, source: Record | None = None
) -> tuple[Settled, str]:
    """Settle `link`'s pending create; `source` is the record it was made from, as seen now."""
    side = link.intent_side
    assert side is not None
    values = link.intent_values or {}
    policy = binding.policy
    candidates = [
        record
        for record in await _could_be_ours(link, binding, values)
        if await store.link_for(binding.name, side, record.id) is None
    ]
    if len(candidates) == 1:
        found = candidates[0].id
        if _replaced(link, source, side.other, values, policy):
            await store.settle(
                link.row,
                app_id=found if side is Side.APP else None,
                external_id=found if side is Side.EXTERNAL else None,
                state=LinkState.DELETED,
                base=dict(values),
                now=now,
            )
            return Settled.FOUND, (
                f"the interrupted create had happened ({side.value} {found}), but its source"
                f" {side.other.value} record was deleted and its id reused"
            )
        await store.settle(
            link.row,
            app_id=found if side is Side.APP else link.app_id,
            external_id=found if side is Side.EXTERNAL else link.external_id,
            state=LinkState.SYNCED,
            base=dict(values),
            now=now,
        )
        return Settled.FOUND, f"the interrupted create had happened: linked {side.value} {found}"
    if candidates:
        message = (
            f"an interrupted create left {len(candidates)} {side.value} records that look"
            f" like it; pair the right one with PUT /api/bindings/{binding.name}/links"
        )
        await store.park(link.row, error=message, failed_fingerprint=None, now=now)
        return Settled.AMBIGUOUS, message
    age = now - (link.updated_at or 0.0)
    if age < INTENT_WINDOW:
        return Settled.WAITING, f"{INTENT_WINDOW - age:.3f}"
    if link.app_id is not None and link.external_id is not None:
        # A recreate that never happened: back to the agreement it started from.
        await store.settle(
            link.row, app_id=link.app_id, external_id=link.external_id,
            state=LinkState.SYNCED, base=link.base, now=now,
        )  # fmt: skip
    else:
        await store.drop(link.row)
    return Settled.ABSENT, "the interrupted create had not happened"
