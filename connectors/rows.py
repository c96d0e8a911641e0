"""Rows of an app table as records, refusing what would lose or change data silently.

A table can change under a running daemon: a mapped column dropped or renamed would read
as null on every row, and tandem would write those nulls to the other side. That is the
binding's configuration gone wrong, not a record's: every read raises ConfigurationError
until the table or the bindings file is fixed, so nothing is written meanwhile. A row
without an id cannot be synced (nothing could ever name it), and rows sharing an id
cannot both be: the first is said in the log, the second makes that id's record a
problem, parked with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from connectors.base import ConfigurationError, JSONValue, Record, RecordId

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TableRead:
    records: list[Record]
    last_id: Any
    """The last row's id, where the next page starts."""
    rows: int
    """How many rows were read: a page is full by its rows, whether or not each made a record."""


def table_records(
    rows: Iterable[Mapping[str, JSONValue]], *, label: str, id_column: str, columns: Sequence[str]
) -> TableRead:
    """The records of `rows`."""
    records: list[Record] = []
    seen: dict[RecordId, int] = {}
    last: Any = None
    nameless = 0
    count = 0
    checked = False
    for fields in rows:
        count += 1
        if not checked:
            _require_columns(fields, label=label, wanted=(id_column, *columns))
            checked = True
        raw_id = fields[id_column]
        if raw_id is None:
            nameless += 1
            continue
        last = raw_id
        record_id = RecordId(str(raw_id))
        if record_id in seen:
            problem = f"{label}: more than one row has id {record_id!r}; give each row its own id"
            records[seen[record_id]] = Record(record_id, {}, problem=problem)
            continue
        seen[record_id] = len(records)
        records.append(Record(record_id, fields))
    if nameless:
        log.warning(
            "table.rows_without_id", table=label, rows=nameless, id=id_column,
            hint="a row whose id is NULL cannot be synced: give it an id",
        )  # fmt: skip
    return TableRead(records, last, count)


def _require_columns(fields: Mapping[str, JSONValue], *, label: str, wanted: Sequence[str]) -> None:
    missing = [column for column in wanted if column not in fields]
    if missing:
        names = ", ".join(repr(column) for column in missing)
        raise ConfigurationError(
            f"{label}: mapped column {names} is no longer in the table (dropped or renamed?);"
            " nothing is written for this binding until the table or the bindings file is fixed"
        )
