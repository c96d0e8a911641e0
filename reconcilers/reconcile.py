"""reconcile(key): observe both sides and the link, plan, carry the plan out.

A key only says which record to look at. Both sides are read now (or taken from a
listing the resync made moments ago), the pure `plan` decides, and the writes go
through the connectors. Before any create a write intent is stored, so a crash
between the remote create and the link write is settled by a lookup, never by a
second create. A record one side refuses is parked with its error and retried only
when it changes or an operator asks.
"""

from __future__ import annotations

import enum
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from connectors.base import (
    ConflictError,
    ConnectorError,
    NotFoundError,
    PermanentError,
    Record,
    RecordId,
)
from reconcilers.binding import Binding
from reconcilers.canonical import Canon
from reconcilers.guard import DeletionGuard
from reconcilers.intents import INTENT_WINDOW, Settled, could_have_made, refused, settle_intent
from reconcilers.locks import PairLocks
from reconcilers.mapping import MappingError, match_key, match_values, matching, native, null_refusal, view
from reconcilers.model import Link, LinkState, Op, Policy, Side, Values
from reconcilers.observe import Key, Observation
from reconcilers.plan import FieldConflict, LinkChange, Plan, Write, plan
from reconcilers.state import LinkTaken, StateStore

log = structlog.get_logger(__name__)

PENDING_RECHECK = 0.05
"""How soon to look again at a record that may be the fruit of a create still in flight."""

DELETION_MEMORY = 10_000
"""How many of tandem's latest deletions are remembered, each a key and a time."""


DELETE_HELD = "delete-held"
"""The action of a reconcile whose deletion the mass-delete guard held back."""


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    ERROR = "error"
    REQUEUE = "requeue"


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    action: str
    app_id: RecordId | None = None
    external_id: RecordId | None = None
    error: str | None = None
    requeue_after: float | None = None
    writes: tuple[Write, ...] = ()
    conflicts: tuple[FieldConflict, ...] = ()


def parked_fingerprint(app: Record | None, external: Record | None) -> str:
    """What a parked record looked like, to retry it only once it changes."""
    return json.dumps(
        {
            "app": dict(app.fields) if app else None,
            "external": dict(external.fields) if external else None,
        },
        sort_keys=True,
        default=str,
    )


@dataclass(slots=True)
class _Scene:
    """Everything observed for one reconcile."""

    link: Link | None
    app: Record | None = None
    external: Record | None = None
    writes: list[Write] = field(default_factory=list)
    row: int | None = None  # the link row, once there is one (a write intent makes one)

    def record(self, side: Side) -> Record | None:
        return self.app if side is Side.APP else self.external

    def set(self, side: Side, record: Record | None) -> None:
        if side is Side.APP:
            self.app = record
        else:
            self.external = record

    def id(self, side: Side) -> RecordId | None:
        record = self.record(side)
        if record is not None:
            return record.id
        if self.link is None:
            return None
        return self.link.app_id if side is Side.APP else self.link.external_id


class Reconciler:
    def __init__(
        self,
        binding: Binding,
        store: StateStore,
        *,
        clock: Callable[[], float] = time.time,
        on_write: Callable[[Write], None] = lambda write: None,
        reported: Callable[[Key], bool] = lambda key: False,
        guard: DeletionGuard | None = None,
    ) -> None:
        """`reported` says whether a change source reported a key that waits for its own
        reconcile: a pair's reconcile leaves that key's sighting to it. `guard` is the
        binding's mass-delete guard, which every deletion passes."""
        self.binding = binding
        self.guard = guard if guard is not None else DeletionGuard(binding.policy.delete_guard)
        self.store = store
        self._clock = clock
        self._on_write = on_write
        self._reported = reported
        self._locks = PairLocks()
        self.observations: dict[Key, tuple[Observation, float]] = {}
        """Records as a listing or a feed saw them, and when that read began."""
        self._deleted_at: dict[Key, float] = {}
        """When tandem deleted each record it recently deleted: a sighting from before then
        is stale, though the dropped link can no longer say so (the newest DELETION_MEMORY)."""

    @property
    def policy(self) -> Policy:
        return self.binding.policy

    def forget_observation(self, key: Key) -> None:
        self.observations.pop(key, None)

    async def reconcile(self, key: Key) -> Result:
        side, record_id = key
        link = await self.store.link_for(self.binding.name, side, record_id)
        if link is None:
            return await self._observe_and_apply(key, None)
        async with self._locks.hold(link.row):
            fresh = await self.store.link_by_row(link.row)
            if fresh is None:
                return Result(Outcome.REQUEUE, "link-changed", requeue_after=0)
            return await self._observe_and_apply(key, fresh)

    # --- observe -----------------------------------------------------------------

    async def _observe_and_apply(self, key: Key, link: Link | None) -> Result:
        scene = _Scene(link, row=link.row if link else None)
        twin_hint: Observation | None = None
        for side in Side:
            record_id = key[1] if side is key[0] else scene.id(side)
            if record_id is None:
                continue
            # The other side's sighting, where a change source reported it, is left for its
            # own key's reconcile: that one then finds it carried over, with no read. Any
            # other sighting is used once, so a later reconcile never acts on an old one.
            seen_key = (side, record_id)
            keep = side is not key[0] and self._reported(seen_key)
            observed = self._fresh_observation(seen_key, link, keep=keep)
            if observed is not None:
                scene.set(side, observed.record)
                if observed.twin_known:
                    twin_hint = observed
            else:
                scene.set(side, await self.binding.side(side).get(record_id))

        if link is not None and link.state is LinkState.PENDING:
            return await self._settle_intent(link, scene)
        # A tombstone may keep one side only: the other's record is gone, its id reused.
        tombstone = link is not None and link.state is LinkState.DELETED
        unchanged = parked_fingerprint(scene.app, scene.external)
        if link is not None and link.state is LinkState.ERROR and link.failed_fingerprint == unchanged:
            return self._result(Outcome.SUCCESS, "parked-unchanged", scene)
        fully_linked = link is not None and (tombstone or (link.app_id is not None and link.external_id is not None))
        if fully_linked and link is not None and not tombstone:
            waiting = await self._reused_by_our_create(link, scene)
            if waiting is not None:
                return waiting
        if not fully_linked:
            source_side = key[0]
            source = scene.record(source_side)
            if source is None:
                if link is not None:
                    await self.store.drop(link.row)  # a parked half link whose record is gone
                return self._result(Outcome.SUCCESS, "gone", scene)
            # Our own creates under way are asked first: the state says so without a request.
            waiting = await self._create_in_flight(source, source_side, own=link)
            if waiting is not None:
                return waiting
            try:
                twin = await self._lookup_twin(source, source_side, twin_hint)
            except _Ambiguous as exc:
                return await self._park(scene, str(exc))
            scene.set(source_side.other, twin)
        try:
            app_values = view(scene.app, Side.APP, self.policy) if scene.app else None
            ext_values = view(scene.external, Side.EXTERNAL, self.policy) if scene.external else None
        except MappingError as exc:
            return await self._park(scene, str(exc))
        decided = plan(
            app=app_values,
            external=ext_values,
            base=link.base if fully_linked and link else None,
            linked=fully_linked,
            policy=self.policy,
        )
        return await self._apply(decided, scene)

    def as_agreed(self, link: Link | None, record: Record | None, side: Side) -> bool:
        """Is `record` (on `side`) as both sides last agreed, by a synced link's base?

        A change feed reporting such a record (often tandem's own write coming back) has
        nothing for the other side: the other side's changes come from its own feed or
        the resync."""
        if link is None or record is None or link.state is not LinkState.SYNCED or link.base is None:
            return False
        if link.app_id is None or link.external_id is None:
            return False
        try:
            return view(record, side, self.policy) == link.base
        except MappingError:
            return False

    async def carried_over(self, key: Key) -> bool:
        """Did a change source report `key` with a sighting that tandem has carried over
        since? The sighting is older than the link's last change and shows the record as
        that change agreed: tandem's own write came back late, or another reconcile got
        there first. Any later change is the source's to report again, so there is
        nothing to read; without this, each such key cost a read of the record."""
        found = self.observations.get(key)
        if found is None:
            return False
        observed, seen_at = found
        link = await self.store.link_for(self.binding.name, *key)
        if link is None or link.updated_at is None or seen_at >= link.updated_at:
            return False  # a fresh sighting: the reconcile uses it, with no read
        if not self.as_agreed(link, observed.record, key[0]):
            return False
        self.forget_observation(key)
        return True

    def _fresh_observation(self, key: Key, link: Link | None, *, keep: bool = False) -> Observation | None:
        """A sighting that is still news; one older than the link's last change is stale
        (tandem wrote since), and the record is read again instead."""
        found = self.observations.get(key) if keep else self.observations.pop(key, None)
        if found is None:
            return None
        observed, seen_at = found
        if link is not None and link.updated_at is not None and seen_at < link.updated_at:
            return None
        deleted_at = self._deleted_at.get(key)
        if deleted_at is not None and seen_at < deleted_at:
            return None  # seen before tandem deleted it: read again
        return observed

    def _remember_deletion(self, key: Key) -> None:
        self.forget_observation(key)
        self._deleted_at.pop(key, None)
        self._deleted_at[key] = self._clock()
        while len(self._deleted_at) > DELETION_MEMORY:
            del self._deleted_at[next(iter(self._deleted_at))]  # the oldest

    async def _lookup_twin(self, source: Record, side: Side, hint: Observation | None) -> Record | None:
        """The unlinked record on the other side that this one is, by its match fields."""
        if not self.policy.match:
            return None
        other = side.other
        if hint is not None and hint.record.id == source.id:
            if hint.twin is not None:
                self.forget_observation((other, hint.twin.id))
                return hint.twin  # the resync compared complete listings moments ago
            if self.binding.side(other).capabilities.listing_is_proof:
                return None  # and that side's listing holds all there is
            # An API's listing may have left the twin out: a create rests on a lookup.
        try:
            values = view(source, side, self.policy)
        except MappingError:
            return None  # parked by the mapping step that follows
        candidates = await self._unlinked_matches(values, on=other)
        if not candidates:
            return None
        # Ambiguity is symmetric: the twin must also match no other record on this side.
        rivals = await self._unlinked_matches(values, on=side) if len(candidates) == 1 else []
        if len(candidates) > 1 or len(rivals) > 1:
            many, where = (candidates, other) if len(candidates) > 1 else (rivals, side)
            ids = ", ".join(sorted(str(record.id) for record, _ in many)[:5])
            raise _Ambiguous(
                f"{len(many)} {where.value} records match on {', '.join(self.policy.match)}"
                f" ({ids}); pair the right ones with PUT /api/bindings/{self.binding.name}/links"
            )
        twin, parked = candidates[0]
        if parked is not None:
            await self.store.drop(parked.row)  # the pairing supersedes the twin's parked error
        return twin

    async def _unlinked_matches(self, values: Values, *, on: Side) -> list[tuple[Record, Link | None]]:
        """Records on `on` with these match values and no twin yet, each with its parked
        half link if it has one (a parked record without a twin is still unpaired)."""
        found = await self.binding.side(on).find(match_values(values, self.policy, on))
        unpaired = []
        for record in matching(found, values, on, self.policy):
            link = await self.store.link_for(self.binding.name, on, record.id)
            if link is None or (link.state is LinkState.ERROR and None in (link.app_id, link.external_id)):
                unpaired.append((record, link))
        return unpaired

    async def _create_in_flight(self, record: Record, side: Side, *, own: Link | None) -> Result | None:
        """Wait if this record may be the product of one of our own creates under way.

        The intents are read first: once none that could have made this record is
        pending, any create that did make it has stored its link, so the second look
        finds it.
        """
        now = self._clock()
        for intent in await self.store.pending(self.binding.name, side=side):
            if intent.app_id is None and intent.external_id is None:
                # Released: its source's id went to another record. Settle it now; nothing
                # else can reach it before the resync does.
                settled, _ = await settle_intent(intent, binding=self.binding, store=self.store, now=now)
                if settled is not Settled.WAITING:
                    return Result(Outcome.REQUEUE, settled.value, requeue_after=0)
            # Without match fields a server that rewrites a value could hide its creation
            # from the comparison: then any recent intent counts.
            recent = not self.policy.match and now - (intent.updated_at or 0.0) < INTENT_WINDOW
            if recent or could_have_made(record, side, intent.intent_values or {}, self.policy):
                return Result(Outcome.REQUEUE, "create-in-flight", requeue_after=PENDING_RECHECK)
        now_linked = await self.store.link_for(self.binding.name, side, record.id)
        if now_linked is not None and (own is None or now_linked.row != own.row):
            return Result(Outcome.REQUEUE, "linked-meanwhile", requeue_after=0)
        return None

    async def settle_released_intents(self) -> int:
        """Settle write intents whose source id was handed to another record: no key
        reaches them, so the resync asks. Returns how many are still waiting."""
        waiting = 0
        for intent in await self.store.pending(self.binding.name):
            if intent.app_id is None and intent.external_id is None:
                settled, _ = await settle_intent(intent, binding=self.binding, store=self.store, now=self._clock())
                waiting += settled is Settled.WAITING
        return waiting

    async def _reused_by_our_create(self, link: Link, scene: _Scene) -> Result | None:
        """Wait if a linked record's match fields changed because its id was handed to a
        record one of our creates is making (a table that reuses the ids of deleted rows).
        That create's link save finds the id taken and releases this link first."""
        if not self.policy.match or link.base is None:
            return None
        before = match_key(link.base, self.policy)
        for side in Side:
            record = scene.record(side)
            if record is None:
                continue
            try:
                now_key = match_key(view(record, side, self.policy), self.policy)
            except MappingError:
                continue
            if now_key == before:
                continue
            for intent in await self.store.pending(self.binding.name, side=side):
                if could_have_made(record, side, intent.intent_values or {}, self.policy):
                    return self._result(Outcome.REQUEUE, "create-in-flight", scene, after=PENDING_RECHECK)
        return None

    async def _release_if_reused(self, scene: _Scene) -> bool:
        """After our create's link save found the new id taken: the link holding it points
        at a deleted record whose id the table handed out again. Release it."""
        released = False
        for write in scene.writes:
            new_id = scene.id(write.side)
            if write.op is not Op.CREATE or new_id is None:
                continue
            stale = await self.store.link_for(self.binding.name, write.side, new_id)
            if stale is not None and stale.row != scene.row:
                await self.store.release(stale.row, side=write.side, now=self._clock())
                log.warning(
                    "reconcile.id_reused", binding=self.binding.name, side=write.side.value, id=new_id,
                    hint="the table hands out the ids of deleted rows again; the old link keeps its other side",
                )  # fmt: skip
                released = True
        return released

    # --- apply -------------------------------------------------------------------

    async def _apply(self, decided: Plan, scene: _Scene) -> Result:
        if decided.is_noop:
            return self._result(Outcome.SUCCESS, decided.reason, scene)
        deleting = any(write.op is Op.DELETE for write in decided.writes)
        if deleting and not self.guard.admit(links=await self.store.link_count(self.binding.name)):
            return self._result(Outcome.SUCCESS, DELETE_HELD, scene)
        try:
            for write in decided.writes:
                await self._write(write, scene)
        except (PermanentError, MappingError) as exc:
            return await self._park(scene, str(exc))
        except (NotFoundError, ConflictError) as exc:
            # The record changed or went away under us: observe again and re-plan.
            return self._result(Outcome.REQUEUE, "re-observe", scene, error=str(exc), after=0.0)
        except LinkTaken:
            return self._result(Outcome.REQUEUE, "linked-meanwhile", scene, after=0.0)
        now = self._clock()
        app_id, ext_id = scene.id(Side.APP), scene.id(Side.EXTERNAL)

        async def save() -> None:
            await self._update_link(
                decided,
                row=scene.row,
                app_id=app_id,
                ext_id=ext_id,
                now=now,
                previous_base=scene.link.base if scene.link else None,
            )

        try:
            try:
                await save()
            except LinkTaken:
                if not await self._release_if_reused(scene):
                    raise
                await save()
        except LinkTaken:
            return self._result(Outcome.REQUEUE, "linked-meanwhile", scene, after=0.0)
        for conflict in decided.conflicts:
            await self.store.record_conflict(
                self.binding.name, app_id=app_id, external_id=ext_id, conflict=conflict, now=now
            )
        return self._result(Outcome.SUCCESS, decided.reason, scene, conflicts=decided.conflicts)

    async def _write(self, write: Write, scene: _Scene) -> None:
        collection = self.binding.side(write.side)
        problem = null_refusal(write.values, write.op, write.side, self.policy, collection.capabilities)
        if problem is not None:  # the side would refuse it: parked as if it had, unsent
            raise PermanentError(f"{collection.label}: {problem}")
        fields = native(write.values, write.side, self.policy)
        if write.op is Op.CREATE:
            # Where the side takes the id we choose, the intent knows it before the create:
            # settling it is one read, and a create sent twice lands once.
            chosen = RecordId(uuid.uuid4().hex) if collection.capabilities.chosen_ids else None
            await self._record_intent(write, scene, chosen)
            try:
                created = await collection.create(fields, record_id=chosen)
            except ConnectorError as exc:
                if refused(exc):
                    await self._withdraw_intent(scene)
                raise
            scene.set(write.side, created)
        elif write.op is Op.UPDATE:
            record_id = scene.id(write.side)
            assert record_id is not None
            current = scene.record(write.side)
            updated = await collection.update(record_id, fields, current=current)
            if updated is not None:
                scene.set(write.side, updated)
        else:
            record_id = scene.id(write.side)
            assert record_id is not None
            await collection.delete(record_id, current=scene.record(write.side))
            scene.set(write.side, None)
            # A sighting of the record from before its deletion is stale, and once the link
            # is dropped nothing would say so: it would bring the record back as new. One may
            # still arrive (a feed's read that began before the delete), so the time is kept.
            self._remember_deletion((write.side, record_id))
        scene.writes.append(write)
        self._on_write(write)

    async def _withdraw_intent(self, scene: _Scene) -> None:
        """The create was refused: nothing was made, so its intent goes, and the link is as
        it was before (none, or the one the intent was stored on)."""
        assert scene.row is not None
        previous = scene.link
        if previous is None:
            await self.store.drop(scene.row)
            scene.row = None
            return
        await self.store.settle(
            scene.row, app_id=previous.app_id, external_id=previous.external_id,
            state=previous.state, base=previous.base, now=self._clock(),
        )  # fmt: skip

    async def _record_intent(self, write: Write, scene: _Scene, chosen: RecordId | None) -> None:
        """Store the write intent before the create: on the scene's link, or a new one."""
        now = self._clock()
        if scene.row is not None:
            await self.store.mark_pending(scene.row, side=write.side, values=write.values, now=now, intent_id=chosen)
            return
        other = write.side.other
        scene.row = await self.store.insert_link(
            self.binding.name,
            app_id=scene.id(Side.APP) if other is Side.APP else None,
            external_id=scene.id(Side.EXTERNAL) if other is Side.EXTERNAL else None,
            state=LinkState.PENDING,
            now=now,
            intent_side=write.side,
            intent_values=write.values,
            intent_id=chosen,
        )

    async def _update_link(
        self,
        decided: Plan,
        *,
        row: int | None,
        app_id: RecordId | None,
        ext_id: RecordId | None,
        now: float,
        previous_base: dict[str, Canon] | None,
    ) -> None:
        state = LinkState.CONFLICT if decided.conflicts else LinkState.SYNCED
        match decided.link:
            case LinkChange.DROP:
                if row is not None:
                    await self.store.drop(row)
            case LinkChange.TOMBSTONE:
                base = previous_base
                if row is not None:
                    await self.store.settle(
                        row, app_id=app_id, external_id=ext_id, state=LinkState.DELETED,
                        base=base, now=now,
                    )  # fmt: skip
            case LinkChange.SAVE if row is None:
                await self.store.insert_link(
                    self.binding.name, app_id=app_id, external_id=ext_id, state=state,
                    base=decided.base, now=now,
                )  # fmt: skip
            case LinkChange.SAVE:
                assert row is not None
                await self.store.settle(row, app_id=app_id, external_id=ext_id, state=state, base=decided.base, now=now)
            case LinkChange.KEEP:
                pass

    # --- write intents -----------------------------------------------------------

    async def _settle_intent(self, link: Link, scene: _Scene) -> Result:
        assert link.intent_side is not None
        source = scene.record(link.intent_side.other)
        settled, message = await settle_intent(
            link, binding=self.binding, store=self.store, now=self._clock(), source=source
        )
        if settled is Settled.AMBIGUOUS:
            return self._result(Outcome.ERROR, settled.value, scene, error=message)
        if settled is Settled.WAITING:  # the create may still land: look again when it cannot
            return self._result(Outcome.REQUEUE, settled.value, scene, after=float(message))
        return self._result(Outcome.REQUEUE, settled.value, scene, after=0.0)

    # --- parking -----------------------------------------------------------------

    async def _park(self, scene: _Scene, error: str) -> Result:
        now = self._clock()
        fp = parked_fingerprint(scene.app, scene.external)
        row = scene.row
        if row is None:
            try:
                await self.store.insert_link(
                    self.binding.name,
                    app_id=scene.id(Side.APP),
                    external_id=scene.id(Side.EXTERNAL),
                    state=LinkState.ERROR,
                    now=now,
                    error=error,
                    failed_fingerprint=fp,
                )
            except LinkTaken:
                return self._result(Outcome.REQUEUE, "linked-meanwhile", scene, after=0.0)
        else:
            await self.store.park(row, error=error, failed_fingerprint=fp, now=now)
        return self._result(Outcome.ERROR, "parked", scene, error=error)

    def _result(
        self,
        outcome: Outcome,
        action: str,
        scene: _Scene,
        *,
        error: str | None = None,
        after: float | None = None,
        conflicts: tuple[FieldConflict, ...] = (),
    ) -> Result:
        return Result(
            outcome,
            action,
            app_id=scene.id(Side.APP),
            external_id=scene.id(Side.EXTERNAL),
            error=error,
            requeue_after=after,
            writes=tuple(scene.writes),
            conflicts=conflicts,
        )


class _Ambiguous(Exception):
    """More than one unlinked record on the other side matches."""
