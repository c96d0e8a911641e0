"""One binding at run time: its work queue, its workers and the sources that feed them.

Sources only put keys on the queue: the app change feed, the external changed-since
feed where configured, and the periodic full resync (also run at start-up and on an
operator's request). Workers take keys and run reconcile(key) under a timeout; one
function decides what follows each result, as a controller does: success forgets the
key's backoff, an error requeues it after its backoff (or the server's Retry-After),
a requeue comes back after the delay it asked for.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import cast

import anyio
import structlog
from prometheus_client import Counter

from connectors.base import BatchReading, ConnectorError, PushingCollection, Record, RecordId, TransientError
from reconcilers.batch import BatchApplier
from reconcilers.binding import Binding
from reconcilers.events import events_for
from reconcilers.guard import DeletionGuard
from reconcilers.metrics import SyncMetrics
from reconcilers.model import Op, Side
from reconcilers.observe import Key, Observation
from reconcilers.plan import Write
from reconcilers.reconcile import DELETE_HELD, Outcome, Reconciler, Result
from reconcilers.resync import ListingLimits, Observed, observe
from reconcilers.state import BindingState, StateStore, state_busy
from reconcilers.workqueue import WorkQueue

log = structlog.get_logger(__name__)

RESYNC_RETRY = 5.0
"""Seconds before a failed or incomplete resync is tried again, doubling up to the interval."""


@dataclass(frozen=True, slots=True)
class Timing:
    workers: int = 8
    poll_interval: float = 5.0
    """Between polls of the external changed-since feed (each costs API requests)."""
    app_poll_interval: float = 0.2
    """Between polls of the app's change log (an indexed read of its sequence)."""
    resync_interval: float = 300.0
    reconcile_timeout: float = 60.0
    gauge_interval: float = 5.0
    jitter: float = 0.1
    """Intervals vary by up to this fraction, so bindings and restarts do not poll in step."""
    listing: ListingLimits = field(default_factory=ListingLimits)
    """When a listing that never ends is cut off."""

    def wait(self, interval: float) -> float:
        return interval * random.uniform(1 - self.jitter, 1 + self.jitter)


class Controller:
    def __init__(
        self,
        binding: Binding,
        store: StateStore,
        metrics: SyncMetrics,
        *,
        timing: Timing,
        outbox: Callable[[], None] | None = None,
    ) -> None:
        """`outbox`, when given, is called after events for the app were added to the outbox."""
        self.binding = binding
        self.name = binding.name
        self.store = store
        self.metrics = metrics
        self.timing = timing
        self.queue: WorkQueue[Key] = WorkQueue(observer=metrics.queue_observer(binding.name))
        self._write_counters: dict[tuple[Side, Op], Counter] = {}
        self._reported: set[Key] = set()  # keys a feed or webhook reported and not yet reconciled
        self.guard = DeletionGuard(binding.policy.delete_guard)
        self.reconciler = Reconciler(
            binding, store, on_write=self._count_write, reported=self._reported.__contains__, guard=self.guard
        )
        self._batch = BatchApplier(
            binding, store, self.queue, workers=timing.workers, clock=time.time, on_writes=self._count_writes
        )
        self.started = False
        self.listing_fault: str | None = None
        """Why the last resync's listing would never end, where it would not (not ready)."""
        self._resync_wake = anyio.Event()
        self._resync_lock = anyio.Lock()
        self._first_resync = anyio.Event()
        self._allow_deletes = False
        self._retry_parked = False
        self._touched: set[Key] = set()  # keys the change feeds reported since the last resync began
        self._feed_wake = {side: anyio.Event() for side in Side}
        self._echoes = metrics.echoes.labels(self.name)
        self._outbox = outbox
        self._active = metrics.active_workers.labels(self.name)

    # --- intake ------------------------------------------------------------------

    def enqueue(self, key: Key, observed: Record | None = None, *, seen_at: float = 0.0) -> None:
        """A source says this key changed; what it saw (if anything) replaces older sightings.

        `seen_at` is when the source began reading (a sighting is no newer than that)."""
        if observed is not None:
            self.reconciler.observations[key] = (Observation(observed), seen_at)
        else:
            self.reconciler.forget_observation(key)
        self._touched.add(key)
        self._reported.add(key)
        self.queue.add(key)

    def poke(self, side: Side) -> None:
        """Look at `side`'s changes now: read its feed, or resync where it has none."""
        if self.binding.side(side).capabilities.change_feed:
            self._feed_wake[side].set()
        else:
            self._resync_wake.set()

    def request_resync(self, *, allow_deletes: bool = False) -> None:
        """An operator asks for a resync now (which also retries parked records)."""
        self._allow_deletes = self._allow_deletes or allow_deletes
        self._retry_parked = True
        self._resync_wake.set()

    # --- lifecycle ---------------------------------------------------------------

    async def run(self, *, stopping: anyio.Event, shutdown_timeout: float) -> None:
        """Run until `stopping` is set, then finish in-flight work within the timeout."""
        self.metrics.resync_interval.labels(self.name).set(self.timing.resync_interval)
        last = (await self.store.binding_state(self.name)).last_resync_at
        if last is not None:
            self.metrics.last_resync.labels(self.name).set(last)
        async with anyio.create_task_group() as workers:
            async with anyio.create_task_group() as sources:
                sources.start_soon(self.queue.run_delays)
                for link in await self.store.pending(self.name):
                    key_side = Side.APP if link.app_id is not None else Side.EXTERNAL
                    record_id = link.app_id if key_side is Side.APP else link.external_id
                    if record_id is not None:
                        self.queue.add((key_side, record_id))
                for number in range(self.timing.workers):
                    workers.start_soon(self._worker, name=f"{self.name}:worker:{number}")
                sources.start_soon(self._resync_loop, name=f"{self.name}:resync")
                for side in Side:
                    capabilities = self.binding.side(side).capabilities
                    if capabilities.change_feed:
                        sources.start_soon(self._feed_loop, side, name=f"{self.name}:feed:{side}")
                    if capabilities.push:
                        pushing = cast(PushingCollection, self.binding.side(side))
                        sources.start_soon(pushing.watch, partial(self.poke, side), name=f"{self.name}:watch:{side}")
                sources.start_soon(self._gauge_loop, name=f"{self.name}:gauges")
                self.started = True
                await stopping.wait()
                self.started = False
                sources.cancel_scope.cancel()
            self.queue.shut_down()  # workers finish the key in hand and return
            workers.cancel_scope.deadline = anyio.current_time() + shutdown_timeout
        if workers.cancel_scope.cancelled_caught:
            log.warning("binding.shutdown_timeout", binding=self.name)

    # --- workers -----------------------------------------------------------------

    async def _worker(self) -> None:
        while (key := await self.queue.get()) is not None:
            self._active.inc()
            started = time.perf_counter()
            reported = key in self._reported
            self._reported.discard(key)
            try:
                result = await self._reconcile(key, reported=reported)
            finally:
                self._active.dec()
                self.queue.done(key)
            if reported and isinstance(result, Result) and not result.writes and result.action == "in-sync":
                self._echoes.inc()  # a change notification that found both sides agreeing
            if self._outbox is not None and isinstance(result, Result):
                await self._notify(result)
            if isinstance(result, Result) and result.action == DELETE_HELD:
                await self._record_held(key)
            self._settle(key, result, seconds=time.perf_counter() - started)

    async def _reconcile(self, key: Key, *, reported: bool = False) -> Result | BaseException:
        try:
            with anyio.fail_after(self.timing.reconcile_timeout):
                if reported and await self.reconciler.carried_over(key):
                    return Result(Outcome.SUCCESS, "in-sync")
                return await self.reconciler.reconcile(key)
        except TimeoutError:
            return TransientError(f"reconcile timed out after {self.timing.reconcile_timeout}s")
        except ConnectorError as exc:
            return exc
        except Exception as exc:  # unknown faults count as transient, with a traceback
            if state_busy(exc):
                return TransientError(f"state database: {exc}")
            log.exception("reconcile.crashed", binding=self.name, side=key[0].value, id=key[1])
            return exc

    async def _notify(self, result: Result) -> None:
        events = events_for(self.name, result, at=time.time())
        if not events or self._outbox is None:
            return
        try:
            with anyio.CancelScope(shield=True):  # the writes happened: so must their events
                await self.store.add_events(self.name, events, now=time.time())
        except Exception:  # the sync goes on; the operator learns from the log
            log.exception("notify.outbox_failed", binding=self.name, events=len(events))
            return
        self._outbox()

    def _settle(self, key: Key, result: Result | BaseException, *, seconds: float) -> None:
        """The one place that decides what happens to a key after its reconcile."""
        self.metrics.reconcile_duration.labels(self.name).observe(seconds)
        fields: dict[str, object] = {
            "binding": self.name,
            "side": key[0].value,
            "id": key[1],
            "duration_ms": round(seconds * 1000, 2),
        }
        if isinstance(result, BaseException):
            retry_after = getattr(result, "retry_after", None) or 0.0
            delay = self.queue.add_rate_limited(key, at_least=retry_after)
            self._count("error")
            log.warning(
                "reconcile.done", result="error", error=str(result) or type(result).__name__,
                retry_in_s=round(delay, 3), **fields,
            )  # fmt: skip
            return
        self._count(result.outcome.value)
        for _ in result.conflicts:
            self.metrics.conflicts.labels(self.name).inc()
        fields |= {"app_id": result.app_id, "external_id": result.external_id, "action": result.action}
        if result.outcome is Outcome.REQUEUE:
            self.queue.add_after(key, result.requeue_after or 0.0)
            log.debug("reconcile.done", result="requeue", error=result.error, **fields)
            return
        self.queue.forget(key)
        if result.outcome is Outcome.ERROR:
            log.warning("reconcile.done", result="error", error=result.error, **fields)
        elif result.writes or result.conflicts:
            writes = [f"{w.op.value}:{w.side.value}" for w in result.writes]
            log.info("reconcile.done", result="success", writes=writes, **fields)
        else:
            log.debug("reconcile.done", result="success", **fields)

    def _count(self, result: str) -> None:
        self.metrics.reconcile_total.labels(self.name, result).inc()
        if result == "error":
            self.metrics.reconcile_errors.labels(self.name).inc()

    def _count_write(self, write: Write) -> None:
        self._count_writes(write.side, write.op, 1)

    def _count_writes(self, side: Side, op: Op, count: int) -> None:
        counter = self._write_counters.get((side, op))
        if counter is None:  # a child's lookup by labels costs more than its increment
            counter = self.metrics.writes.labels(self.name, side.value, op.value)
            self._write_counters[(side, op)] = counter
        counter.inc(count)

    # --- sources -----------------------------------------------------------------

    async def _resync_loop(self) -> None:
        failures = 0
        while True:
            allow, self._allow_deletes = self._allow_deletes, False
            retry, self._retry_parked = self._retry_parked, False
            failures += 1
            try:
                observed = await self.resync(allow_deletes=allow, retry_parked=retry)
                if observed.complete:
                    failures = 0
            except ConnectorError as exc:
                log.warning("resync.failed", binding=self.name, error=str(exc))
            except sqlite3.OperationalError as exc:
                if not state_busy(exc):
                    raise
                log.warning("resync.failed", binding=self.name, error=f"state database: {exc}")
            self._first_resync.set()
            # A failed or incomplete resync is tried again soon, not a whole interval later:
            # at start-up, the initial sync would otherwise wait that long.
            interval = self.timing.resync_interval
            wait = min(interval, RESYNC_RETRY * 2 ** (failures - 1)) if failures else interval
            with anyio.move_on_after(self.timing.wait(wait)):
                await self._resync_wake.wait()
            self._resync_wake = anyio.Event()

    async def resync(self, *, allow_deletes: bool = False, retry_parked: bool = False) -> Observed:
        async with self._resync_lock:
            started = time.perf_counter()
            if retry_parked:
                await self.store.retry_parked(self.name)
            await self.reconciler.settle_released_intents()
            self._touched = set()
            observed = await observe(
                name=self.name,
                app=self.binding.app,
                external=self.binding.external,
                store=self.store,
                policy=self.binding.policy,
                allow_deletes=allow_deletes,
                # With an outbox, events for the app are the reconcile's to make, one by one.
                batch=self._batch.session if self._outbox is None else None,
                too_many=self.guard.blocks,
                limits=self.timing.listing,
            )
            self.listing_fault = observed.listing_fault
            self.metrics.listing_stalled.labels(self.name).set(1 if self.listing_fault else 0)
            if allow_deletes:
                self.guard.grant(len(observed.work.deletions))
            elif not observed.blocked and observed.complete:
                self.guard.clear_held()
            # Older sightings are dropped (their keys fall back to a read), and so are this
            # resync's sightings of keys a change feed reported while the listings ran.
            self.reconciler.observations.clear()
            self.reconciler.observations.update(
                (key, (seen, observed.listed_at))
                for key, seen in observed.work.observations.items()
                if key not in self._touched
            )
            for key in observed.work.keys:
                self.queue.add(key)
            await self._record_resync(observed, seconds=time.perf_counter() - started)
            return observed

    async def _record_held(self, key: Key) -> None:
        """A deletion a feed or webhook reported was held back by the guard."""
        self.metrics.deletes_blocked.labels(self.name).inc()
        log.warning(
            "reconcile.delete_held", binding=self.name, side=key[0].value, id=key[1], held=self.guard.held,
            hint=f"tandem resync --binding {self.name} --allow-deletes",
        )  # fmt: skip
        try:
            previous = await self.store.binding_state(self.name)
            held = max(previous.deletes_blocked, self.guard.held)
            await self.store.set_binding_state(
                self.name, replace(previous, deletes_blocked=held, blocked_at=previous.blocked_at or time.time())
            )
        except sqlite3.OperationalError as exc:
            if not state_busy(exc):
                raise
            log.warning("reconcile.delete_held_not_stored", binding=self.name, error=str(exc))

    async def _record_resync(self, observed: Observed, *, seconds: float) -> None:
        now = time.time()
        previous = await self.store.binding_state(self.name)
        blocked = len(observed.blocked)
        held = max(blocked, self.guard.held)  # the resync's own, or those held one at a time
        if blocked:
            self.metrics.deletes_blocked.labels(self.name).inc()
            log.warning(
                "resync.deletes_blocked", binding=self.name, deletes=blocked, links=observed.links,
                hint=f"tandem resync --binding {self.name} --allow-deletes",
            )  # fmt: skip
        result = "complete" if observed.complete else "incomplete"
        why = observed.app.error or observed.external.error
        stored_result = result if observed.complete or why is None else f"incomplete: {why}"[:500]
        await self.store.set_binding_state(
            self.name,
            BindingState(
                deletes_blocked=held,
                blocked_at=(previous.blocked_at or now) if held else None,
                last_resync_at=now if observed.complete else previous.last_resync_at,
                last_resync_result=stored_result,
            ),
        )
        if observed.complete:
            self.metrics.last_resync.labels(self.name).set(now)
        log.info(
            "resync.done", binding=self.name, result=result, app_records=observed.app.count,
            external_records=observed.external.count, enqueued=len(observed.work.keys),
            unchanged=observed.work.unchanged, deletes=len(observed.work.deletions),
            deletes_blocked=blocked, duration_ms=round(seconds * 1000, 1),
        )  # fmt: skip

    async def _feed_loop(self, side: Side) -> None:
        # The first resync sees everything there is; a feed read before it ends would only
        # race it for the same records.
        await self._first_resync.wait()
        collection = self.binding.side(side)
        source = f"{side.value}-changes"
        interval = self.timing.app_poll_interval if side is Side.APP else self.timing.poll_interval
        cursor = await self.store.cursor(self.name, source)
        while True:
            started = time.time()
            try:
                batch = await collection.changes(cursor)
            except ConnectorError as exc:
                log.warning("feed.failed", binding=self.name, side=side.value, error=str(exc))
                await anyio.sleep(self.timing.wait(max(interval, 1.0)))
                continue
            if batch.history_lost:
                # Deletions may have slipped past the feed: only a full resync can tell.
                log.warning("feed.history_lost", binding=self.name, side=side.value)
                self._resync_wake.set()
            seen = {record.id: record for record in batch.records}
            for record_id in await self._news(side, batch.ids, seen):
                self.enqueue((side, record_id), seen.get(record_id), seen_at=started)
            if batch.cursor != cursor:
                try:
                    await self.store.set_cursor(self.name, source, batch.cursor)
                except sqlite3.OperationalError as exc:
                    if not state_busy(exc):
                        raise
                    # The batch is queued; the cursor is kept in memory and stored next time.
                    log.warning("feed.cursor_not_stored", binding=self.name, side=side.value, error=str(exc))
                cursor = batch.cursor
            if not batch.more:
                with anyio.move_on_after(self.timing.wait(interval)):
                    await self._feed_wake[side].wait()
                self._feed_wake[side] = anyio.Event()

    async def _news(self, side: Side, ids: Sequence[RecordId], seen: dict[RecordId, Record]) -> list[RecordId]:
        """The reported ids whose record is not as both sides last agreed, found for the
        whole batch at once: tandem's own writes come back through the feeds by the
        thousand during an import, and each would otherwise cost a reconcile."""
        collection = self.binding.side(side)
        missing = [record_id for record_id in ids if record_id not in seen]
        if missing and isinstance(collection, BatchReading):
            try:
                seen = {**seen, **await collection.get_many(missing)}
            except ConnectorError:
                return list(ids)  # the reconciles will read for themselves
        links = await self.store.links_for_many(self.name, side, ids)
        news = [i for i in ids if not self.reconciler.as_agreed(links.get(i), seen.get(i), side)]
        self._echoes.inc(len(ids) - len(news))
        return news

    async def _gauge_loop(self) -> None:
        while True:
            try:
                await self.refresh_gauges()
            except sqlite3.OperationalError as exc:
                if not state_busy(exc):
                    raise
            await anyio.sleep(self.timing.gauge_interval)

    async def refresh_gauges(self) -> None:
        counts = await self.store.counts(self.name)
        for state in ("synced", "pending", "error", "conflict", "deleted"):
            self.metrics.links.labels(self.name, state).set(counts.get(state, 0))
        total, longest = self.queue.unfinished_seconds()
        self.metrics.unfinished.labels(self.name).set(total)
        self.metrics.longest.labels(self.name).set(longest)
