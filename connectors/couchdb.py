"""CouchDB: the documents of one database, over the CouchDB HTTP API.

Changes come from `_changes?since=<seq>` with the documents included; the sequence
is opaque (a number on PouchDB Server, a string on CouchDB 2 and later) and kept as
the server gave it. Deletions come as `deleted: true` entries of the same feed.

Every write carries the revision the reconcile read (`_rev`), so a document edited
in between answers with a conflict and is observed and planned again, never
overwritten. Creates give the document the id tandem chose, so a create sent twice
conflicts with itself instead of making a twin. Writes go out through `_bulk_docs`:
those that arrive while one is in flight share the next request.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

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
from connectors.bulk import Doc, GroupCommit
from connectors.documents import deep_merge
from connectors.http import HttpClient, HttpSettings, json_body, json_object
from connectors.values import bad_text, taken_in

log = structlog.get_logger(__name__)

DESIGN_PREFIX = "_design/"
"""Design documents hold the database's views and validation, not records."""


SPECIAL_MEMBERS = frozenset({"_id", "_rev", "_deleted", "_attachments"})
"""The `_` members a written document may carry; CouchDB refuses any other."""


@dataclass(frozen=True, slots=True)
class CouchDatabaseSpec:
    database: str


class CouchConnection:
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
        body = json_object(await self.client.request("GET", ""), self._name)
        if "couchdb" not in body and "express-pouchdb" not in body:
            raise ConfigurationError(f"{self._name}: base_url does not answer like a CouchDB server")

    def collection(self, spec: CouchDatabaseSpec) -> CouchCollection:
        return CouchCollection(self.client, spec, page_size=self._page_size)


class CouchCollection:
    def __init__(self, client: HttpClient, spec: CouchDatabaseSpec, *, page_size: int) -> None:
        self._client = client
        self.spec = spec
        self._page_size = page_size
        self._db = quote(spec.database, safe="")
        self._writes = GroupCommit(self._bulk_docs, limit=page_size)

    @property
    def label(self) -> str:
        return f"{self._client.name}:{self.spec.database}"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(change_feed=True, chosen_ids=True)

    @property
    def batches(self) -> int:
        """How many `_bulk_docs` requests the writes took so far."""
        return self._writes.batches

    async def check(self) -> None:
        try:
            await self._client.request("GET", self._db)
        except NotFoundError as exc:
            raise ConfigurationError(f"{self.label}: database {self.spec.database!r} does not exist") from exc
        except AuthError as exc:
            raise ConfigurationError(f"{self.label}: these credentials may not read the database") from exc

    # --- reads -------------------------------------------------------------------

    async def list_page(self, cursor: str | None) -> Page:
        # One row more than the page: its id is where the next page starts.
        params = {"include_docs": "true", "limit": str(self._page_size + 1)}
        if cursor is not None:
            params["startkey"] = cursor
        body = json_object(await self._client.request("GET", f"{self._db}/_all_docs", params=params), self.label)
        rows = body.get("rows")
        if not isinstance(rows, list):
            raise TransientError(f"{self.label}: _all_docs answered without rows")
        following = None
        if len(rows) > self._page_size:
            following = json.dumps(rows[self._page_size].get("id"))
            rows = rows[: self._page_size]
        docs = [row.get("doc") for row in rows if isinstance(row, dict)]
        return Page(records=[r for doc in docs if (r := self._record(doc)) is not None], cursor=following)

    async def get(self, record_id: RecordId) -> Record | None:
        response = await self._client.request("GET", self._item(record_id), allow_not_found=True)
        if response.status_code == 404:
            return None  # never created, or deleted: CouchDB answers 404 for both
        record = self._record(json_object(response, self.label))
        if record is None:
            raise TransientError(f"{self.label}: GET document answered 200 without a document")
        return record

    async def find(self, match: Mapping[str, JSONValue]) -> list[Record]:
        selector = {key: {"$eq": value} for key, value in match.items()}
        try:
            return await self._find(selector)
        except PermanentError:
            return await self._everything()  # no Mango on this server: read everything

    async def changes(self, cursor: str | None) -> ChangeBatch:
        since = json.loads(cursor) if cursor is not None else 0
        params = {"since": _param(since), "include_docs": "true", "limit": str(self._page_size)}
        body = json_object(await self._client.request("GET", f"{self._db}/_changes", params=params), self.label)
        results = body.get("results")
        if not isinstance(results, list) or "last_seq" not in body:
            raise TransientError(f"{self.label}: _changes answered without results and last_seq")
        ids: list[RecordId] = []
        records: list[Record] = []
        for change in results:
            if not isinstance(change, dict) or not isinstance(change.get("id"), str):
                continue
            if change["id"].startswith(DESIGN_PREFIX):
                continue
            ids.append(RecordId(change["id"]))
            if not change.get("deleted") and (record := self._record(change.get("doc"))) is not None:
                records.append(record)
        pending = body.get("pending")
        more = pending > 0 if isinstance(pending, int) else len(results) >= self._page_size
        return ChangeBatch(ids=ids, cursor=json.dumps(body["last_seq"]), more=more, records=records)

    async def _find(self, selector: Mapping[str, Any]) -> list[Record]:
        found: list[Record] = []
        skip = 0
        while True:  # ends on an empty page: a server may cap the page below what was asked
            query = {"selector": selector, "limit": self._page_size, "skip": skip}
            response = await self._client.request("POST", f"{self._db}/_find", json=query, idempotent=True)
            docs = json_object(response, self.label).get("docs")
            if not isinstance(docs, list):
                raise TransientError(f"{self.label}: _find answered without docs")
            if not docs:
                return found
            found.extend(r for doc in docs if (r := self._record(doc)) is not None)
            skip += len(docs)

    async def _everything(self) -> list[Record]:
        records: list[Record] = []
        cursor: str | None = None
        while True:
            page = await self.list_page(cursor)
            records.extend(page.records)
            if page.cursor is None:
                return records
            cursor = page.cursor

    # --- writes ------------------------------------------------------------------

    async def create(self, fields: Mapping[str, JSONValue], *, record_id: RecordId | None = None) -> Record:
        chosen = record_id or RecordId(uuid.uuid4().hex)
        doc = {**fields, "_id": chosen}
        try:
            rev = await self._write(doc)
        except ConflictError:
            # The id is taken: by this very create, sent again after its answer was lost.
            landed = await self.get(chosen)
            if landed is None:
                raise
            return landed
        return Record(id=chosen, fields={**doc, "_rev": rev}, version=rev)

    async def update(
        self, record_id: RecordId, fields: Mapping[str, JSONValue], *, current: Record | None
    ) -> Record | None:
        if current is None or current.version is None:
            current = await self.get(record_id)
            if current is None:
                raise NotFoundError(f"{self.label}: document to update is gone")
        # A document is written whole: the fields tandem does not map are kept as read.
        kept = {k: v for k, v in current.fields.items() if not k.startswith("_") or k in SPECIAL_MEMBERS}
        doc = deep_merge(kept, fields)
        doc.update({"_id": record_id, "_rev": current.version})
        rev = await self._write(doc)
        return Record(id=record_id, fields={**doc, "_rev": rev}, version=rev)

    async def delete(self, record_id: RecordId, *, current: Record | None = None) -> None:
        if current is None or current.version is None:
            current = await self.get(record_id)
            if current is None:
                return
        await self._write({"_id": record_id, "_rev": current.version, "_deleted": True})

    async def _write(self, doc: Doc) -> str:
        reserved = sorted(key for key in doc if key.startswith("_") and key not in SPECIAL_MEMBERS)
        if reserved:
            raise PermanentError(
                f"{self.label}: field {reserved[0]!r} cannot be written: CouchDB reserves names starting with '_'"
            )
        result = await self._writes.write(doc)
        if "rev" in result and not result.get("error"):
            return str(result["rev"])
        error, reason = str(result.get("error", "")), self._client.masker.mask(str(result.get("reason", "")))[:200]
        message = f"{self.label}: document {doc.get('_id')!r} refused: {error}: {reason}"
        if error == "conflict":
            raise ConflictError(message)
        if error == "not_found":
            raise NotFoundError(message)
        if error == "unauthorized":
            raise AuthError(message)
        raise PermanentError(message)  # forbidden by a validate function, a bad special member, ...

    async def _bulk_docs(self, docs: Sequence[Doc]) -> Sequence[Doc]:
        # Each document carries its id and revision, so sending the batch again after a
        # lost answer cannot write anything twice: what landed answers with a conflict.
        response = await self._client.request(
            "POST", f"{self._db}/_bulk_docs", json={"docs": list(docs)}, idempotent=True
        )
        body = json_body(response, self.label)
        if not isinstance(body, list):
            raise TransientError(f"{self.label}: _bulk_docs answered without a list of results")
        return [item if isinstance(item, dict) else {"error": "unknown"} for item in body]

    # --- helpers -----------------------------------------------------------------

    def _item(self, record_id: RecordId) -> str:
        return f"{self._db}/{quote(str(record_id), safe='')}"

    def _record(self, doc: Any) -> Record | None:
        if not isinstance(doc, dict) or not isinstance(doc.get("_id"), str):
            log.warning("couchdb.document_skipped", database=self.label, error="not a document with an _id")
            return None
        if doc["_id"].startswith(DESIGN_PREFIX):
            return None
        rev = doc.get("_rev")
        version = str(rev) if rev is not None else None
        if bad_text(doc["_id"]):
            log.warning("couchdb.document_skipped", database=self.label, error="an _id that is not valid Unicode")
            return None
        return taken_in(RecordId(doc["_id"]), doc, version, self.label)


def _param(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
