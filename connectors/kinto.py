"""Kinto: the records of one collection in one bucket, over Kinto's HTTP API.

Changes come from `?_since=<timestamp>` sorted by `last_modified`, one page at a
time; deletions come as tombstones (`deleted: true`) in the same listing. Kinto's
timestamps are unique and increasing within a collection, so the newest timestamp
read is an exact cursor.

Every write is guarded: updates and deletes send `If-Match` with the version the
reconcile read, so a record edited in between answers 412 and is observed and
planned again; creates `PUT` the id tandem chose with `If-None-Match: *`, so a
create sent twice lands once.

Tombstones can be purged by the server's operator. A cursor older than the purge
would then miss deletions, so each read of the feed also asks whether a tombstone
at or before the cursor still exists; when one did and none does any more, the
feed reports its history lost and a full resync follows.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import structlog

from connectors.base import (
    AuthError,
    Capabilities,
    ChangeBatch,
    ConfigurationError,
    ConflictError,
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
from connectors.http import HttpClient, HttpSettings, is_scalar, json_object
from connectors.values import bad_text, taken_in

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class KintoCollectionSpec:
    bucket: str
    collection: str


@dataclass(frozen=True, slots=True)
class FeedCursor:
    """Where the feed stands: the newest timestamp read, and whether a tombstone at or
    before it existed then (only then can a later purge past it be noticed)."""

    since: int
    anchored: bool = False

    @classmethod
    def parse(cls, text: str | None) -> FeedCursor:
        if text is None:
            return cls(since=0)
        try:
            raw = json.loads(text)
            return cls(since=int(raw["since"]), anchored=bool(raw["anchored"]))
        except (ValueError, TypeError, KeyError) as exc:
            raise PermanentError(f"unreadable Kinto feed cursor {text[:40]!r}") from exc

    def dump(self) -> str:
        return json.dumps({"since": self.since, "anchored": self.anchored})


class KintoConnection:
    def __init__(
        self,
        name: str,
        settings: HttpSettings,
        *,
        page_size: int = 200,
        observer: RequestObserver = ignore_request,
    ) -> None:
        self._name = name
        self._page_size = page_size
        self.client = HttpClient(name, settings, observer=observer)

    @property
    def name(self) -> str:
        return self._name

    async def open(self) -> None:
        await self.client.open()

    async def aclose(self) -> None:
        await self.client.aclose()

    async def check(self) -> None:
        """The server root answers with Kinto's hello (and, when logged in, the user)."""
        response = await self.client.request("GET", "")
        body = json_object(response, self._name)
        if not isinstance(body, dict) or "project_name" not in body:
            raise ConfigurationError(f"{self._name}: base_url does not answer like a Kinto server (expected …/v1)")

    def collection(self, spec: KintoCollectionSpec) -> KintoCollection:
        return KintoCollection(self.client, spec, page_size=self._page_size)


class KintoCollection:
    def __init__(self, client: HttpClient, spec: KintoCollectionSpec, *, page_size: int) -> None:
        self._client = client
        self.spec = spec
        self._page_size = page_size
        self._collection = f"buckets/{_segment(spec.bucket)}/collections/{_segment(spec.collection)}"
        self._records = f"{self._collection}/records"

    @property
    def label(self) -> str:
        return f"{self._client.name}:{self.spec.bucket}/{self.spec.collection}"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(change_feed=True, chosen_ids=True)

    async def check(self) -> None:
        try:
            await self._client.request("GET", self._collection)
        except (NotFoundError, AuthError) as exc:
            # Kinto answers 403 rather than 404 for a bucket the user may not read.
            raise ConfigurationError(
                f"{self.label}: bucket {self.spec.bucket!r} or collection {self.spec.collection!r}"
                " does not exist or these credentials may not read it"
            ) from exc

    # --- reads -------------------------------------------------------------------

    async def list_page(self, cursor: str | None) -> Page:
        if cursor is None:
            response = await self._client.request("GET", self._records, params=self._page_params())
        else:
            response = await self._follow(cursor)
        live, _ = self._parse_listing(response)
        return Page(records=live, cursor=response.headers.get("Next-Page"))

    async def get(self, record_id: RecordId) -> Record | None:
        response = await self._client.request("GET", self._item(record_id), allow_not_found=True)
        if response.status_code == 404:
            return None
        record = self._record(json_object(response, self.label).get("data"))
        if record is None:
            raise TransientError(f"{self.label}: GET record answered 200 without a record")
        return record

    async def find(self, match: Mapping[str, JSONValue]) -> list[Record]:
        # Kinto reads each filter value as JSON: encoded, a string "12" stays a string.
        filters = {k: json.dumps(v) for k, v in match.items() if "." not in k and is_scalar(v)}
        try:
            return await self._all(filters)
        except PermanentError:
            return await self._all({})  # a filter the server refused: read everything

    async def changes(self, cursor: str | None) -> ChangeBatch:
        at = FeedCursor.parse(cursor)
        params = {**self._page_params(), "_since": str(at.since)}
        response = await self._client.request("GET", self._records, params=params)
        live, deleted = self._parse_listing(response)
        newest = max([at.since, *(_stamp(r.version) for r in live), *(stamp for _, stamp in deleted)])
        still_anchored = await self._tombstone_at_or_before(at.since) if at.since > 0 else False
        lost = at.anchored and not still_anchored
        if lost:
            log.warning(
                "kinto.tombstones_purged", collection=self.label, since=at.since,
                hint="deletions before the purge may be missing from the feed: a full resync follows",
            )  # fmt: skip
        following = FeedCursor(since=newest, anchored=still_anchored or bool(deleted))
        ids = [r.id for r in live] + [record_id for record_id, _ in deleted]
        return ChangeBatch(
            ids=ids,
            cursor=following.dump(),
            more="Next-Page" in response.headers,
            records=live,
            history_lost=lost,
        )

    async def _tombstone_at_or_before(self, stamp: int) -> bool:
        params = {"_before": str(stamp + 1), "deleted": "true", "_sort": "-last_modified", "_limit": "1"}
        response = await self._client.request("GET", self._records, params=params)
        _, deleted = self._parse_listing(response)
        return bool(deleted)

    async def _all(self, filters: Mapping[str, str]) -> list[Record]:
        records: list[Record] = []
        response = await self._client.request("GET", self._records, params={**self._page_params(), **filters})
        while True:
            live, _ = self._parse_listing(response)
            records.extend(live)
            following = response.headers.get("Next-Page")
            if not following:
                return records
            response = await self._follow(following)

    async def _follow(self, url: str) -> httpx.Response:
        if not self._client.same_origin(url):
            raise PermanentError(f"{self.label}: Next-Page is on another server; not followed")
        return await self._client.request("GET", url)

    # --- writes ------------------------------------------------------------------

    async def create(self, fields: Mapping[str, JSONValue], *, record_id: RecordId | None = None) -> Record:
        chosen = record_id or RecordId(uuid.uuid4().hex)
        try:
            response = await self._client.request(
                "PUT", self._item(chosen), json={"data": dict(fields)}, headers={"If-None-Match": "*"}
            )
        except ConflictError:
            # The id is taken: by this very create, sent again after its answer was lost.
            landed = await self.get(chosen)
            if landed is None:
                raise
            return landed
        return self._written(response)

    async def update(
        self, record_id: RecordId, fields: Mapping[str, JSONValue], *, current: Record | None
    ) -> Record | None:
        if current is None or current.version is None:
            current = await self.get(record_id)
            if current is None:
                raise NotFoundError(f"{self.label}: record to update is gone")
        response = await self._client.request(
            "PATCH", self._item(record_id), json={"data": dict(fields)}, headers=_if_match(current)
        )
        return self._written(response)

    async def delete(self, record_id: RecordId, *, current: Record | None = None) -> None:
        headers = _if_match(current) if current is not None and current.version is not None else None
        await self._client.request("DELETE", self._item(record_id), headers=headers, allow_not_found=True)

    # --- helpers -----------------------------------------------------------------

    def _page_params(self) -> dict[str, str]:
        return {"_sort": "last_modified", "_limit": str(self._page_size)}

    def _item(self, record_id: RecordId) -> str:
        return f"{self._records}/{_segment(record_id)}"

    def _written(self, response: httpx.Response) -> Record:
        record = self._record(json_object(response, self.label).get("data"))
        if record is None:
            raise TransientError(f"{self.label}: write answered without the record")
        return record

    def _parse_listing(self, response: httpx.Response) -> tuple[list[Record], list[tuple[RecordId, int]]]:
        items = json_object(response, self.label).get("data")
        if not isinstance(items, list):
            raise TransientError(f"{self.label}: listing answered without a list at 'data'")
        live: list[Record] = []
        deleted: list[tuple[RecordId, int]] = []
        for item in items:
            if isinstance(item, dict) and item.get("deleted") is True and isinstance(item.get("id"), str):
                deleted.append((RecordId(item["id"]), _stamp(item.get("last_modified"))))
            elif (record := self._record(item)) is not None:
                live.append(record)
        return live, deleted

    def _record(self, item: Any) -> Record | None:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            log.warning("kinto.record_skipped", collection=self.label, error="not a record with an id")
            return None
        stamp = item.get("last_modified")
        version = str(stamp) if stamp is not None else None
        if bad_text(item["id"]):
            log.warning("kinto.record_skipped", collection=self.label, error="an id that is not valid Unicode")
            return None
        return taken_in(RecordId(item["id"]), item, version, self.label)


def _if_match(record: Record) -> dict[str, str]:
    return {"If-Match": f'"{record.version}"'}


def _stamp(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _segment(value: str) -> str:
    return quote(str(value), safe="")
