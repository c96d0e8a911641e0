"""A table in the app's PostgreSQL database as one side of a binding.

Every write is one statement in its own short transaction from a pool, so tandem never
holds a lock across a network call. Values are sent as text and cast by the server to
the column's type, so a value of the wrong type is refused with PostgreSQL's own message
(and parked) instead of guessed at. Full listings walk the table by keyset for the
resync; changes come from the trigger-fed change log (`postgres_changelog`), and a
`LISTEN` connection wakes the reader as soon as a writing transaction commits.
"""

from __future__ import annotations

import datetime
import decimal
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import anyio
import asyncpg
import structlog

from connectors.base import (
    AuthError,
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
from connectors.postgres_changelog import (
    CHANNEL,
    FUNCTION,
    LOG_TABLE,
    cleanup_statements,
    install_statements,
    qualified,
    quote,
    remove_statements,
    trigger_name,
)
from connectors.rows import TableRead, table_records

log = structlog.get_logger(__name__)

PAGE_SIZE = 1000
CHANGE_BATCH = 1000
LISTEN_RETRY = 2.0

# SQLSTATE classes (the first two characters) and what they mean for a retry.
_TRANSIENT_CLASSES = {"08", "40", "53", "55", "57", "58"}
_CONFIGURATION_CLASSES = {"3D", "3F", "42"}
_AUTH_CLASSES = {"28"}


def translate(exc: BaseException, label: str) -> ConnectorError:
    """A driver error as the connector error that says what to do about it."""
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        message = f"{label}: {exc}"
        if state[:2] in _AUTH_CLASSES:
            return AuthError(message)
        if state[:2] in _CONFIGURATION_CLASSES:
            return ConfigurationError(message)
        if state[:2] in _TRANSIENT_CLASSES:
            return TransientError(message)
        return PermanentError(message)  # data (22), integrity (23) and the rest: retrying won't help
    if isinstance(exc, asyncpg.InterfaceError | OSError | TimeoutError):
        return TransientError(f"{label}: {type(exc).__name__}: {exc}")
    return TransientError(f"{label}: {exc}")


def encode(value: JSONValue) -> str | None:
    """A value as text for the server to cast to the column's type."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def decode(value: Any) -> JSONValue:
    """A value the driver read, as a JSON value."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict | list):
        return value  # json and jsonb, decoded by the pool's codec
    return str(value)


def _position(cursor: str | None) -> tuple[str, int]:
    """A change-log cursor: the (transaction id, sequence) of the last entry read."""
    if not cursor:
        return "0", 0
    xid, seq = json.loads(cursor)
    return str(xid), int(seq)


@dataclass(frozen=True, slots=True)
class PostgresTableSpec:
    table: str
    schema: str = "public"
    id: str = "id"
    columns: tuple[str, ...] = ()
    """The mapped columns; each must exist in the table."""


async def _json_codecs(connection: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await connection.set_type_codec(name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _listen_until_lost(connection: asyncpg.Connection, wake: Callable[[], None]) -> None:
    lost = anyio.Event()
    connection.add_termination_listener(lambda _connection: lost.set())
    await connection.add_listener(CHANNEL, lambda *_args: wake())
    wake()  # anything committed while nobody listened
    await lost.wait()


class PostgresConnection:
    def __init__(self, name: str, dsn: str, *, pool_size: int = 4, timeout: float = 10.0) -> None:
        self._name = name
        self._dsn = dsn
        self._pool_size = pool_size
        self.timeout = timeout
        self._pool: asyncpg.Pool | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise ConnectorError(f"{self._name}: connection is not open")
        return self._pool

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._pool_size,
                command_timeout=self.timeout,
                timeout=self.timeout,
                init=_json_codecs,
            )
        except Exception as exc:
            raise translate(exc, self._name) from exc

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def check(self) -> None:
        try:
            await self.pool.fetchval("SELECT 1")
        except Exception as exc:
            raise translate(exc, self._name) from exc

    async def listen(self, wake: Callable[[], None]) -> None:
        """Call `wake` whenever a change-log trigger notifies; reconnect if the link drops.
        Runs until cancelled."""
        while True:
            try:
                connection = await asyncpg.connect(self._dsn, timeout=self.timeout)
            except Exception as exc:
                log.warning("postgres.listen_failed", connection=self._name, error=str(translate(exc, self._name)))
                await anyio.sleep(LISTEN_RETRY)
                continue
            try:
                await _listen_until_lost(connection, wake)
                log.warning("postgres.listen_lost", connection=self._name)
            finally:
                with anyio.CancelScope(shield=True):
                    await connection.close(timeout=2)

    def collection(self, spec: PostgresTableSpec) -> PostgresTable:
        return PostgresTable(self, spec)


class PostgresTable:
    def __init__(self, connection: PostgresConnection, spec: PostgresTableSpec) -> None:
        self._connection = connection
        self.spec = spec
        self._table = qualified(spec.schema, spec.table)
        self._log = qualified(spec.schema, LOG_TABLE)
        self._id = quote(spec.id)
        self._types: dict[str, str] = {}
        self._capabilities = Capabilities(change_feed=True, push=True, listing_is_proof=True)

    @property
    def label(self) -> str:
        return f"{self._connection.name}:{self.spec.schema}.{self.spec.table}"

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    async def watch(self, wake: Callable[[], None]) -> None:
        await self._connection.listen(wake)

    async def check(self) -> None:
        """The table exists and has the id and every mapped column; learns their types."""
        rows = await self._fetch(
            # The type without its modifier: an explicit cast to varchar(40) would cut a longer
            # value to fit, where an assignment to the column refuses it.
            "SELECT a.attname, format_type(a.atttypid, NULL), a.attnotnull,"
            " a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '' FROM pg_attribute a"
            " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
            (self.spec.schema, self.spec.table),
        )
        if not rows:
            raise ConfigurationError(
                f"{self.label}: table {self.spec.schema}.{self.spec.table} does not exist (or is not readable)"
            )
        self._types = {row[0]: row[1] for row in rows}
        # A BEFORE row trigger may fill a column the write leaves null: then only the server
        # can say, and nothing is refused before it has.
        filled_by_trigger = await self._fetch(
            "SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = $1 AND c.relname = $2 AND NOT t.tgisinternal AND (t.tgtype & 3) = 3",
            (self.spec.schema, self.spec.table),
        )
        foreseeable = [] if filled_by_trigger else rows
        self._capabilities = replace(
            self._capabilities,
            not_null=frozenset(row[0] for row in foreseeable if row[2] and row[0] != self.spec.id),
            defaulted=frozenset(row[0] for row in foreseeable if row[3]),
        )
        missing = [c for c in (self.spec.id, *self.spec.columns) if c not in self._types]
        if missing:
            raise ConfigurationError(
                f"{self.label}: table {self.spec.schema}.{self.spec.table} has no column"
                f" {', '.join(map(repr, missing))}"
            )

    # --- change log --------------------------------------------------------------

    async def install_changelog(self) -> None:
        await self._script(install_statements(self.spec.schema, self.spec.table, self.spec.id))

    async def remove_changelog(self) -> None:
        installed = await self._fetch("SELECT to_regclass($1)", (f"{self._log}",))
        statements = remove_statements(self.spec.schema, self.spec.table)
        await self._script(statements if installed and installed[0][0] else statements[:1])
        users = await self._fetch(
            "SELECT count(*) FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid"
            " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.proname = $1 AND n.nspname = $2",
            (FUNCTION, self.spec.schema),
        )
        if users and users[0][0] == 0:
            await self._script(cleanup_statements(self.spec.schema))

    async def changelog_installed(self) -> bool:
        rows = await self._fetch(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2",
            (self._table, trigger_name(self.spec.table)),
        )
        return bool(rows) and rows[0][0] == 1

    async def changes(self, cursor: str | None) -> ChangeBatch:
        """Ids logged after `cursor` by transactions that can no longer add entries before
        it. An idle read is one indexed query and writes nothing."""
        after_xid, after_seq = _position(cursor)
        rows = await self._fetch(
            f"SELECT xid::text, seq, row_id FROM {self._log}"
            " WHERE tbl = $1 AND (xid, seq) > ($2::text::xid8, $3::bigint)"
            " AND xid < pg_snapshot_xmin(pg_current_snapshot())"
            " ORDER BY xid, seq LIMIT $4",
            (self.spec.table, after_xid, after_seq, CHANGE_BATCH),
        )
        if not rows:
            return ChangeBatch(ids=[], cursor=cursor)
        if cursor:
            # Entries up to the stored cursor were consumed: trim them while there is news.
            await self._execute(
                f"DELETE FROM {self._log} WHERE tbl = $1 AND (xid, seq) <= ($2::text::xid8, $3::bigint)",
                (self.spec.table, after_xid, after_seq),
            )
        ids = list(dict.fromkeys(RecordId(str(row[2])) for row in rows if row[2] is not None))
        last = rows[-1]
        return ChangeBatch(ids=ids, cursor=json.dumps([last[0], last[1]]), more=len(rows) == CHANGE_BATCH)

    # --- reads -------------------------------------------------------------------

    async def list_page(self, cursor: str | None) -> Page:
        if cursor is None:
            sql = f"SELECT * FROM {self._table} ORDER BY {self._id} LIMIT $1"
            params: tuple[Any, ...] = (PAGE_SIZE,)
        else:
            sql = f"SELECT * FROM {self._table} WHERE {self._id} > {self._param(1, self.spec.id)}"
            sql += f" ORDER BY {self._id} LIMIT $2"
            params = (json.loads(cursor), PAGE_SIZE)
        read = await self._read(sql, params)
        following = json.dumps(str(read.last_id)) if read.rows == PAGE_SIZE else None
        return Page(records=read.records, cursor=following)

    async def get(self, record_id: RecordId) -> Record | None:
        sql = f"SELECT * FROM {self._table} WHERE {self._id} = {self._param(1, self.spec.id)}"
        records = await self._records(sql, (str(record_id),))
        return records[0] if records else None

    async def find(self, match: Mapping[str, JSONValue]) -> list[Record]:
        if not match:
            return []
        where = " AND ".join(f"{quote(c)} = {self._param(i, c)}" for i, c in enumerate(match, start=1))
        sql = f"SELECT * FROM {self._table} WHERE {where} LIMIT 100"
        return await self._records(sql, tuple(encode(v) for v in match.values()))

    # --- writes ------------------------------------------------------------------

    async def create(self, fields: Mapping[str, JSONValue], *, record_id: RecordId | None = None) -> Record:
        # The table or API picks ids (no `chosen_ids`): `record_id` is never passed.
        values = dict(fields)
        if not values:
            sql = f"INSERT INTO {self._table} DEFAULT VALUES RETURNING *"
            return (await self._records(sql, ()))[0]
        columns = ", ".join(quote(c) for c in values)
        marks = ", ".join(self._param(i, c) for i, c in enumerate(values, start=1))
        sql = f"INSERT INTO {self._table} ({columns}) VALUES ({marks}) RETURNING *"
        return (await self._records(sql, tuple(encode(v) for v in values.values())))[0]

    async def update(
        self, record_id: RecordId, fields: Mapping[str, JSONValue], *, current: Record | None
    ) -> Record | None:
        if not fields:
            return current
        assignments = ", ".join(f"{quote(c)} = {self._param(i, c)}" for i, c in enumerate(fields, start=1))
        where = f"{self._id} = {self._param(len(fields) + 1, self.spec.id)}"
        sql = f"UPDATE {self._table} SET {assignments} WHERE {where} RETURNING *"
        records = await self._records(sql, (*(encode(v) for v in fields.values()), str(record_id)))
        if not records:
            raise NotFoundError(f"{self.label}: record {record_id!r} is gone")
        return records[0]

    async def delete(self, record_id: RecordId, *, current: Record | None = None) -> None:
        # No version to guard with: the reconciler's fresh read is the guard.
        sql = f"DELETE FROM {self._table} WHERE {self._id} = {self._param(1, self.spec.id)}"
        await self._execute(sql, (str(record_id),))

    # --- helpers -----------------------------------------------------------------

    def _param(self, number: int, column: str) -> str:
        """A placeholder sent as text and cast by the server to the column's type."""
        declared = self._types.get(column, "text")
        return f"${number}::text::{declared}"

    async def _records(self, sql: str, params: Sequence[Any]) -> list[Record]:
        return (await self._read(sql, params)).records

    async def _read(self, sql: str, params: Sequence[Any]) -> TableRead:
        rows = await self._fetch(sql, params)
        return table_records(
            ({name: decode(value) for name, value in row.items()} for row in rows),
            label=self.label, id_column=self.spec.id, columns=self.spec.columns,
        )  # fmt: skip

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[asyncpg.Record]:
        try:
            return list(await self._connection.pool.fetch(sql, *params))
        except Exception as exc:
            raise translate(exc, self.label) from exc

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        try:
            await self._connection.pool.execute(sql, *params)
        except Exception as exc:
            raise translate(exc, self.label) from exc

    async def _script(self, statements: Sequence[str]) -> None:
        try:
            async with self._connection.pool.acquire() as connection, connection.transaction():
                for statement in statements:
                    await connection.execute(statement)
        except Exception as exc:
            raise translate(exc, self.label) from exc
