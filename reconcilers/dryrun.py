"""`tandem plan`: what a resync would write now, computed from listings, writing nothing.

It observes exactly as the resync does, then plans each key from the listings and
the links without touching either side or the state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from connectors.base import RecordId
from reconcilers.binding import Binding
from reconcilers.mapping import MappingError, null_refusal, view
from reconcilers.model import Link, LinkState, Side
from reconcilers.observe import Key
from reconcilers.plan import plan
from reconcilers.reconcile import parked_fingerprint
from reconcilers.resync import DEFAULT_LIMITS, ListingLimits, Observed, observe
from reconcilers.state import StateStore


@dataclass(slots=True)
class DryRun:
    binding: str
    writes: list[dict[str, Any]] = field(default_factory=list)
    parked: list[dict[str, Any]] = field(default_factory=list)
    """Records the resync would park now."""
    still_parked: list[dict[str, Any]] = field(default_factory=list)
    """Records parked before and unchanged since, which `run` leaves alone as well."""
    conflicts: int = 0
    deletes_blocked: int = 0
    complete: bool = True

    def as_json(self) -> dict[str, Any]:
        return {
            "binding": self.binding,
            "writes": self.writes,
            "would_park": self.parked,
            "still_parked": self.still_parked,
            "conflicts": self.conflicts,
            "deletes_blocked": self.deletes_blocked,
            "listings_complete": self.complete,
        }


async def dry_run(binding: Binding, store: StateStore, *, limits: ListingLimits = DEFAULT_LIMITS) -> DryRun:
    observed = await observe(
        limits=limits,
        name=binding.name,
        app=binding.app,
        external=binding.external,
        store=store,
        policy=binding.policy,
        allow_deletes=False,
    )
    result = DryRun(binding.name, deletes_blocked=len(observed.blocked), complete=observed.complete)
    for key in observed.work.keys:
        link = await store.link_for(binding.name, key[0], key[1])
        _plan_key(binding, key, link, observed, result)
    return result


def _plan_key(binding: Binding, key: Key, link: Link | None, observed: Observed, out: DryRun) -> None:
    seen = observed.work.observations
    app_id: RecordId | None = key[1] if key[0] is Side.APP else (link.app_id if link else None)
    ext_id: RecordId | None = key[1] if key[0] is Side.EXTERNAL else (link.external_id if link else None)
    if link is not None and link.state is LinkState.PENDING:
        out.writes.append({"op": "settle-intent", "app_id": app_id, "external_id": ext_id})
        return
    records = {
        side: observation.record
        for side, record_id in ((Side.APP, app_id), (Side.EXTERNAL, ext_id))
        if record_id is not None and (observation := seen.get((side, record_id))) is not None
    }
    unchanged = parked_fingerprint(records.get(Side.APP), records.get(Side.EXTERNAL))
    if link is not None and link.state is LinkState.ERROR and link.failed_fingerprint == unchanged:
        out.still_parked.append({"app_id": app_id, "external_id": ext_id, "error": link.error})
        return
    # As the reconcile has it: a tombstone is a pair whose base still counts, one side or both kept.
    tombstone = link is not None and link.state is LinkState.DELETED
    linked = link is not None and (tombstone or (link.app_id is not None and link.external_id is not None))
    own = seen.get(key)
    if not linked and own is not None and own.twin is not None:
        records[key[0].other] = own.twin  # paired by match in this resync
    try:
        values = {side: view(record, side, binding.policy) for side, record in records.items()}
    except MappingError as exc:
        out.parked.append({"app_id": app_id, "external_id": ext_id, "error": str(exc)})
        return
    app_id = records[Side.APP].id if Side.APP in records else app_id
    ext_id = records[Side.EXTERNAL].id if Side.EXTERNAL in records else ext_id
    decided = plan(
        app=values.get(Side.APP),
        external=values.get(Side.EXTERNAL),
        base=link.base if linked and link else None,
        linked=linked,
        policy=binding.policy,
    )
    out.conflicts += len(decided.conflicts)
    for write in decided.writes:
        refusal = null_refusal(
            write.values, write.op, write.side, binding.policy, binding.side(write.side).capabilities
        )
        if refusal is not None:  # as `run` parks it, before it sends anything
            error = f"{binding.side(write.side).label}: {refusal}"
            out.parked.append({"app_id": app_id, "external_id": ext_id, "error": error})
            return
        out.writes.append(
            {
                "side": write.side.value,
                "op": write.op.value,
                "app_id": app_id,
                "external_id": ext_id,
                "fields": write.values,
                "reason": decided.reason,
            }
        )
