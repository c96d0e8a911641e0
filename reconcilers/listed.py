"""What a resync's listings held, kept in the state database's temporary storage.

A resync of a million links must not hold two million records in the process. Each
listed page goes, as it arrives, into a temporary table on the state connection: the
record's id, its mapped values as a base is stored (`digest`), and the record itself
(pickled), with the key of its match fields. The diff is then one SQL join of the links
with these tables: the links whose both records still equal the base are only counted, and
the rest stream out a row at a time, with their records, to the pure `classify_link`.
The records no link holds come out a page at a time, each with how many unlinked
records of either side share its match key (counted in SQL), for `classify_unlinked_row`.
Only the records that need work are ever read back into Python.

SQLite keeps temporary tables in a file of its own with a small page cache, so the
process's memory does not grow with the collection; the tables are dropped when the
resync ends, and never outlive the connection.
"""

from __future__ import annotations

import itertools
import pickle
import sqlite3
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from contextlib import AbstractAsyncContextManager

import aiosqlite
import anyio
import structlog

from connectors.base import Record, RecordId
from reconcilers.model import LinkDigest, Side
from reconcilers.observe import LinkRow, UnlinkedRow

_numbers = itertools.count(1)

# A link whose both records equal its base and which is in sync (or in a settled
# conflict): `classify_link` leaves exactly these alone, so SQL may count them instead.
# NULL (a record not listed) is not 1: those links go to `classify_link`.
_UNCHANGED = "(l.state IN ('synced', 'conflict') AND a.digest = l.base AND e.digest = l.base)"


def _encode(record: Record) -> bytes:
    # Pickled rather than JSON: several times faster to write, and every value comes back
    # as the connector read it (an SQLite BLOB, a PostgreSQL timestamp) for the mapping.
    return pickle.dumps((record.id, record.fields, record.version, record.problem), protocol=pickle.HIGHEST_PROTOCOL)


def _decode(stored: bytes) -> Record:
    record_id, fields, version, problem = pickle.loads(stored)  # noqa: S301 - written by `_encode`, on this connection only
    return Record(RecordId(record_id), fields, version, problem)


def _decode_listed(stored: bytes | None) -> Record | None:
    """A joined record, or None where the listing did not hold it."""
    return _decode(stored) if stored is not None else None


_CHUNK = 1000
_DROP_RETRIES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)

log = structlog.get_logger(__name__)


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
        self._matches = f"temp.listed_matches_{number}"

    async def create(self) -> None:
        for table in self._tables.values():
            await self._db.execute(
                f"CREATE TABLE {table} (id TEXT PRIMARY KEY, digest TEXT, match TEXT, record BLOB NOT NULL,"
                " repeated INTEGER NOT NULL DEFAULT 0)"
            )

    async def drop(self) -> None:
        """Best effort. SQLite refuses DROP TABLE while any statement on the connection is
        active (another task's read, between two fetches), so each drop is tried again
        for a few seconds; a table still left is only disk until the connection closes,
        and never fails the resync."""
        for table in (*self._tables.values(), self._matches):
            for delay in _DROP_RETRIES:
                try:
                    await self._db.execute(f"DROP TABLE IF EXISTS {table}")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc):
                        raise
                    await anyio.sleep(delay)
            else:
                log.warning("resync.scratch_kept", table=table, binding=self._binding)

    async def add(self, side: Side, listed: Iterable[tuple[Record, str | None, str | None]]) -> None:
        """One page of records with their digests and match keys; a record listed twice
        keeps its last sighting, marked as repeated (`repeated`)."""
        rows = [(record.id, digest, match, _encode(record)) for record, digest, match in listed]
        sql = (
            f"INSERT INTO {self._tables[side]} (id, digest, match, record) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET digest = excluded.digest, match = excluded.match,"
            " record = excluded.record, repeated = 1"
        )
        async with self._transaction():
            await self._db.executemany(sql, rows)

    async def repeated(self, side: Side) -> list[RecordId]:
        """The ids `side`'s listing showed more than once: which sighting is right is not
        known, so none is trusted."""
        async with self._db.execute(f"SELECT id FROM {self._tables[side]} WHERE repeated = 1") as cursor:
            return [RecordId(row[0]) for row in await cursor.fetchall()]

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
                for row in rows:
                    yield LinkRow(LinkDigest.from_row(row), _decode_listed(row[6]), _decode_listed(row[7]))

    def _unlinked(self, side: Side, alias: str) -> str:
        column = "app_id" if side is Side.APP else "external_id"
        return f"NOT EXISTS (SELECT 1 FROM links l WHERE l.binding = ? AND l.{column} = {alias}.id)"

    async def _count_matches(self, *, both_sides: bool) -> None:
        """How many unlinked records of each side share each match key: only the keys both
        sides hold, the only ones that can pair or be ambiguous (none, unless both sides
        have unlinked records)."""
        app, external = self._tables[Side.APP], self._tables[Side.EXTERNAL]
        await self._db.execute(
            f"CREATE TABLE {self._matches} (match TEXT PRIMARY KEY, apps INTEGER NOT NULL, externals INTEGER NOT NULL)"
        )
        if not both_sides:
            return
        sql = (
            f"INSERT INTO {self._matches} SELECT match, SUM(app), SUM(external) FROM ("
            f" SELECT t.match, 1 AS app, 0 AS external FROM {app} t"
            f" WHERE t.match IS NOT NULL AND {self._unlinked(Side.APP, 't')}"
            f" UNION ALL SELECT t.match, 0, 1 FROM {external} t"
            f" WHERE t.match IS NOT NULL AND {self._unlinked(Side.EXTERNAL, 't')}"
            ") GROUP BY match HAVING SUM(app) > 0 AND SUM(external) > 0"
        )
        async with self._transaction():
            await self._db.execute(sql, (self._binding, self._binding))
            async with self._db.execute(f"SELECT 1 FROM {self._matches} LIMIT 1") as cursor:
                paired = await cursor.fetchone() is not None
            if paired:  # the app side's pass looks its twin up by match key
                name = external.removeprefix("temp.")
                await self._db.execute(f"CREATE INDEX temp.{name}_match ON {name} (match)")

    async def unlinked(
        self, *, page_size: int, sides: Collection[Side] = tuple(Side)
    ) -> AsyncIterator[tuple[Side, list[UnlinkedRow]]]:
        """The listed records no link holds, app side first, a page at a time in listing
        order. Each page is its own query, so the caller may write links between pages:
        the match counts are taken once, before the first page. Only `sides` are looked
        through: the caller knows a side whose every listed record a link holds."""
        await self._count_matches(both_sides=all(side in sides for side in Side))
        external = self._tables[Side.EXTERNAL]
        twin = (
            f"(SELECT e.record FROM {external} e WHERE m.apps = 1 AND m.externals = 1 AND e.match = t.match"
            f" AND {self._unlinked(Side.EXTERNAL, 'e')} LIMIT 1)"
        )
        for side in [side for side in Side if side in sides]:  # app side first
            after = 0
            sql = (
                f"SELECT t.rowid, t.record, COALESCE(m.apps, 0), COALESCE(m.externals, 0),"
                f" {twin if side is Side.APP else 'NULL'}, t.digest"
                f" FROM {self._tables[side]} t LEFT JOIN {self._matches} m ON m.match = t.match"
                f" WHERE t.rowid > ? AND {self._unlinked(side, 't')} ORDER BY t.rowid LIMIT ?"
            )
            twin_params = (self._binding,) if side is Side.APP else ()
            while True:
                async with self._db.execute(sql, (*twin_params, after, self._binding, page_size)) as cursor:
                    rows = list(await cursor.fetchall())
                if not rows:
                    break
                after = rows[-1][0]
                yield (
                    side,
                    [UnlinkedRow(_decode(row[1]), _decode_listed(row[4]), row[2], row[3], row[5]) for row in rows],
                )
