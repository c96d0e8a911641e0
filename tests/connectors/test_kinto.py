"""The Kinto connector against a real Kinto server (memory backend) on loopback."""

from collections.abc import AsyncIterator

import pytest

from connectors.base import ConfigurationError, ConflictError, RecordId
from connectors.http import HttpSettings
from connectors.kinto import FeedCursor, KintoCollection, KintoCollectionSpec, KintoConnection
from tests.support.docservers import KINTO_PASSWORD, KINTO_USER, CouchServer, KintoServer, basic_auth_header

pytestmark = pytest.mark.anyio


async def _connection(kinto: KintoServer, *, page_size: int = 100) -> AsyncIterator[KintoConnection]:
    settings = HttpSettings(
        base_url=kinto.url,
        headers={"Authorization": basic_auth_header(KINTO_USER, KINTO_PASSWORD)},
        backoff_base=0.01,
    )
    connection = KintoConnection("crm", settings, page_size=page_size)
    await connection.open()
    try:
        yield connection
    finally:
        await connection.aclose()


@pytest.fixture
async def contacts(kinto: KintoServer) -> AsyncIterator[KintoCollection]:
    bucket = await kinto.new_collection()
    async for connection in _connection(kinto, page_size=7):
        yield connection.collection(KintoCollectionSpec(bucket, "contacts"))


async def test_a_create_sent_twice_with_its_chosen_id_makes_one_record(contacts: KintoCollection, kinto: KintoServer):
    first = await contacts.create({"name": "Ada"}, record_id=RecordId("c1"))
    again = await contacts.create({"name": "Ada"}, record_id=RecordId("c1"))
    assert first.id == again.id == "c1"
    assert again.version == first.version  # the second send found the first's record
    assert [r["name"] for r in await kinto.records(contacts.spec.bucket)] == ["Ada"]


async def test_writes_with_a_stale_version_are_refused_not_applied(contacts: KintoCollection):
    created = await contacts.create({"name": "Ada", "city": "London"})
    edited = await contacts.update(created.id, {"city": "Paris"}, current=created)
    assert edited is not None and edited.version != created.version

    with pytest.raises(ConflictError):  # an edit made after `created` was read
        await contacts.update(created.id, {"city": "Rome"}, current=created)
    with pytest.raises(ConflictError):
        await contacts.delete(created.id, current=created)
    now = await contacts.get(created.id)
    assert now is not None and now.fields["city"] == "Paris"

    await contacts.delete(created.id, current=now)
    assert await contacts.get(created.id) is None
    await contacts.delete(created.id, current=now)  # already gone: nothing to do


async def test_listing_pages_through_everything_once(contacts: KintoCollection):
    for number in range(30):
        await contacts.create({"n": number})
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await contacts.list_page(cursor)
        pages += 1
        seen.extend(r.id for r in page.records)
        if page.cursor is None:
            break
        cursor = page.cursor
    assert len(seen) == len(set(seen)) == 30
    assert pages == 5  # pages of 7


async def test_the_feed_reports_creates_updates_and_tombstones_in_order(contacts: KintoCollection):
    a = await contacts.create({"name": "a"})
    b = await contacts.create({"name": "b"})
    first = await contacts.changes(None)
    assert [str(i) for i in first.ids] == [a.id, b.id] and not first.more

    await contacts.update(a.id, {"name": "a2"}, current=a)
    await contacts.delete(b.id, current=b)
    second = await contacts.changes(first.cursor)
    assert list(second.ids) == [a.id, b.id]
    assert [r.fields["name"] for r in second.records] == ["a2"]  # the tombstone has no record

    quiet = await contacts.changes(second.cursor)
    assert list(quiet.ids) == [] and quiet.cursor == second.cursor and not quiet.history_lost


async def test_a_long_feed_comes_a_page_at_a_time(contacts: KintoCollection):
    for number in range(10):
        await contacts.create({"n": number})
    first = await contacts.changes(None)
    assert len(first.ids) == 7 and first.more
    rest = await contacts.changes(first.cursor)
    assert len(rest.ids) == 3 and not rest.more


async def test_purged_tombstones_behind_the_cursor_report_lost_history(contacts: KintoCollection, kinto: KintoServer):
    gone = await contacts.create({"name": "gone"})
    await contacts.delete(gone.id, current=gone)
    anchored = await contacts.changes(None)
    assert FeedCursor.parse(anchored.cursor).anchored

    # While tandem is away: a deletion, then the operator purges every tombstone.
    missed = await contacts.create({"name": "missed"})
    settled = await contacts.changes(anchored.cursor)
    await contacts.delete(missed.id, current=missed)
    assert await kinto.purge_tombstones(contacts.spec.bucket) == 2

    lost = await contacts.changes(settled.cursor)
    assert lost.history_lost
    assert missed.id not in lost.ids  # the feed cannot see the deletion: only a resync can
    after = await contacts.changes(lost.cursor)
    assert not after.history_lost  # reported once


async def test_a_filter_value_that_looks_like_a_number_still_matches_a_string(contacts: KintoCollection):
    await contacts.create({"code": "12"})
    await contacts.create({"code": 12})
    found = await contacts.find({"code": "12"})
    assert [r.fields["code"] for r in found] == ["12"]


async def test_check_names_a_missing_collection_and_a_server_that_is_not_kinto(kinto: KintoServer, couch: CouchServer):
    async for connection in _connection(kinto):
        await connection.check()
        missing = connection.collection(KintoCollectionSpec("nobucket", "contacts"))
        with pytest.raises(ConfigurationError, match="'nobucket'"):
            await missing.check()
    settings = HttpSettings(base_url=couch.url)
    wrong = KintoConnection("crm", settings)
    await wrong.open()
    try:
        with pytest.raises(ConfigurationError, match="does not answer like a Kinto server"):
            await wrong.check()
    finally:
        await wrong.aclose()
