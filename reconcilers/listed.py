"""What a resync's listings held, kept in the state database's temporary storage.

A resync of a million links must not hold two million records in the process. Each
listed page goes, as it arrives, into a temporary table on the state connection: the
record's id, its mapped values as a base is stored (`digest`), and the record itself as
JSON. The diff is then one SQL join of the links with these tables: the links whose both
records still equal the base are only counted, and the rest stream out a row at a time,
with their records, to the pure `classify_link`. Only the records that need work are
ever read back into Python.

SQLite keeps temporary tables in a file of its own with a small page cache, so the
process's memory does not grow with the collection; the tables are dropped when the
resync ends, and never outlive the connection.
"""

from __future__ import annotations

import itertools
import json
import pickle
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager

import aiosqlite

from connectors.base import Record, RecordId
from reconcilers.model import LinkDigest, Side
from reconcilers.observe import LinkRow

_numbers = itertools.count(1)

# A link whose both records equal its base and which is in sync (or in a settled
# conflict): `classify_link` leaves exactly these alone, so SQL may count them instead.
# NULL (a record not listed) is not 1: those links go to `classify_link`.
_UNCHANGED = "(l.state IN ('synced', 'conflict') AND a.digest = l.base AND e.digest = l.base)"


def _encode(record: Record) -> str | bytes:
    try:
        return json.dumps([record.id, record.fields, record.version], separators=(",", ":"))
    except (TypeError, ValueError):
        # A value JSON cannot hold (an SQLite BLOB, say) must come back as it was, for the
        # mapping to read as it reads any listed value: such records are pickled instead.
        return pickle.dumps(record)


def _decode_many(stored: Sequence[str | bytes | None]) -> list[Record | None]:
    """Records of a chunk of rows, the JSON ones parsed as one array: the chunk's records
    share their field-name strings instead of holding a copy each."""
    parsed = iter(json.loads("[" + ",".join(text for text in stored if isinstance(text, str)) + "]"))
    records: list[Record | None] = []
    for text in stored:
        if text is None:
            records.append(None)
        elif isinstance(text, bytes):
            records.append(pickle.loads(text))  # noqa: S301 - written by `_encode` above, never by others
        else:
            record_id, fields, version = next(parsed)
            records.append(Record(RecordId(record_id), fields, version))
    return records


_CHUNK = 1000


class ListedRecords:
    """One resync's listed records, both sides, in two temporary tables."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        binding: str,
        transaction: Callable[[], AbstractAsyncContextManager[None]],
    ) -> None:
        self._db = db
        self._binding = binding
        self._transaction = transaction
        number = next(_numbers)
        self._tables = {Side.APP: f"temp.listed_app_{number}", Side.EXTERNAL: f"temp.listed_external_{number}"}

    async def create(self) -> None:
        for table in self._tables.values():
            await self._db.execute(f"CREATE TABLE {table} (id TEXT PRIMARY KEY, digest TEXT, record TEXT NOT NULL)")

    async def drop(self) -> None:
        for table in self._tables.values():
            await self._db.execute(f"DROP TABLE IF EXISTS {table}")

    async def add(self, side: Side, listed: Iterable[tuple[Record, str | None]]) -> None:
        """One page of records with their digests; a record listed twice keeps its last sighting."""
        rows = [(record.id, digest, _encode(record)) for record, digest in listed]
        async with self._transaction():
            await self._db.executemany(f"INSERT OR REPLACE INTO {self._tables[side]} VALUES (?, ?, ?)", rows)

    async def count(self, side: Side) -> int:
        """How many distinct records of `side` were listed."""
        async with self._db.execute(f"SELECT COUNT(*) FROM {self._tables[side]}") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    def _join(self, condition: str) -> str:
        app, external = self._tables[Side.APP], self._tables[Side.EXTERNAL]
        return (
            f" FROM links l LEFT JOIN {app} a ON a.id = l.app_id LEFT JOIN {external} e ON e.id = l.external_id"
            f" WHERE l.binding = ? AND l.updated_at < ? AND {condition}"
        )

    async def unchanged(self, listed_since: float) -> int:
        """How many links the listings show exactly as both sides last agreed."""
        async with self._db.execute("SELECT COUNT(*)" + self._join(_UNCHANGED), (self._binding, listed_since)) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def other_links(self, listed_since: float) -> AsyncIterator[LinkRow]:
        """Every other link older than the listings, with the records they held of it."""
        sql = "SELECT l.row, l.app_id, l.external_id, l.state, l.base, l.updated_at, a.record, e.record" + self._join(
            f"{_UNCHANGED} IS NOT 1"
        )
        async with self._db.execute(sql, (self._binding, listed_since)) as cursor:
            while rows := await cursor.fetchmany(_CHUNK):
                apps = _decode_many([row[6] for row in rows])
                externals = _decode_many([row[7] for row in rows])
                for row, app, external in zip(rows, apps, externals, strict=True):
                    yield LinkRow(LinkDigest.from_row(row), app, external)

    async def unlinked(self, side: Side) -> list[Record]:
        """The listed records of `side` that no link holds."""
        column = "app_id" if side is Side.APP else "external_id"
        sql = (
            f"SELECT t.record FROM {self._tables[side]} t WHERE NOT EXISTS"
            f" (SELECT 1 FROM links l WHERE l.binding = ? AND l.{column} = t.id)"
        )
        records: list[Record] = []
        async with self._db.execute(sql, (self._binding,)) as cursor:
            while rows := await cursor.fetchmany(_CHUNK):
                records.extend(record for record in _decode_many([row[0] for row in rows]) if record is not None)
        return records
