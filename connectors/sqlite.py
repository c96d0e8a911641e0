"""A table in the app's SQLite database as one side of a binding.

Every write is one short autocommit statement under a busy timeout, so the app keeps
writing to its database while tandem runs. Full listings walk the table by keyset
(id order) for the resync; changes come from the trigger-fed change log
(`sqlite_changelog`), read after a sequence number, without scanning the table.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiosqlite
import anyio

from connectors.base import (
    Capabilities,
    ChangeBatch,
    ConfigurationError,
    ConnectorError,
    JSONValue,
    NotFoundError,
    Page,
    PermanentError,
    Record,
    RecordId,
    TransientError,
)
from connectors.rows import TableRead, table_records
from connectors.sqlite_changelog import (
    LOG_TABLE,
    install_statements,
    quote,
    remove_statements,
    trigger_names,
)

PAGE_SIZE = 1000
CHANGE_BATCH = 1000
BATCH_ROWS = 10_000
"""Rows one `create_many` takes: one transaction, larger than any page a batch sends."""


@dataclass(frozen=True, slots=True)
class SqliteTableSpec:
    table: str
    id: str = "id"
    columns: tuple[str, ...] = ()
    """The mapped columns; each must exist in the table."""


_FAILURES = (sqlite3.Error, OverflowError)
"""What a statement can raise: OverflowError where a parameter is beyond 64 bits."""


def translate(exc: sqlite3.Error | OverflowError, label: str) -> ConnectorError:
    """An sqlite3 error as the connector error that says what to do about it."""
    text = str(exc)
    if isinstance(exc, OverflowError):  # a parameter sqlite3 cannot bind: this record's alone
        return PermanentError(f"{label}: an integer beyond SQLite's 64 bits: {text}")
    if isinstance(exc, sqlite3.OperationalError):
        if "locked" in text or "busy" in text:
            return TransientError(f"{label}: database is busy: {text}")
        if "no such table" in text or "no such column" in text or "has no column named" in text:
            return ConfigurationError(f"{label}: {text}")
        if "readonly" in text or "read-only" in text:
            return PermanentError(f"{label}: database is read-only: {text}")
        return TransientError(f"{label}: {text}")
    return PermanentError(f"{label}: {text}")


_STORED_AS_IS = frozenset({str, int, float, type(None)})


def encode(value: JSONValue) -> Any:
    """A canonical value as SQLite stores it: booleans as 0/1, objects as JSON text."""
    if type(value) in _STORED_AS_IS:  # most values, and the cheapest test (bool is not int here)
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return value


_INT64 = range(-(2**63), 2**63)


def _json_rows(values: list[list[Any]]) -> str | None:
    """Encoded rows as a JSON array for `json_each`, or None where JSON would not carry
    every value as SQLite stores it from a parameter: an integer beyond 64 bits (read as
    a float), a NUL in a text (read only up to it), a float that is not finite."""
    for row in values:
        for value in row:
            if type(value) is int and value not in _INT64:
                return None
    try:
        text = json.dumps(values, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:
        return None
    return None if "\\u0000" in text else text


class SqliteConnection:
    def __init__(self, name: str, path: str | Path, *, busy_timeout: float = 5.0) -> None:
        self._name = name
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._db: aiosqlite.Connection | None = None
        self._bulk: sqlite3.Connection | None = None
        self.bulk_lock = anyio.Lock()  # one batch transaction at a time on the bulk connection

    @property
    def name(self) -> str:
        return self._name

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise ConnectorError(f"{self._name}: connection is not open")
        return self._db

    async def open(self) -> None:
        if self._db is not None:
            return
        if not self.path.exists():
            raise ConfigurationError(f"{self._name}: database file {self.path} does not exist")
        try:
            self._db = await aiosqlite.connect(f"file:{self.path}?mode=rw", uri=True, isolation_level=None)
            await self._db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        except sqlite3.Error as exc:
            raise translate(exc, self._name) from exc

    async def aclose(self) -> None:
        if self._bulk is not None:
            async with self.bulk_lock:
                await anyio.to_thread.run_sync(self._bulk.close)
            self._bulk = None
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def bulk_db(self) -> sqlite3.Connection:
        """A second connection for batch writes: their transaction holds no one else's
        statements. It is used from worker threads, under `bulk_lock`, a whole batch's
        transaction in one call: statement by statement, each step waited its turn on
        the event loop while the transaction held the table's write lock."""
        if self._bulk is None:
            self.db  # noqa: B018 - raises when the connection is not open
            try:
                self._bulk = await anyio.to_thread.run_sync(self._connect_bulk)
            except sqlite3.Error as exc:
                raise translate(exc, self._name) from exc
        return self._bulk

    def _connect_bulk(self) -> sqlite3.Connection:
        return sqlite3.connect(
            f"file:{self.path}?mode=rw", uri=True, isolation_level=None, timeout=self.busy_timeout,
            check_same_thread=False,  # one thread at a time, under `bulk_lock`
        )  # fmt: skip

    async def check(self) -> None:
        try:
            await self.db.execute("SELECT 1")
        except sqlite3.Error as exc:
            raise translate(exc, self._name) from exc

    def collection(self, spec: SqliteTableSpec) -> SqliteTable:
        return SqliteTable(self, spec)


class SqliteTable:
    def __init__(self, connection: SqliteConnection, spec: SqliteTableSpec) -> None:
        self._connection = connection
        self.spec = spec
        self._table = quote(spec.table)
        self._id = quote(spec.id)
        self._integer_id = False
        self._capabilities = Capabilities(change_feed=True, batch_create=BATCH_ROWS, listing_is_proof=True)

    @property
    def label(self) -> str:
        return f"{self._connection.name}:{self.spec.table}"

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    async def check(self) -> None:
        """The table exists and has the id and every mapped column."""
        rows = await self._query(f"PRAGMA table_info({self._table})")
        if not rows:
            raise ConfigurationError(f"{self.label}: table {self.spec.table!r} does not exist")
        declared = {row[1]: str(row[2]).upper() for row in rows}
        missing = [c for c in (self.spec.id, *self.spec.columns) if c not in declared]
        if missing:
            raise ConfigurationError(
                f"{self.label}: table {self.spec.table!r} has no column {', '.join(map(repr, missing))}"
            )
        self._integer_id = "INT" in declared[self.spec.id]
        # table_info: (cid, name, type, notnull, dflt_value, pk)
        self._capabilities = replace(
            self._capabilities,
            not_null=frozenset(row[1] for row in rows if row[3] and row[1] != self.spec.id),
            defaulted=frozenset(row[1] for row in rows if row[4] is not None),
        )

    # --- change log --------------------------------------------------------------

    async def install_changelog(self) -> None:
        await self._script(install_statements(self.spec.table, self.spec.id))

    async def remove_changelog(self) -> None:
        statements = remove_statements(self.spec.table)
        if not await self._query("SELECT 1 FROM sqlite_master WHERE name = ?", (LOG_TABLE,)):
            statements = statements[:-1]  # no log table: only triggers to drop
        await self._script(statements)
        remaining = await self._query(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND sql LIKE ?",
            (f"%{LOG_TABLE}%",),
        )
        if remaining and remaining[0][0] == 0:
            await self._script([f"DROP TABLE IF EXISTS {quote(LOG_TABLE)}"])

    async def changelog_installed(self) -> bool:
        names = trigger_names(self.spec.table)
        rows = await self._query(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name IN (?, ?, ?)", names
        )
        return bool(rows) and rows[0][0] == len(names)

    async def changes(self, cursor: str | None) -> ChangeBatch:
        """Ids logged after `cursor`. An idle poll is one indexed read and writes nothing."""
        after = int(cursor) if cursor else 0
        rows = await self._query(
            f"SELECT seq, row_id FROM {quote(LOG_TABLE)} WHERE tbl = ? AND seq > ? ORDER BY seq LIMIT ?",
            (self.spec.table, after, CHANGE_BATCH),
        )
        if not rows:
            return ChangeBatch(ids=[], cursor=cursor)
        if after:
            # Entries up to the stored cursor were consumed: trim them while there is news.
            await self._execute(f"DELETE FROM {quote(LOG_TABLE)} WHERE tbl = ? AND seq <= ?", (self.spec.table, after))
        ids = list(dict.fromkeys(RecordId(str(row[1])) for row in rows if row[1] is not None))
        return ChangeBatch(ids=ids, cursor=str(rows[-1][0]), more=len(rows) == CHANGE_BATCH)

    # --- reads -------------------------------------------------------------------

    async def list_page(self, cursor: str | None) -> Page:
        if cursor is None:
            sql = f"SELECT * FROM {self._table} ORDER BY {self._id} LIMIT ?"
            params: tuple[Any, ...] = (PAGE_SIZE,)
        else:
            sql = f"SELECT * FROM {self._table} WHERE {self._id} > ? ORDER BY {self._id} LIMIT ?"
            params = (json.loads(cursor), PAGE_SIZE)
        read = await self._read(sql, params)
        following = json.dumps(read.last_id) if read.rows == PAGE_SIZE else None
        return Page(records=read.records, cursor=following)

    async def get(self, record_id: RecordId) -> Record | None:
        sql = f"SELECT * FROM {self._table} WHERE {self._id} = ?"
        records, _ = await self._records(sql, (self._key(record_id),))
        return records[0] if records else None

    async def get_many(self, record_ids: Sequence[RecordId]) -> dict[RecordId, Record]:
        found: dict[RecordId, Record] = {}
        for start in range(0, len(record_ids), 500):
            chunk = [self._key(record_id) for record_id in record_ids[start : start + 500]]
            sql = f"SELECT * FROM {self._table} WHERE {self._id} IN ({', '.join('?' for _ in chunk)})"
            records, _ = await self._records(sql, chunk)
            found.update((record.id, record) for record in records)
        return found

    async def find(self, match: Mapping[str, JSONValue]) -> list[Record]:
        if not match:
            return []
        where = " AND ".join(f"{quote(column)} = ?" for column in match)
        sql = f"SELECT * FROM {self._table} WHERE {where} LIMIT 100"
        records, _ = await self._records(sql, tuple(encode(v) for v in match.values()))
        return records

    # --- writes ------------------------------------------------------------------

    async def create(self, fields: Mapping[str, JSONValue], *, record_id: RecordId | None = None) -> Record:
        # The table or API picks ids (no `chosen_ids`): `record_id` is never passed.
        values = {column: encode(value) for column, value in fields.items()}
        if self.spec.id not in values and not self._integer_id:
            values[self.spec.id] = uuid.uuid4().hex  # a text key: tandem chooses it
        columns = ", ".join(quote(c) for c in values)
        marks = ", ".join("?" for _ in values)
        sql = f"INSERT INTO {self._table} ({columns}) VALUES ({marks}) RETURNING *"
        records, _ = await self._records(sql, tuple(values.values()))
        return records[0]

    async def create_many(self, rows: Sequence[Mapping[str, JSONValue]]) -> list[RecordId]:
        """Create all rows in one transaction (all or none), in order; their new ids.

        One commit instead of one per row is what makes an initial import fast: on a
        rollback-journal database every commit is a sync to disk."""
        if not rows:
            return []
        columns = list(rows[0])
        if any(list(row) != columns for row in rows) or self.spec.id in columns:
            return [(await self.create(row)).id for row in rows]  # not one shape: one at a time
        values = [[encode(row[c]) for c in columns] for row in rows]
        ids: list[Any] = []
        if not self._integer_id:
            ids = [uuid.uuid4().hex for _ in rows]  # a text key: tandem chooses it
            columns.append(self.spec.id)
            for row_values, new_id in zip(values, ids, strict=True):
                row_values.append(new_id)
        db = await self._connection.bulk_db()
        try:
            async with self._connection.bulk_lock:
                made = await anyio.to_thread.run_sync(self._insert_all, db, columns, values)
        except sqlite3.OperationalError as exc:
            if "rowid" in str(exc):  # a WITHOUT ROWID table: one at a time
                return [(await self.create(row)).id for row in rows]
            raise translate(exc, self.label) from exc
        except _FAILURES as exc:
            raise translate(exc, self.label) from exc
        if self._integer_id:
            ids = made  # the table's; else tandem chose them above
        if len(ids) != len(rows):
            raise TransientError(f"{self.label}: {len(rows)} rows inserted, {len(ids)} read back")
        return [RecordId(str(new_id)) for new_id in ids]

    def _insert_all(self, db: sqlite3.Connection, columns: list[str], values: list[list[Any]]) -> list[Any]:
        """Insert the rows in one transaction, in a worker thread; returns the ids the
        table gave them, in order (none where tandem chose them).

        A worker thread gives up the GIL around every SQLite call and must wait for it
        back, up to 5 ms while the event loop is busy: row by row, a page of 1,000 could
        take seconds. So the rows go in as one statement over a JSON array where JSON
        carries every value as a parameter would, and the ids come back as one JSON row."""
        names = ", ".join(quote(c) for c in columns)
        db.execute("BEGIN IMMEDIATE")
        try:
            (found,) = db.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {self._table}").fetchone()
            as_json = _json_rows(values)
            if as_json is None:
                marks = ", ".join("?" for _ in columns)
                db.executemany(f"INSERT INTO {self._table} ({names}) VALUES ({marks})", values)
            else:
                picks = ", ".join(f"value->>{index}" for index in range(len(columns)))
                # In the array's order, so the new ids, in rowid order, are the rows' own order.
                sql = f"INSERT INTO {self._table} ({names}) SELECT {picks} FROM json_each(?) ORDER BY key"
                db.execute(sql, (as_json,))
            made: list[Any] = []
            if self._integer_id:
                sql = f"SELECT json_group_array(json_array(rowid, {self._id})) FROM {self._table} WHERE rowid > ?"
                (text,) = db.execute(sql, (found,)).fetchone()
                made = [new_id for _, new_id in sorted(json.loads(text))]
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return made

    async def update(
        self, record_id: RecordId, fields: Mapping[str, JSONValue], *, current: Record | None
    ) -> Record | None:
        if not fields:
            return current
        assignments = ", ".join(f"{quote(column)} = ?" for column in fields)
        sql = f"UPDATE {self._table} SET {assignments} WHERE {self._id} = ? RETURNING *"
        params = (*(encode(v) for v in fields.values()), self._key(record_id))
        records, _ = await self._records(sql, params)
        if not records:
            raise NotFoundError(f"{self.label}: record {record_id!r} is gone")
        return records[0]

    async def delete(self, record_id: RecordId, *, current: Record | None = None) -> None:
        # No version to guard with: the reconciler's fresh read is the guard.
        await self._execute(f"DELETE FROM {self._table} WHERE {self._id} = ?", (self._key(record_id),))

    # --- helpers -----------------------------------------------------------------

    def _key(self, record_id: RecordId) -> Any:
        if self._integer_id:
            try:
                return int(record_id)
            except ValueError:
                return record_id
        return record_id

    async def _records(self, sql: str, params: Sequence[Any]) -> tuple[list[Record], Any]:
        read = await self._read(sql, params)
        return read.records, read.last_id

    async def _read(self, sql: str, params: Sequence[Any]) -> TableRead:
        try:
            async with self._connection.db.execute(sql, params) as cursor:
                names = [column[0] for column in cursor.description or ()]
                rows = await cursor.fetchall()
        except _FAILURES as exc:
            raise translate(exc, self.label) from exc
        return table_records(
            (dict(zip(names, row, strict=True)) for row in rows),
            label=self.label, id_column=self.spec.id, columns=self.spec.columns,
        )  # fmt: skip

    async def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            async with self._connection.db.execute(sql, params) as cursor:
                return list(await cursor.fetchall())
        except _FAILURES as exc:
            raise translate(exc, self.label) from exc

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        try:
            await self._connection.db.execute(sql, params)
        except _FAILURES as exc:
            raise translate(exc, self.label) from exc

    async def _script(self, statements: Sequence[str]) -> None:
        db = self._connection.db
        try:
            await db.execute("BEGIN IMMEDIATE")
            try:
                for statement in statements:
                    await db.execute(statement)
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise
        except _FAILURES as exc:
            raise translate(exc, self.label) from exc
