"""The one protocol both sides of a binding speak, and the errors they raise.

The reconciler sees an app table and an external API alike: a collection of records
with string ids, listed page by page, read one at a time, written idempotently.
Every connector translates its own failures into the error tree below at its
boundary, so the reconciler decides retries from the error's type alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NewType, Protocol, runtime_checkable

RecordId = NewType("RecordId", str)

JSONValue = Any
"""A value as JSON or SQLite gives it: None, bool, int, float, str, list or dict."""


@dataclass(frozen=True, slots=True)
class Record:
    """One record as its system holds it: native field names, native values."""

    id: RecordId
    fields: Mapping[str, JSONValue]
    version: str | None = None
    problem: str | None = None
    """Why the record cannot be read as it is (rows sharing its id, a value nested too
    deeply, text that is not Unicode): its fields are left out, and it is parked with this."""


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing; `cursor` is None on the last page."""

    records: Sequence[Record]
    cursor: str | None


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    """Ids changed after a change-feed cursor, and the cursor to read from next.

    `more` says another batch is ready now, so the caller need not wait a poll interval.
    """

    ids: Sequence[RecordId]
    cursor: str | None
    more: bool = False
    records: Sequence[Record] = ()
    """The changed records themselves, where the feed returns them (saves a read each)."""
    history_lost: bool = False
    """The feed cannot vouch for what happened before `cursor` (the server purged its
    tombstones): deletions may be missing, so a full resync is due."""


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What a connector reports about each request it makes (for metrics)."""

    connection: str
    method: str
    code: str
    seconds: float


class RequestObserver(Protocol):
    def __call__(self, info: RequestInfo, /) -> None: ...


def ignore_request(info: RequestInfo, /) -> None:
    """The observer used when nobody is watching."""


# --- errors -------------------------------------------------------------------------


class ConnectorError(Exception):
    """Base of every error a connector raises. Messages never carry secrets."""


class TransientError(ConnectorError):
    """Worth retrying later: a network fault, a timeout, a 5xx, a locked database."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimitedError(TransientError):
    """The other side asked us to slow down (HTTP 429)."""


class ConflictError(TransientError):
    """The record changed under us (409/412): observe again and re-plan."""


class PermanentError(ConnectorError):
    """Retrying the same request cannot succeed: a 4xx, a constraint violation."""


class AuthError(ConnectorError):
    """Credentials were refused (401/403). The connection's state, not a record's fault:
    the work is retried with backoff until the credentials work again, and no record is
    parked for it."""


class NotFoundError(ConnectorError):
    """The record is gone. `get` returns None instead; writes raise this."""


class ConfigurationError(ConnectorError):
    """The connection or collection is set up wrong (a missing table, an unknown column)."""


# --- the protocol -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a collection can do beyond the basics."""

    change_feed: bool = False
    push: bool = False
    """The collection can wake its change feed the moment something changes (`watch`)."""
    chosen_ids: bool = False
    """`create` takes the id tandem chose, and a create sent twice makes one record."""
    batch_create: int = 0
    """How many rows one `create_many` may hold (0: the collection has none)."""
    not_null: frozenset[str] = frozenset()
    """Fields that refuse a null (NOT NULL), known once `check` has read the table."""
    defaulted: frozenset[str] = frozenset()
    """Fields with a default: a create may leave them out (an explicit null is still refused)."""
    listing_is_proof: bool = False
    """A listing that completes is the whole collection (one database query), so a record
    it does not hold does not exist. An API's listing can answer `[]` or cut a page short
    while its records exist: there a create is looked up first, never resting on what a
    listing did not show."""


class Collection(Protocol):
    """A set of records on one side of a binding.

    `delete` of a missing record succeeds; `get` of a missing record returns None;
    `update` of a missing record raises NotFoundError. Where the system can guard a
    write with a version, `update` and `delete` pass `current.version` and raise
    ConflictError when the record has changed since.
    """

    @property
    def label(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def check(self) -> None:
        """Reach the collection once; raise a ConnectorError naming what is wrong."""
        ...

    async def list_page(self, cursor: str | None) -> Page: ...

    async def get(self, record_id: RecordId) -> Record | None: ...

    async def create(self, fields: Mapping[str, JSONValue], *, record_id: RecordId | None = None) -> Record:
        """Create a record; `record_id` is the id to give it (only where `chosen_ids`)."""
        ...

    async def update(
        self, record_id: RecordId, fields: Mapping[str, JSONValue], *, current: Record | None
    ) -> Record | None: ...

    async def delete(self, record_id: RecordId, *, current: Record | None = None) -> None:
        """Delete; where `current` is given, only that version (ConflictError otherwise)."""
        ...

    async def find(self, match: Mapping[str, JSONValue]) -> list[Record]:
        """Records that may have these field values: a superset, the caller filters."""
        ...

    async def changes(self, cursor: str | None) -> ChangeBatch:
        """Ids changed since `cursor` (only where `capabilities.change_feed`)."""
        ...


class PushingCollection(Collection, Protocol):
    async def watch(self, wake: Callable[[], None]) -> None:
        """Call `wake` whenever a change may be waiting; runs until cancelled."""
        ...


@runtime_checkable
class BatchReading(Collection, Protocol):
    async def get_many(self, record_ids: Sequence[RecordId]) -> dict[RecordId, Record]:
        """The records of these ids that exist, in one read."""
        ...


class BatchCreating(Collection, Protocol):
    async def create_many(self, rows: Sequence[Mapping[str, JSONValue]]) -> list[RecordId]:
        """Create every row, all or none, and return their new ids in order (at most
        `capabilities.batch_create` rows): a batch needs nothing else of what it made."""
        ...


class AppTable(Collection, Protocol):
    """An app-side table: a collection whose change log tandem installs."""

    async def install_changelog(self) -> None: ...

    async def remove_changelog(self) -> None: ...

    async def changelog_installed(self) -> bool: ...


class Connection(Protocol):
    """An open line to one system: a database file or an API base URL."""

    @property
    def name(self) -> str: ...

    async def open(self) -> None: ...

    async def aclose(self) -> None: ...

    async def check(self) -> None:
        """Reach the system once; raise a ConnectorError naming what is wrong."""
        ...
