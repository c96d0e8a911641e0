"""The CouchDB connector against a real PouchDB Server (in memory) on loopback."""

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from connectors.base import ConfigurationError, ConflictError, PermanentError, Record, RecordId
from connectors.couchdb import CouchCollection, CouchConnection, CouchDatabaseSpec
from connectors.http import HttpSettings
from tests.support.docservers import CouchServer

pytestmark = pytest.mark.anyio


@pytest.fixture
async def contacts(couch: CouchServer) -> AsyncIterator[CouchCollection]:
    database = await couch.new_database()
    connection = CouchConnection("docs", HttpSettings(base_url=couch.url, backoff_base=0.01), page_size=7)
    await connection.open()
    try:
        yield connection.collection(CouchDatabaseSpec(database))
    finally:
        await connection.aclose()


async def test_a_create_sent_twice_with_its_chosen_id_makes_one_document(contacts: CouchCollection, couch: CouchServer):
    first = await contacts.create({"name": "Ada"}, record_id=RecordId("c1"))
    again = await contacts.create({"name": "Ada"}, record_id=RecordId("c1"))
    assert first.id == again.id == "c1" and again.version == first.version
    assert [d["name"] for d in await couch.docs(contacts.spec.database)] == ["Ada"]


async def test_writes_with_a_stale_revision_are_refused_not_applied(contacts: CouchCollection):
    created = await contacts.create({"name": "Ada", "city": "London", "tags": ["x"]})
    edited = await contacts.update(created.id, {"city": "Paris"}, current=created)
    assert edited is not None and edited.version != created.version

    with pytest.raises(ConflictError):
        await contacts.update(created.id, {"city": "Rome"}, current=created)
    with pytest.raises(ConflictError):
        await contacts.delete(created.id, current=created)
    now = await contacts.get(created.id)
    assert now is not None
    assert now.fields["city"] == "Paris" and now.fields["tags"] == ["x"]  # unmapped fields kept

    await contacts.delete(created.id, current=now)
    assert await contacts.get(created.id) is None
    await contacts.delete(created.id)  # already gone: nothing to do


async def test_listing_pages_through_everything_once_without_design_documents(
    contacts: CouchCollection, couch: CouchServer
):
    for number in range(30):
        await contacts.create({"n": number})
    async with couch.client() as client:
        design = {"views": {"by_n": {"map": "function (doc) { emit(doc.n); }"}}}
        (await client.put(f"{contacts.spec.database}/_design/app", json=design)).raise_for_status()
    seen: list[str] = []
    cursor = None
    while True:
        page = await contacts.list_page(cursor)
        seen.extend(r.id for r in page.records)
        if page.cursor is None:
            break
        cursor = page.cursor
    assert len(seen) == len(set(seen)) == 30


async def test_the_feed_reports_changes_and_deletions_a_page_at_a_time(contacts: CouchCollection):
    made = [await contacts.create({"n": number}) for number in range(9)]
    first = await contacts.changes(None)
    assert len(first.ids) == 7 and first.more
    second = await contacts.changes(first.cursor)
    assert len(second.ids) == 2 and not second.more

    await contacts.update(made[0].id, {"n": 100}, current=made[0])
    await contacts.delete(made[1].id, current=made[1])
    third = await contacts.changes(second.cursor)
    assert list(third.ids) == [made[0].id, made[1].id]
    assert [r.fields["n"] for r in third.records] == [100]  # a deletion has no document
    quiet = await contacts.changes(third.cursor)
    assert list(quiet.ids) == [] and not quiet.more


async def test_writes_that_arrive_together_share_one_bulk_request(contacts: CouchCollection, couch: CouchServer):
    made: list[Record] = []

    async def create(number: int) -> None:
        made.append(await contacts.create({"n": number}))

    async with anyio.create_task_group() as tg:
        for number in range(20):
            tg.start_soon(create, number)
    assert len({r.id for r in made}) == 20
    assert sorted(d["n"] for d in await couch.docs(contacts.spec.database)) == list(range(20))
    bulk = [r for r in couch.requests(contacts.spec.database) if r[1].endswith("/_bulk_docs")]
    assert len(bulk) == contacts.batches < 20


async def test_one_refused_document_does_not_fail_its_batch_neighbours(contacts: CouchCollection):
    results: dict[str, object] = {}

    async def run(name: str, fields: dict[str, Any]) -> None:
        try:
            results[name] = await contacts.create(fields)
        except PermanentError as exc:
            results[name] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "good", {"n": 1})
        tg.start_soon(run, "bad", {"_reserved": 1})  # CouchDB refuses unknown _ members
        tg.start_soon(run, "also good", {"n": 2})
    assert isinstance(results["bad"], PermanentError) and "_reserved" in str(results["bad"])
    assert isinstance(results["good"], Record) and isinstance(results["also good"], Record)


async def test_find_asks_with_a_selector(contacts: CouchCollection):
    await contacts.create({"email": "a@example.com", "n": 1})
    await contacts.create({"email": "b@example.com", "n": 2})
    found = await contacts.find({"email": "b@example.com"})
    assert [r.fields["n"] for r in found] == [2]


async def test_check_names_a_missing_database(couch: CouchServer):
    connection = CouchConnection("docs", HttpSettings(base_url=couch.url))
    await connection.open()
    try:
        await connection.check()
        with pytest.raises(ConfigurationError, match="'nodb' does not exist"):
            await connection.collection(CouchDatabaseSpec("nodb")).check()
    finally:
        await connection.aclose()
