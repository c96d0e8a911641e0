"""The resync's simple decisions carried out a page at a time instead of a key at a time.

An initial sync is mostly two kinds of work: pairing records that already match, and
creating on one side the records only the other side has. Key by key, each costs a few
state writes and, for app rows, a commit of the app's database. Here a page of them
costs one state transaction for the links and write intents, one app transaction for
the rows (where the table can take a batch), and one state transaction to settle.

The safety rules are the reconcile's own: every key is claimed on the work queue first
(no worker holds it meanwhile), the write intents are stored before any create, and
anything out of the ordinary (a record that fails, an id linked meanwhile, an error
whose outcome is unknown) goes back on the queue for the reconcile to settle alone.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import NamedTuple, cast

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream

from connectors.base import BatchCreating, Collection, ConnectorError, PermanentError, Record, RecordId
from reconcilers.binding import Binding
from reconcilers.canonical import Canon, fingerprint
from reconcilers.intents import INTENT_WINDOW, could_have_made, refused
from reconcilers.mapping import MappingError, match_values, matching, native, null_refusal, view
from reconcilers.model import Link, LinkState, Op, Policy, Side
from reconcilers.observe import Key, Observation, ResyncWork
from reconcilers.plan import LinkChange, create_payload, plan
from reconcilers.reconcile import parked_fingerprint
from reconcilers.resync import BatchPath
from reconcilers.state import Agreement, Intent, NewLink, StateStore
from reconcilers.workqueue import WorkQueue

log = structlog.get_logger(__name__)

PAGE = 1000  # records per transaction: a listed page's worth, so each page commits once
LANES = 2


@dataclass(frozen=True, slots=True)
class Pairing:
    app: Record
    external: Record
    base: dict[str, Canon]


@dataclass(frozen=True, slots=True)
class _Part:
    """A part of a resync's work handed to the lanes."""

    pairings: list[Pairing]
    creations: list[Creation]


def _sole(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error behind a task group's group, as callers catch it; else the group."""
    return group.exceptions[0] if len(group.exceptions) == 1 else group


class Creation(NamedTuple):
    """A create the batch carries out (a tuple: one is made per record imported)."""

    source: Record
    side: Side
    """The side the source is on; the create goes to the other."""
    values: dict[str, Canon]
    encoded: str
    """`values` as `fingerprint` writes them: once, for the intent and the base."""


def simple_decisions(
    work: ResyncWork, policy: Policy, *, in_flight: Sequence[Link] = (), now: float = 0.0
) -> tuple[list[Pairing], list[Creation]]:
    """The resync's keys whose plan, from complete listings, is a plain pairing or a plain
    create: the same `plan` the reconcile runs, with nothing else to look up.

    A record that one of our creates still in flight could have made (`in_flight`, the
    pending write intents) is left to the reconcile, which waits for that create to settle."""
    pairings: list[Pairing] = []
    creations: list[Creation] = []
    for key in work.keys:
        seen = work.observations.get(key)
        if seen is None or not seen.twin_known:
            continue
        side = key[0]
        records = [(seen.record, side)] + ([(seen.twin, side.other)] if seen.twin is not None else [])
        if any(_may_be_in_flight(record, on, in_flight, policy, now) for record, on in records):
            continue
        try:
            # The listing's digest is the record's view, encoded: decoding it is cheaper.
            values = json.loads(seen.digest) if seen.digest is not None else view(seen.record, side, policy)
            twin = view(seen.twin, side.other, policy) if seen.twin is not None else None
        except MappingError:
            continue  # parked by the reconcile, with the error
        app, external = (values, twin) if side is Side.APP else (twin, values)
        decided = plan(app=app, external=external, base=None, linked=False, policy=policy)
        if decided.conflicts or decided.link is not LinkChange.SAVE or decided.base is None:
            continue
        if seen.twin is not None and not decided.writes and side is Side.APP:
            pairings.append(Pairing(seen.record, seen.twin, dict(decided.base)))
        elif seen.twin is None and [w.op for w in decided.writes] == [Op.CREATE]:
            payload = dict(decided.writes[0].values)
            # Every field written: the payload is the view, and its encoding the digest.
            digest = seen.digest if len(payload) == len(values) else None
            encoded = digest if digest is not None else fingerprint(payload)
            creations.append(Creation(seen.record, side, payload, encoded))
    return pairings, creations


def listed_creations(
    records: Sequence[Record], side: Side, policy: Policy, *, in_flight: Sequence[Link] = (), now: float = 0.0
) -> tuple[list[Creation], ResyncWork]:
    """The creates of a listed page of records no link holds, from `side`, where the
    other side listed empty. Each record's whole plan is then a create of its writable
    values (`create_payload`), decided from its view without classifying it or building
    the plan. A record that does not map, may not be created, or could be one of our
    creates in flight is left to the reconcile: it is in the work returned."""
    creations: list[Creation] = []
    rest = ResyncWork()
    target = side.other
    # Where every field may be written to the target, each payload is the record's whole
    # view (as `create_payload` would copy it): asked once per page, not per record.
    whole_view = policy.creates.allows(target) and len(policy.writable_to(target)) == len(policy.fields)
    for record in records:
        try:
            values = view(record, side, policy)
        except MappingError:
            key = (side, record.id)
            rest.add(key, (key, Observation(record, None, True)))  # parked by the reconcile, with the error
            continue
        encoded = fingerprint(values)
        payload = values if whole_view else create_payload(values, on=target, policy=policy)
        if payload is None or (in_flight and _may_be_in_flight(record, side, in_flight, policy, now)):
            key = (side, record.id)
            rest.add(key, (key, Observation(record, None, True, encoded)))
            continue
        if len(payload) != len(values):
            encoded = fingerprint(payload)  # else every field is written: the view's encoding is the payload's
        creations.append(Creation(record, side, payload, encoded))
    return creations, rest


def _may_be_in_flight(record: Record, side: Side, in_flight: Sequence[Link], policy: Policy, now: float) -> bool:
    for intent in in_flight:
        if intent.intent_side is not side:
            continue
        # Without match fields any recent intent counts, as in the reconcile.
        if not policy.match and now - (intent.updated_at or 0.0) < INTENT_WINDOW:
            return True
        if could_have_made(record, side, intent.intent_values or {}, policy):
            return True
    return False


class BatchApplier:
    def __init__(
        self,
        binding: Binding,
        store: StateStore,
        queue: WorkQueue[Key],
        *,
        workers: int,
        clock: Callable[[], float],
        on_writes: Callable[[Side, Op, int], None],
    ) -> None:
        self.binding = binding
        self.store = store
        self.queue = queue
        self.workers = max(1, workers)
        self._clock = clock
        self._on_writes = on_writes  # (side, op, how many) made
        self._own: set[int] = set()  # the rows of this session's write intents
        self._own_stores = 0  # this session's calls storing intents, as the store counts them
        self._left_pending = 0  # times this session left intents of its own pending, to the reconcile
        self._in_flight_read: tuple[tuple[int, int], list[Link]] | None = None  # the counts when read, and what

    @property
    def policy(self) -> Policy:
        return self.binding.policy

    @asynccontextmanager
    async def session(self) -> AsyncIterator[BatchPath]:
        """A resync's batch path: `take` decides a part of the work (the pure
        `simple_decisions`), hands it to the lanes and returns the keys they took over;
        `take_listed` does the same for a listed page bound for an empty side
        (`listed_creations`); leaving the block waits for the lanes to finish.

        Two lanes, so one page's rows go into the app while another's links are written;
        a hand-over waits for a free lane, so a resync holds a few pages, never a collection. A key
        a lane cannot carry out (claimed by a worker meanwhile, linked meanwhile, an
        outcome unknown) goes on the queue for the reconcile."""
        send, receive = anyio.create_memory_object_stream[_Part]()
        totals = {"pairings": 0, "creates": 0}
        self._own = set()
        self._own_stores = 0
        self._left_pending = 0
        self._in_flight_read = None

        async def take(work: ResyncWork) -> set[Key]:
            sides = {side for side, _ in work.keys}
            if any(seen.twin is not None for seen in work.observations.values()):
                sides.add(Side.EXTERNAL)  # a pairing's twin
            in_flight = await self._in_flight(sides)
            pairings, creations = simple_decisions(work, self.policy, in_flight=in_flight, now=self._clock())
            if not pairings and not creations:
                return set()
            totals["pairings"] += len(pairings)
            totals["creates"] += len(creations)
            await send.send(_Part(pairings, creations))
            taken = {(Side.APP, p.app.id) for p in pairings} | {(Side.EXTERNAL, p.external.id) for p in pairings}
            return taken | {(c.side, c.source.id) for c in creations}

        async def take_listed(side: Side, records: Sequence[Record]) -> ResyncWork:
            in_flight = await self._in_flight({side})
            creations, rest = listed_creations(records, side, self.policy, in_flight=in_flight, now=self._clock())
            if creations:
                totals["creates"] += len(creations)
                await send.send(_Part([], creations))
            return rest

        try:
            async with anyio.create_task_group() as tg:
                for _ in range(LANES):
                    tg.start_soon(self._lane, receive.clone())
                receive.close()
                async with send:
                    yield BatchPath(take, take_listed)
        except BaseExceptionGroup as group:
            raise _sole(group) from None
        if any(totals.values()):
            log.info("resync.batched", binding=self.binding.name, **totals)

    async def _in_flight(self, sides: set[Side]) -> list[Link]:
        """The creates others have in flight into `sides`, as each part is taken: a page
        may be listed while a worker creates. Read again only once others have stored an
        intent, or we have left one of ours pending, since the last read: otherwise intents
        only go away, and one settled meanwhile only sends a record to the reconcile. That
        spares the state connection a read for every page of an import. The counts are
        taken before the read, so a change during it is read next time. Our own intents are
        left out (one stored but not yet noted only sends a record to the reconcile)."""
        counts = (self.store.intents_stored - self._own_stores, self._left_pending)
        if self._in_flight_read is None or self._in_flight_read[0] != counts:
            found = await self.store.pending(self.binding.name, excluding=self._own)
            self._in_flight_read = (counts, found)
        return [link for link in self._in_flight_read[1] if link.intent_side in sides]

    async def _lane(self, parts: MemoryObjectReceiveStream[_Part]) -> None:
        async with parts:
            async for part in parts:
                for start in range(0, len(part.pairings), PAGE):
                    await self._pair(part.pairings[start : start + PAGE])
                for start in range(0, len(part.creations), PAGE):
                    await self._create(part.creations[start : start + PAGE])

    # --- pairing -----------------------------------------------------------------

    async def _pair(self, pairings: Sequence[Pairing]) -> None:
        claimed: list[tuple[Pairing, tuple[Key, Key]]] = []
        for pairing in pairings:
            keys = ((Side.APP, pairing.app.id), (Side.EXTERNAL, pairing.external.id))
            if self._claim(*keys):
                claimed.append((pairing, keys))
            else:
                self.queue.add(keys[0])  # a worker has one of them: it looks again after
        links = [NewLink(p.app.id, p.external.id, LinkState.SYNCED, base=p.base) for p, _ in claimed]
        try:
            rows = await self.store.insert_links_many(self.binding.name, links, now=self._clock())
        finally:
            self.queue.done_many(key for _, keys in claimed for key in keys)
        for (_, keys), row in zip(claimed, rows, strict=True):
            if row is None:
                self.queue.add(keys[0])  # linked meanwhile: the reconcile looks again

    # --- creating ----------------------------------------------------------------

    async def _create(self, creations: Sequence[Creation]) -> None:
        claimed: list[Key] = []
        by_source: dict[Side, list[Creation]] = {side: [] for side in Side}
        for creation in creations:
            key = (creation.side, creation.source.id)
            if self._claim(key):
                claimed.append(key)
                by_source[creation.side].append(creation)
            else:
                self.queue.add(key)  # a worker has it: it looks again after
        try:
            for target in Side:
                if batch := by_source[target.other]:
                    await self._create_on(target, batch)
        finally:
            self.queue.done_many(claimed)

    async def _create_on(self, target: Side, batch: Sequence[Creation]) -> None:
        batch = await self._not_found(target, batch)
        if not batch:
            return
        chooses = self.binding.side(target).capabilities.chosen_ids
        intents: list[Intent] = [
            (c.source.id, c.encoded, RecordId(uuid.uuid4().hex) if chooses else None) for c in batch
        ]
        try:
            rows = await self.store.insert_intents_many(
                self.binding.name, intents, source=target.other, now=self._clock()
            )
        finally:
            self._own_stores += 1  # in step with the store's count: no await between the two
        own = {row for row in rows if row is not None}
        self._own |= own
        closed: set[int] = set()
        try:
            closed = await self._send_and_settle(target, batch, rows, intents)
        finally:
            self._own -= own  # settled, parked, or unknown and left to the reconcile
            if own - closed:
                self._left_pending += 1  # in flight to the next read: no longer left out as ours

    async def _not_found(self, target: Side, batch: Sequence[Creation]) -> Sequence[Creation]:
        """The creations whose twin a lookup on `target` does not find. Where the target's
        listing is no proof (an API's may answer `[]` or cut a page short while the records
        exist), each is looked up by its match fields, as the reconcile would; one that a
        lookup finds, or that cannot be looked up now, goes to the reconcile, which pairs it."""
        collection = self.binding.side(target)
        if collection.capabilities.listing_is_proof or not self.policy.match:
            return batch
        found = [True] * len(batch)

        async def look(index: int) -> None:
            creation = batch[index]
            try:
                values = view(creation.source, creation.side, self.policy)
                candidates = await collection.find(match_values(values, self.policy, target))
            except (ConnectorError, MappingError):
                return  # unknown: the reconcile looks again
            found[index] = bool(matching(candidates, values, target, self.policy))

        await self._limited(len(batch), look)
        for creation, seen in zip(batch, found, strict=True):
            if seen:
                self.queue.add((creation.side, creation.source.id))
        return [creation for creation, seen in zip(batch, found, strict=True) if not seen]

    async def _send_and_settle(
        self, target: Side, batch: Sequence[Creation], rows: Sequence[int | None], intents: Sequence[Intent]
    ) -> set[int]:
        """Carry out the creates whose intents were stored (`rows`); returns the rows it
        settled or parked, the others being left pending for the reconcile."""
        todo = [(c, row, intent) for c, row, intent in zip(batch, rows, intents, strict=True) if row is not None]
        for creation, row in zip(batch, rows, strict=True):
            if row is None:
                self.queue.add((creation.side, creation.source.id))  # linked meanwhile
        # Into the app, mapped values are already its fields: the create only reads them, so
        # they go as they are rather than copied (`native`) for every record.
        app = target is Side.APP
        payloads = [c.values if app else native(c.values, target, self.policy) for c, _, _ in todo]
        results = await self._send_unless_refused(target, todo, payloads)

        agreements: list[Agreement] = []
        closed: set[int] = set()
        now = self._clock()
        for (creation, row, _), result in zip(todo, results, strict=True):
            if not isinstance(result, BaseException):
                agreements.append((row, result))  # the new record's id
            elif isinstance(result, PermanentError):
                # Parked as the reconcile parks: retried once the record changes.
                source_app = creation.source if creation.side is Side.APP else None
                source_ext = creation.source if creation.side is Side.EXTERNAL else None
                fingerprint_now = parked_fingerprint(source_app, source_ext)
                await self.store.park(row, error=str(result), failed_fingerprint=fingerprint_now, now=now)
                closed.add(row)
                log.warning(
                    "reconcile.done", result="error", action="parked", binding=self.binding.name,
                    side=creation.side.value, id=creation.source.id, error=str(result),
                )  # fmt: skip
            elif refused(result):  # nothing was made: the intent goes, the reconcile tries again
                await self.store.drop(row)
                closed.add(row)
                self.queue.add((creation.side, creation.source.id))
            else:
                self.queue.add((creation.side, creation.source.id))  # outcome unknown: the reconcile settles it
        self._on_writes(target, Op.CREATE, len(agreements))
        unsettled = set(await self.store.settle_many(agreements, created_on=target, now=now)) if agreements else set()
        for creation, row, _ in todo:
            if row in unsettled:
                self.queue.add((creation.side, creation.source.id))
        return closed | {row for row, _ in agreements if row not in unsettled}

    async def _send_unless_refused(
        self, target: Side, todo: Sequence[tuple[Creation, int | None, Intent]], payloads: list[dict[str, object]]
    ) -> list[RecordId | BaseException]:
        """`_send`, less the creates the target would refuse for a null (`null_refusal`):
        those fail as a refusal would, without a request."""
        collection = self.binding.side(target)
        table = collection.capabilities
        refusals = [null_refusal(c.values, Op.CREATE, target, self.policy, table) for c, _, _ in todo]
        sendable = [index for index, refusal in enumerate(refusals) if refusal is None]
        sent = iter(
            await self._send(target, [payloads[i] for i in sendable], [todo[i][2][2] for i in sendable])
            if sendable
            else []
        )
        return [
            next(sent) if refusal is None else PermanentError(f"{collection.label}: {refusal}") for refusal in refusals
        ]

    async def _send(
        self, target: Side, payloads: list[dict[str, object]], chosen: list[RecordId | None]
    ) -> list[RecordId | BaseException]:
        """Each payload's created record's id, or the error of its create. Where the collection
        creates in batches, it gets chunks of its batch size, up to `workers` at a time."""
        collection = self.binding.side(target)
        size = collection.capabilities.batch_create
        if not size or any(chosen):
            return await self._send_each(collection, payloads, chosen)
        chunks = [payloads[start : start + size] for start in range(0, len(payloads), size)]
        results: list[list[RecordId | BaseException]] = [[] for _ in chunks]

        async def send_chunk(index: int) -> None:
            chunk = chunks[index]
            try:
                results[index] = list(await cast(BatchCreating, collection).create_many(chunk))
            except PermanentError:
                # One row refused the whole chunk: one at a time, so it alone fails.
                results[index] = await self._send_each(collection, chunk, [None] * len(chunk))
            except ConnectorError as exc:
                results[index] = [exc for _ in chunk]

        await self._limited(len(chunks), send_chunk)
        return [result for chunk_results in results for result in chunk_results]

    async def _send_each(
        self, collection: Collection, payloads: list[dict[str, object]], chosen: list[RecordId | None]
    ) -> list[RecordId | BaseException]:
        results: list[RecordId | BaseException] = [PermanentError("not sent")] * len(payloads)

        async def one(index: int) -> None:
            try:
                results[index] = (await collection.create(payloads[index], record_id=chosen[index])).id
            except ConnectorError as exc:
                results[index] = exc

        await self._limited(len(payloads), one)
        return results

    async def _limited(self, count: int, job: Callable[[int], Awaitable[None]]) -> None:
        """`job(0)` to `job(count - 1)`, at most `workers` at a time."""
        limiter = anyio.Semaphore(self.workers)

        async def run(index: int) -> None:
            async with limiter:
                await job(index)

        async with anyio.create_task_group() as tg:
            for index in range(count):
                tg.start_soon(run, index)

    def _claim(self, *keys: Key) -> bool:
        taken: list[Key] = []
        for key in keys:
            if not self.queue.claim(key):
                for held in taken:
                    self.queue.done(held)
                return False
            taken.append(key)
        return True
