"""The state database: links with their base, parked errors, conflicts, cursors, intents.

One SQLite file in WAL mode, written through one connection in autocommit mode, so
every statement is its own durable transaction and a SIGKILL at any point leaves a
consistent file. Unique indexes on (binding, app_id) and (binding, external_id) make
a second link for one record impossible, whatever the interleaving of workers.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import aiosqlite
import anyio

from connectors.base import RecordId
from reconcilers.canonical import Canon, canonical_json, fingerprint
from reconcilers.listed import ListedRecords
from reconcilers.migrations import SCHEMA_VERSION, StateError, migrate
from reconcilers.model import Link, LinkDigest, LinkState, Side
from reconcilers.plan import FieldConflict


class LinkTaken(Exception):
    """Another link already holds this app or external id."""


@dataclass(frozen=True, slots=True)
class BindingState:
    deletes_blocked: int = 0
    blocked_at: float | None = None
    last_resync_at: float | None = None
    last_resync_result: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    row: int
    body: str
    attempts: int


class NewLink(NamedTuple):
    """A link to insert in a batch: a pairing, or the write intent of a create."""

    app_id: RecordId | None
    external_id: RecordId | None
    state: LinkState
    base: dict[str, Canon] | str | None = None
    intent_side: Side | None = None
    intent_values: dict[str, Canon] | str | None = None
    """Values, or their JSON as `fingerprint` encodes them."""
    intent_id: RecordId | None = None


Intent = tuple[RecordId, str, RecordId | None]
"""The write intent of a create in a batch: the source record's id, the values to create
as `fingerprint` encodes them (the base once created), and the id chosen for the new
record where its side takes one, else None. (Plain tuples, this and `Agreement`: a
batch import makes one of each per record.)"""

Agreement = tuple[int, RecordId]
"""A create in a batch that was made: its intent's row and the id it gave its record."""


_LINK_COLUMNS = (
    "row, binding, app_id, external_id, state, base, error, failed_fingerprint,"
    " intent_side, intent_values, synced_at, updated_at, intent_id"
)


def _to_link(row: Sequence[Any]) -> Link:
    return Link(
        row=row[0],
        binding=row[1],
        app_id=RecordId(row[2]) if row[2] is not None else None,
        external_id=RecordId(row[3]) if row[3] is not None else None,
        state=LinkState(row[4]),
        base=json.loads(row[5]) if row[5] is not None else None,
        error=row[6],
        failed_fingerprint=row[7],
        intent_side=Side(row[8]) if row[8] is not None else None,
        intent_values=json.loads(row[9]) if row[9] is not None else None,
        synced_at=row[10],
        updated_at=row[11],
        intent_id=RecordId(row[12]) if row[12] is not None else None,
    )


# A batch is one statement over a JSON array of its rows: one round trip to the
# connection's thread, and atomic without a transaction of its own. Statement by
# statement, each batch held the connection for several round trips, and those waited
# on the event loop while other batches queued behind them. Nor does it read its rows
# back one by one (RETURNING): the thread gives up the GIL around every SQLite step and
# can wait up to 5 ms to take it back while the event loop is busy. One statement
# numbers its new rows one after another, in the array's order (`ORDER BY key`): SQLite
# gives a new row the number after the highest (it picks at random only once the
# highest possible number is taken). So where every row went in, their numbers follow
# from the last; else one read says which.
_INSERT_MANY = (
    "INSERT OR IGNORE INTO links (binding, app_id, external_id, state, base, error, failed_fingerprint,"
    " intent_side, intent_values, synced_at, updated_at, intent_id)"
    " SELECT :binding, value->>0, value->>1, value->>2, value->>3, NULL, NULL, value->>4, value->>5,"
    " CASE WHEN value->>2 = 'synced' THEN :now END, :now, value->>6 FROM json_each(:rows) ORDER BY key"
)
# A create's intent: only what differs from one record to the next travels per row,
# so SQLite parses three values of each, not seven.
_INSERT_INTENTS = {
    source: (
        f"INSERT OR IGNORE INTO links (binding, {column}, state, intent_side, intent_values, updated_at, intent_id)"
        " SELECT :binding, value->>0, 'pending', :target, value->>1, :now, value->>2 FROM json_each(:rows) ORDER BY key"
    )
    for source, column in ((Side.APP, "app_id"), (Side.EXTERNAL, "external_id"))
}
_INSERTED = "SELECT json_group_array(json_array(row, app_id, external_id)) FROM links WHERE row BETWEEN ? AND ?"


def _batch_json(
    rows: list[tuple[Any, ...]], ids: Callable[[tuple[Any, ...]], Iterable[str | None]]
) -> tuple[list[tuple[Any, ...]], str]:
    """A batch's rows, and as JSON for `json_each`. SQLite reads a JSON string only up to
    a NUL character: a row whose id holds one is left out, to go the one-link way (the
    reconcile's), rather than be stored cut short. A value's NUL is safe: values
    travel as their encoding, where it is already escaped."""
    text = canonical_json(rows)
    if "\\u0000" not in text:  # nearly always: one scan of the text
        return rows, text
    kept = [row for row in rows if not any(i is not None and "\x00" in i for i in ids(row))]
    return kept, canonical_json(kept)


def _settle_many_sql(column: str, source: str) -> str:
    # The base is the intent's values: what the create was asked to make, and made.
    return (
        f"UPDATE OR IGNORE links SET {column} = batch.value->>1, state = 'synced', base = intent_values,"
        " error = NULL, failed_fingerprint = NULL, intent_side = NULL, intent_values = NULL, intent_id = NULL,"
        " synced_at = :now, updated_at = :now FROM json_each(:rows) AS batch"
        f" WHERE links.row = batch.value->>0 AND links.state = 'pending' AND links.{source} IS NOT NULL"
    )


_STILL_PENDING = "SELECT row FROM links WHERE state = 'pending' AND row IN (SELECT value FROM json_each(:rows))"


def _json(values: dict[str, Canon] | str | None) -> str | None:
    """Values as stored; a batch passes them already encoded (once for intent and base)."""
    if isinstance(values, str):
        return values
    return fingerprint(values) if values is not None else None


class StateStore:
    def __init__(self, db: aiosqlite.Connection, *, read_only: bool) -> None:
        self._db = db
        self.read_only = read_only
        self._batch = anyio.Lock()
        self._intents_stored = 0

    @property
    def intents_stored(self) -> int:
        """How many calls have stored write intents (pending links) through this store.
        Moved once each call is done, whether or not it failed: a reader of `pending` that
        saw it at some value before reading has seen every intent stored up to then."""
        return self._intents_stored

    @asynccontextmanager
    async def _transaction(self, begin: str = "BEGIN IMMEDIATE") -> AsyncIterator[None]:
        """One transaction for a batch of writes (one commit, not one per row).

        Statements of other tasks on this connection may run inside it and commit with it;
        so it never rolls back: batch writes skip what conflicts instead of failing."""
        async with self._batch:
            await self._db.execute(begin)
            try:
                yield
            finally:
                await self._db.execute("COMMIT")

    def _scratch_transaction(self) -> AbstractAsyncContextManager[None]:
        """For writes to temporary tables only: deferred, so a read-only store may take it."""
        return self._transaction("BEGIN")

    @asynccontextmanager
    async def listed(self, binding: str) -> AsyncIterator[ListedRecords]:
        """Temporary storage for one resync's listings, dropped when it ends."""
        listed = ListedRecords(self._db, binding, self._scratch_transaction)
        await listed.create()
        try:
            yield listed
        finally:
            with anyio.CancelScope(shield=True):
                await listed.drop()

    async def link_count(self, binding: str) -> int:
        async with self._db.execute("SELECT COUNT(*) FROM links WHERE binding = ?", (binding,)) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    # --- links -------------------------------------------------------------------

    async def link_for(self, binding: str, side: Side, record_id: RecordId) -> Link | None:
        column = "app_id" if side is Side.APP else "external_id"
        sql = f"SELECT {_LINK_COLUMNS} FROM links WHERE binding = ? AND {column} = ?"
        async with self._db.execute(sql, (binding, record_id)) as cursor:
            row = await cursor.fetchone()
        return _to_link(row) if row else None

    async def links_for_many(self, binding: str, side: Side, record_ids: Sequence[RecordId]) -> dict[RecordId, Link]:
        """The links of these ids on `side`, in one read."""
        column = "app_id" if side is Side.APP else "external_id"
        found: dict[RecordId, Link] = {}
        for start in range(0, len(record_ids), 500):
            chunk = list(record_ids[start : start + 500])
            marks = ", ".join("?" for _ in chunk)
            sql = f"SELECT {_LINK_COLUMNS} FROM links WHERE binding = ? AND {column} IN ({marks})"
            async with self._db.execute(sql, (binding, *chunk)) as cursor:
                async for row in cursor:
                    link = _to_link(row)
                    key = link.app_id if side is Side.APP else link.external_id
                    assert key is not None
                    found[key] = link
        return found

    async def link_by_row(self, row: int) -> Link | None:
        sql = f"SELECT {_LINK_COLUMNS} FROM links WHERE row = ?"
        async with self._db.execute(sql, (row,)) as cursor:
            found = await cursor.fetchone()
        return _to_link(found) if found else None

    async def insert_link(
        self,
        binding: str,
        *,
        app_id: RecordId | None,
        external_id: RecordId | None,
        state: LinkState,
        now: float,
        base: dict[str, Canon] | None = None,
        error: str | None = None,
        failed_fingerprint: str | None = None,
        intent_side: Side | None = None,
        intent_values: dict[str, Canon] | None = None,
        intent_id: RecordId | None = None,
    ) -> int:
        """A new link; raises LinkTaken when either id is linked already."""
        sql = (
            "INSERT INTO links (binding, app_id, external_id, state, base, error,"
            " failed_fingerprint, intent_side, intent_values, synced_at, updated_at, intent_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        synced_at = now if state is LinkState.SYNCED else None
        params = (
            binding,
            app_id,
            external_id,
            state.value,
            _json(base),
            error,
            failed_fingerprint,
            intent_side.value if intent_side else None,
            _json(intent_values),
            synced_at,
            now,
            intent_id,
        )
        try:
            async with self._db.execute(sql, params) as cursor:
                row = cursor.lastrowid
        except sqlite3.IntegrityError as exc:
            raise LinkTaken(f"{binding}: app id {app_id!r} or external id {external_id!r} is linked") from exc
        finally:
            if state is LinkState.PENDING:
                self._intents_stored += 1
        assert row is not None
        return row

    async def insert_links_many(self, binding: str, links: Sequence[NewLink], *, now: float) -> list[int | None]:
        """Insert links in one statement; each gets its row, or None where one of its ids
        was linked already (that link is left as it was) or cannot go in a batch."""
        rows = [
            (
                link.app_id, link.external_id, link.state.value, _json(link.base),
                link.intent_side.value if link.intent_side else None, _json(link.intent_values), link.intent_id,
            )
            for link in links
        ]  # fmt: skip
        sent, text = _batch_json(rows, lambda row: (row[0], row[1], row[6]))
        try:
            inserted = await self._insert_rows(_INSERT_MANY, {"binding": binding, "now": now, "rows": text})
        finally:
            if any(link.state is LinkState.PENDING for link in links):
                self._intents_stored += 1
        if len(inserted) == len(links):
            return list(inserted)  # every one went in, in order
        by_key = await self._rows_by_key(inserted, [(row[0], row[1]) for row in sent])
        return [by_key.get((link.app_id, link.external_id)) for link in links]

    async def insert_intents_many(
        self, binding: str, intents: Sequence[Intent], *, source: Side, now: float
    ) -> list[int | None]:
        """Store the write intents of creates from `source` records into the other side,
        in one statement; each gets its row, or None where its source is linked already
        or cannot go in a batch."""

        def key(source_id: str) -> tuple[str | None, str | None]:
            return (source_id, None) if source is Side.APP else (None, source_id)

        sent, text = _batch_json(list(intents), lambda intent: (intent[0], intent[2]))
        params = {"binding": binding, "now": now, "rows": text, "target": source.other.value}
        try:
            inserted = await self._insert_rows(_INSERT_INTENTS[source], params)
        finally:
            self._intents_stored += 1
        if len(inserted) == len(intents):
            return list(inserted)  # every one went in, in order
        by_key = await self._rows_by_key(inserted, [key(intent[0]) for intent in sent])
        return [by_key.get(key(intent[0])) for intent in intents]

    async def _insert_rows(self, sql: str, params: dict[str, Any]) -> range:
        """The rows one INSERT ... SELECT over `json_each` gave the links it inserted: a
        run of numbers, in the array's order."""
        async with self._db.execute(sql, params) as cursor:
            count, last = cursor.rowcount, cursor.lastrowid
        if count <= 0 or last is None:
            return range(0)
        return range(last - count + 1, last + 1)

    async def _rows_by_key(
        self, inserted: range, keys: Sequence[tuple[str | None, str | None]]
    ) -> dict[tuple[str | None, str | None], int]:
        """The `inserted` rows by their (app id, external id); `keys` are those of the
        array's rows, in order."""
        if not inserted:
            return {}
        if len(inserted) == len(keys):
            return dict(zip(keys, inserted, strict=True))
        # Some were left out (an id linked already): which went in, by their numbers.
        [(found,)] = await self._fetch(_INSERTED, (inserted[0], inserted[-1]))
        return {(app_id, external_id): row for row, app_id, external_id in json.loads(found)}

    async def settle_many(self, agreements: Sequence[Agreement], *, created_on: Side, now: float) -> list[int]:
        """Settle the intents of creates into `created_on`, their values as the base;
        returns the rows that could not be settled (they stay pending, for the reconcile):
        the new id is linked elsewhere already, or the source's id was released meanwhile."""
        # Only the created side's id is set: naming the other column too would rewrite
        # its index entry for the same value, which costs more than all else here.
        column, source = ("app_id", "external_id") if created_on is Side.APP else ("external_id", "app_id")
        _, rows = _batch_json(list(agreements), lambda agreement: (agreement[1],))
        async with self._db.execute(_settle_many_sql(column, source), {"now": now, "rows": rows}) as cursor:
            if cursor.rowcount == len(agreements):
                return []  # every one settled: nothing to ask
        pending = await self._fetch(_STILL_PENDING, {"rows": canonical_json([row for row, _ in agreements])})
        return [row for (row,) in pending]

    async def _fetch(self, sql: str, params: Mapping[str, Any] | Sequence[Any]) -> list[Any]:
        return list(await self._db.execute_fetchall(sql, params))

    async def settle(
        self,
        row: int,
        *,
        app_id: RecordId | None,
        external_id: RecordId | None,
        state: LinkState,
        base: dict[str, Canon] | None,
        now: float,
    ) -> None:
        """Record an agreement (or a tombstone): clears error and intent."""
        sql = (
            "UPDATE links SET app_id = ?, external_id = ?, state = ?, base = ?, error = NULL,"
            " failed_fingerprint = NULL, intent_side = NULL, intent_values = NULL, intent_id = NULL,"
            " synced_at = ?, updated_at = ? WHERE row = ?"
        )
        try:
            await self._db.execute(sql, (app_id, external_id, state.value, _json(base), now, now, row))
        except sqlite3.IntegrityError as exc:
            raise LinkTaken(f"app id {app_id!r} or external id {external_id!r} is linked") from exc

    async def mark_pending(
        self, row: int, *, side: Side, values: dict[str, Canon], now: float, intent_id: RecordId | None = None
    ) -> None:
        sql = (
            "UPDATE links SET state = 'pending', intent_side = ?, intent_values = ?, intent_id = ?,"
            " updated_at = ? WHERE row = ?"
        )
        try:
            await self._db.execute(sql, (side.value, _json(values), intent_id, now, row))
        finally:
            self._intents_stored += 1

    async def park(self, row: int, *, error: str, failed_fingerprint: str | None, now: float) -> None:
        sql = (
            "UPDATE links SET state = 'error', error = ?, failed_fingerprint = ?,"
            " intent_side = NULL, intent_values = NULL, intent_id = NULL, updated_at = ? WHERE row = ?"
        )
        await self._db.execute(sql, (error[:2000], failed_fingerprint, now, row))

    async def retry_parked(self, binding: str) -> None:
        """Forget what parked records looked like, so the next look retries each once."""
        sql = "UPDATE links SET failed_fingerprint = NULL WHERE binding = ? AND state = 'error'"
        await self._db.execute(sql, (binding,))

    async def release(self, row: int, *, side: Side, now: float) -> None:
        """The link's record on `side` is gone and its id names another record now: the
        link keeps the other side only, as a tombstone (a pending intent keeps waiting);
        with no other side, there is nothing left to keep."""
        column, other = ("app_id", "external_id") if side is Side.APP else ("external_id", "app_id")
        await self._db.execute(f"DELETE FROM links WHERE row = ? AND state != 'pending' AND {other} IS NULL", (row,))
        sql = (
            f"UPDATE links SET {column} = NULL, updated_at = ?,"
            " state = CASE state WHEN 'pending' THEN 'pending' ELSE 'deleted' END WHERE row = ?"
        )
        await self._db.execute(sql, (now, row))

    async def drop(self, row: int) -> None:
        await self._db.execute("DELETE FROM links WHERE row = ?", (row,))

    async def pending(self, binding: str, *, side: Side | None = None, excluding: Collection[int] = ()) -> list[Link]:
        """Write intents not yet settled (creates into `side`, or all), but for the rows
        in `excluding` (a batch's own, read past in SQL rather than decoded)."""
        sql = f"SELECT {_LINK_COLUMNS} FROM links WHERE binding = ? AND state = 'pending'"
        params: list[str] = [binding]
        if side is not None:
            sql += " AND intent_side = ?"
            params.append(side.value)
        if excluding:
            sql += " AND row NOT IN (SELECT value FROM json_each(?))"
            params.append(canonical_json(list(excluding)))
        return [_to_link(row) for row in await self._fetch(sql, params)]

    async def digests(self, binding: str) -> AsyncIterator[LinkDigest]:
        sql = f"SELECT {LinkDigest.COLUMNS} FROM links WHERE binding = ?"
        async with self._db.execute(sql, (binding,)) as cursor:
            async for row in cursor:
                yield LinkDigest.from_row(row)

    async def counts(self, binding: str) -> dict[str, int]:
        sql = "SELECT state, COUNT(*) FROM links WHERE binding = ? GROUP BY state"
        async with self._db.execute(sql, (binding,)) as cursor:
            return {state: count async for state, count in cursor}

    async def parked(self, binding: str, *, limit: int = 50) -> list[Link]:
        sql = (
            f"SELECT {_LINK_COLUMNS} FROM links WHERE binding = ? AND state = 'error' ORDER BY updated_at DESC LIMIT ?"
        )
        async with self._db.execute(sql, (binding, limit)) as cursor:
            return [_to_link(row) async for row in cursor]

    # --- conflicts ---------------------------------------------------------------

    async def record_conflict(
        self,
        binding: str,
        *,
        app_id: RecordId | None,
        external_id: RecordId | None,
        conflict: FieldConflict,
        now: float,
    ) -> None:
        sql = (
            "INSERT INTO conflicts (binding, app_id, external_id, field, app_value,"
            " external_value, base_value, winner, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        params = (
            binding,
            app_id,
            external_id,
            conflict.field,
            json.dumps(conflict.app, sort_keys=True),
            json.dumps(conflict.external, sort_keys=True),
            json.dumps(conflict.base, sort_keys=True),
            conflict.winner.value,
            now,
        )
        await self._db.execute(sql, params)

    async def conflict_count(self, binding: str) -> int:
        sql = "SELECT COUNT(*) FROM conflicts WHERE binding = ?"
        async with self._db.execute(sql, (binding,)) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def recent_conflicts(self, binding: str, *, limit: int = 20) -> list[dict[str, Any]]:
        sql = (
            "SELECT app_id, external_id, field, app_value, external_value, base_value, winner, at"
            " FROM conflicts WHERE binding = ? ORDER BY row DESC LIMIT ?"
        )
        async with self._db.execute(sql, (binding, limit)) as cursor:
            return [
                {
                    "app_id": row[0],
                    "external_id": row[1],
                    "field": row[2],
                    "app": json.loads(row[3]),
                    "external": json.loads(row[4]),
                    "base": json.loads(row[5]),
                    "winner": row[6],
                    "at": row[7],
                }
                async for row in cursor
            ]

    # --- the outbox of notifications to the app -----------------------------------

    async def add_events(self, binding: str, events: list[dict[str, Any]], *, now: float) -> None:
        sql = "INSERT INTO outbox (event_id, binding, body, next_at) VALUES (?, ?, ?, ?)"
        rows = [(event["id"], binding, json.dumps(event, sort_keys=True, default=str), now) for event in events]
        await self._db.executemany(sql, rows)

    async def due_events(self, binding: str, *, now: float, limit: int = 50) -> list[OutboxEntry]:
        sql = "SELECT row, body, attempts FROM outbox WHERE binding = ? AND next_at <= ? ORDER BY row LIMIT ?"
        async with self._db.execute(sql, (binding, now, limit)) as cursor:
            return [OutboxEntry(row=r[0], body=r[1], attempts=r[2]) async for r in cursor]

    async def next_event_at(self, binding: str) -> float | None:
        async with self._db.execute("SELECT MIN(next_at) FROM outbox WHERE binding = ?", (binding,)) as cursor:
            row = await cursor.fetchone()
        return float(row[0]) if row and row[0] is not None else None

    async def event_delivered(self, row: int) -> None:
        await self._db.execute("DELETE FROM outbox WHERE row = ?", (row,))

    async def event_failed(self, row: int, *, error: str, next_at: float) -> None:
        sql = "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_at = ? WHERE row = ?"
        await self._db.execute(sql, (error[:500], next_at, row))

    async def outbox_depth(self, binding: str) -> int:
        async with self._db.execute("SELECT COUNT(*) FROM outbox WHERE binding = ?", (binding,)) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    # --- cursors and per-binding state -------------------------------------------

    async def cursor(self, binding: str, source: str) -> str | None:
        sql = "SELECT value FROM cursors WHERE binding = ? AND source = ?"
        async with self._db.execute(sql, (binding, source)) as cursor:
            row = await cursor.fetchone()
        return row[0] if row else None

    async def set_cursor(self, binding: str, source: str, value: str | None) -> None:
        sql = (
            "INSERT INTO cursors (binding, source, value) VALUES (?, ?, ?)"
            " ON CONFLICT (binding, source) DO UPDATE SET value = excluded.value"
        )
        await self._db.execute(sql, (binding, source, value))

    async def binding_state(self, binding: str) -> BindingState:
        sql = "SELECT deletes_blocked, blocked_at, last_resync_at, last_resync_result FROM bindings WHERE binding = ?"
        async with self._db.execute(sql, (binding,)) as cursor:
            row = await cursor.fetchone()
        return BindingState(*row) if row else BindingState()

    async def set_binding_state(self, binding: str, state: BindingState) -> None:
        sql = (
            "INSERT INTO bindings (binding, deletes_blocked, blocked_at, last_resync_at,"
            " last_resync_result) VALUES (?, ?, ?, ?, ?) ON CONFLICT (binding) DO UPDATE SET"
            " deletes_blocked = excluded.deletes_blocked, blocked_at = excluded.blocked_at,"
            " last_resync_at = excluded.last_resync_at,"
            " last_resync_result = excluded.last_resync_result"
        )
        params = (
            binding,
            state.deletes_blocked,
            state.blocked_at,
            state.last_resync_at,
            state.last_resync_result,
        )
        await self._db.execute(sql, params)


def state_busy(exc: BaseException) -> bool:
    """Is this another writer holding the state database past the busy timeout? That
    passes: the caller waits and tries again rather than stopping the daemon."""
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


@asynccontextmanager
async def open_state(path: str | Path, *, read_only: bool = False) -> AsyncIterator[StateStore]:
    """Open (and migrate) the state database; read-only opens never create or change it."""
    target = Path(path)
    try:
        if read_only:
            db = await aiosqlite.connect(f"file:{target}?mode=ro", uri=True, isolation_level=None)
        else:
            db = await aiosqlite.connect(target, isolation_level=None)
    except sqlite3.Error as exc:
        raise StateError(f"state database {target}: cannot open: {exc}") from exc
    try:
        try:
            await db.execute("PRAGMA busy_timeout = 5000")
            if not read_only:
                await db.execute("PRAGMA journal_mode = WAL")
                await db.execute("PRAGMA synchronous = NORMAL")
            await migrate(db, target=str(target), read_only=read_only)
        except sqlite3.DatabaseError as exc:
            raise StateError(f"state database {target}: {exc}") from exc
        yield StateStore(db, read_only=read_only)
    finally:
        await db.close()


__all__ = [
    "SCHEMA_VERSION",
    "BindingState",
    "LinkDigest",
    "LinkTaken",
    "StateError",
    "StateStore",
    "open_state",
    "state_busy",
]
