"""A declarative connector for typical JSON REST APIs.

A collection lives at a path: GET lists it (in any pagination style), GET path/{id}
reads one record, POST creates, PATCH or PUT updates, DELETE deletes. Ids are
URL-encoded into paths; 404 on a read, update or delete means the record is gone.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import structlog

from connectors.base import (
    Capabilities,
    ChangeBatch,
    ConfigurationError,
    JSONValue,
    NotFoundError,
    Page,
    PermanentError,
    Record,
    RecordId,
    RequestObserver,
    TransientError,
    ignore_request,
)
from connectors.documents import deep_merge
from connectors.http import HttpClient, HttpSettings, is_scalar, json_body
from connectors.pagination import Pagination, dig, next_cursor, request_for
from connectors.values import bad_text, taken_in

log = structlog.get_logger(__name__)


class Lookup(enum.StrEnum):
    QUERY = "query"  # ask the API to filter: ?field=value (results are filtered again here)
    LIST = "list"  # the API cannot filter: read the whole listing


@dataclass(frozen=True, slots=True)
class ChangedSince:
    param: str
    field: str


@dataclass(frozen=True, slots=True)
class BulkCreate:
    """An endpoint that creates many records in one request, all or none, and answers
    with the created records in the order sent."""

    path: str
    size: int = 100
    body: str = ""
    """The key the list is sent under; empty: the request body is the list."""
    records: str = ""
    """Where the answer holds the created records; empty: the answer is the list."""


@dataclass(frozen=True, slots=True)
class RestCollectionSpec:
    path: str
    id: str = "id"
    records: str = ""
    record: str = ""
    pagination: Pagination = field(default_factory=Pagination)
    update_method: str = "PATCH"
    changed_since: ChangedSince | None = None
    lookup: Lookup = Lookup.QUERY
    bulk_create: BulkCreate | None = None


class RestConnection:
    def __init__(
        self,
        name: str,
        settings: HttpSettings,
        *,
        observer: RequestObserver = ignore_request,
    ) -> None:
        self._name = name
        self.client = HttpClient(name, settings, observer=observer)

    @property
    def name(self) -> str:
        return self._name

    async def open(self) -> None:
        await self.client.open()

    async def aclose(self) -> None:
        await self.client.aclose()

    async def check(self) -> None:
        """Nothing to reach without a path: each collection's `check` lists one page."""

    def collection(self, spec: RestCollectionSpec) -> RestCollection:
        return RestCollection(self.client, spec)


class RestCollection:
    def __init__(self, client: HttpClient, spec: RestCollectionSpec) -> None:
        self._client = client
        self.spec = spec
        self._path = "/" + spec.path.strip("/")
        self._flat_id = "." not in spec.id and spec.id != ""  # read for every record listed

    @property
    def label(self) -> str:
        return f"{self._client.name}:{self._path}"

    @property
    def capabilities(self) -> Capabilities:
        bulk = self.spec.bulk_create
        return Capabilities(change_feed=self.spec.changed_since is not None, batch_create=bulk.size if bulk else 0)

    async def check(self) -> None:
        await self.list_page(None)

    # --- reads -------------------------------------------------------------------

    async def list_page(self, cursor: str | None, *, extra: Mapping[str, Any] | None = None) -> Page:
        request = request_for(self.spec.pagination, cursor)
        if request.url is not None and not self._client.same_origin(request.url):
            raise PermanentError(f"{self.label}: next page is on another server; not followed")
        params = {**request.params, **(extra or {})} if request.url is None else None
        response = await self._client.request("GET", request.url or self._path, params=params)
        body = json_body(response, self.label)
        items = dig(body, self.spec.records)
        if not isinstance(items, list):
            where = f"at {self.spec.records!r}" if self.spec.records else "at the top level"
            raise PermanentError(f"{self.label}: expected a list of records {where}")
        records = [record for item in items if (record := self._record(item)) is not None]
        following = next_cursor(self.spec.pagination, cursor=cursor, response=response, body=body, count=len(items))
        return Page(records=records, cursor=following)

    async def get(self, record_id: RecordId) -> Record | None:
        response = await self._client.request("GET", self._item(record_id), allow_not_found=True)
        if response.status_code == 404:
            return None
        record = self._single(response)
        if record is None:
            # Only a 404 says "gone": a 200 without a record is a fault, never a deletion.
            raise TransientError(f"{self.label}: GET {self._path}/{{id}} answered 200 without a record")
        return record

    async def find(self, match: Mapping[str, JSONValue]) -> list[Record]:
        query = {k: _param(v) for k, v in match.items() if "." not in k and is_scalar(v)}
        if self.spec.lookup is Lookup.LIST or not query:
            return await self._all()
        try:
            return await self._all(extra=query)
        except PermanentError:
            return await self._all()  # the API refused the filter: read everything instead

    async def changes(self, cursor: str | None) -> ChangeBatch:
        """One page of the records changed since the cursor's value.

        The value moves on only once the whole listing from it has been read: the API may
        return the changed records in any order, so the newest value of a page says nothing
        of the pages after it. Meanwhile the cursor carries the listing's page, so a backlog
        (or the first poll, which lists everything) costs a page of memory, not all of it."""
        since = self.spec.changed_since
        if since is None:
            raise ConfigurationError(f"{self.label}: no changed_since configured")
        at = _FeedPosition.parse(cursor)
        extra = {since.param: at.since} if at.since is not None else {}
        try:
            page = await self.list_page(at.page, extra=extra)
        except PermanentError:
            if at.page is None:
                raise
            # A page cursor kept across a restart may have expired: list again from `since`.
            log.warning("rest.feed_page_expired", collection=self.label)
            return ChangeBatch(ids=[], cursor=_value(at.since), more=True)
        newest = at.newest
        for record in page.records:
            value = dig(record.fields, since.field)
            if value is not None and (newest is None or _later(value, newest)):
                newest = value
        ids = [r.id for r in page.records]
        if page.cursor is not None:
            return ChangeBatch(
                ids=ids, cursor=_FeedPosition(at.since, page.cursor, newest).dump(), more=True, records=page.records
            )
        return ChangeBatch(ids=ids, cursor=_value(newest), records=page.records)

    async def _all(self, *, extra: Mapping[str, Any] | None = None) -> list[Record]:
        records: list[Record] = []
        cursor: str | None = None
        while True:
            page = await self.list_page(cursor, extra=extra)
            records.extend(page.records)
            if page.cursor is None:
                return records
            cursor = page.cursor

    # --- writes ------------------------------------------------------------------

    async def create(self, fields: Mapping[str, JSONValue], *, record_id: RecordId | None = None) -> Record:
        # The table or API picks ids (no `chosen_ids`): `record_id` is never passed.
        response = await self._client.request("POST", self._path, json=dict(fields))
        record = self._single(response) if response.content else None
        if record is not None:
            return record
        location = response.headers.get("Location")
        if location:
            return Record(id=RecordId(location.rstrip("/").rsplit("/", 1)[-1]), fields=dict(fields))
        raise PermanentError(f"{self.label}: create answered without an id")

    async def create_many(self, rows: Sequence[Mapping[str, JSONValue]]) -> list[RecordId]:
        """One request to the bulk endpoint. An answer that does not hold one record with
        an id per row sent leaves every outcome unknown: the write intents settle them."""
        bulk = self.spec.bulk_create
        if bulk is None or len(rows) > bulk.size:
            raise PermanentError(f"{self.label}: {len(rows)} rows exceed the bulk endpoint's size")
        sent = [dict(row) for row in rows]
        response = await self._client.request(
            "POST", "/" + bulk.path.strip("/"), json={bulk.body: sent} if bulk.body else sent
        )
        items = dig(json_body(response, self.label), bulk.records)
        created = [self._record(item) for item in items] if isinstance(items, list) else []
        records = [record for record in created if record is not None]
        if len(records) != len(rows):
            raise TransientError(
                f"{self.label}: a bulk create of {len(rows)} was answered with {len(records)} records with an id"
            )
        return [record.id for record in records]

    async def update(
        self, record_id: RecordId, fields: Mapping[str, JSONValue], *, current: Record | None
    ) -> Record | None:
        method = self.spec.update_method.upper()
        body: dict[str, Any] = dict(fields)
        if method == "PUT":
            if current is None:
                current = await self.get(record_id)
                if current is None:
                    raise NotFoundError(f"{self.label}: record to update is gone")
            body = deep_merge(dict(current.fields), fields)
        response = await self._client.request(method, self._item(record_id), json=body)
        return self._single(response) if response.content else None

    async def delete(self, record_id: RecordId, *, current: Record | None = None) -> None:
        # No version to guard with: the reconciler's fresh read is the guard.
        await self._client.request("DELETE", self._item(record_id), allow_not_found=True)

    # --- helpers -----------------------------------------------------------------

    def _item(self, record_id: RecordId) -> str:
        return f"{self._path}/{quote(str(record_id), safe='')}"

    def _single(self, response: httpx.Response) -> Record | None:
        body = dig(json_body(response, self.label), self.spec.record)
        return self._record(body) if isinstance(body, dict) else None

    def _record(self, item: Any) -> Record | None:
        if not isinstance(item, dict):
            log.warning("rest.record_skipped", collection=self.label, error="not an object")
            return None
        raw_id = item.get(self.spec.id) if self._flat_id else dig(item, self.spec.id)
        if raw_id is None or isinstance(raw_id, dict | list) or raw_id == "":
            log.warning("rest.record_skipped", collection=self.label, error=f"no {self.spec.id!r}")
            return None
        record_id = RecordId(str(raw_id))
        if bad_text(record_id):
            log.warning("rest.record_skipped", collection=self.label, error=f"{self.spec.id!r} is not valid Unicode")
            return None
        return taken_in(record_id, item, None, self.label)


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


@dataclass(frozen=True, slots=True)
class _FeedPosition:
    """Where a changed-since feed stands: the value listed from, and within that listing
    the next page and the newest value seen so far. Between listings it is stored as the
    bare JSON value, as it always was."""

    since: Any
    page: str | None
    newest: Any

    @classmethod
    def parse(cls, cursor: str | None) -> _FeedPosition:
        value = json.loads(cursor) if cursor is not None else None
        if isinstance(value, dict) and set(value) == {"listing"}:
            listing = value["listing"]
            return cls(listing.get("since"), listing.get("page"), listing.get("newest"))
        return cls(value, None, value)

    def dump(self) -> str:
        return json.dumps({"listing": {"since": self.since, "page": self.page, "newest": self.newest}})


def _value(value: Any) -> str | None:
    return json.dumps(value) if value is not None else None


def _later(value: Any, than: Any) -> bool:
    try:
        return bool(value > than)
    except TypeError:
        return str(value) > str(than)
