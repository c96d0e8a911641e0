"""The REST connector over real loopback HTTP against the sample app."""

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from connectors.base import (
    AuthError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    RecordId,
    RequestInfo,
    TransientError,
)
from connectors.http import HttpSettings
from connectors.pagination import Pagination, PaginationType
from connectors.rest import ChangedSince, RestCollection, RestCollectionSpec, RestConnection
from tests.support.servers import inject, request_counts, sample_app, seed

pytestmark = pytest.mark.anyio

STYLES = {
    "page": (Pagination(PaginationType.PAGE, size_param="_limit", size=7, page_param="_page"), ""),
    "offset": (Pagination(PaginationType.OFFSET, size_param="limit", size=7, offset_param="offset"), ""),
    "cursor": (
        Pagination(PaginationType.CURSOR, size_param="limit", size=7, cursor_param="cursor"),
        "records",
    ),
    "cursor-header": (
        Pagination(PaginationType.CURSOR, size_param="limit", size=7, next_cursor="header:X-Next-Cursor"),
        "",
    ),
    "link": (Pagination(PaginationType.LINK, size_param="limit", size=7), ""),
    "none": (Pagination(PaginationType.NONE), ""),
}


async def _collection(url: str, **spec: Any) -> AsyncIterator[RestCollection]:
    settings = HttpSettings(
        base_url=url, retries=spec.pop("retries", 2), timeout=spec.pop("timeout", 5.0),
        rate_limit=spec.pop("rate_limit", None), backoff_base=0.01,
    )  # fmt: skip
    connection = RestConnection("tasks", settings, observer=spec.pop("observer", lambda info: None))
    await connection.open()
    try:
        yield connection.collection(RestCollectionSpec(path="/tasks", **spec))
    finally:
        await connection.aclose()


async def _all(collection: RestCollection) -> list[Any]:
    records: list[Any] = []
    cursor: str | None = None
    while True:
        page = await collection.list_page(cursor)
        records.extend(page.records)
        if page.cursor is None:
            return records
        cursor = page.cursor


@pytest.mark.parametrize("style", sorted(STYLES))
async def test_every_pagination_style_lists_every_record_once(style):
    pagination, records_at = STYLES[style]
    async with sample_app(pagination=style) as url:
        await seed(url, "tasks", [{"title": f"t{i}"} for i in range(30)])
        async for tasks in _collection(url, pagination=pagination, records=records_at):
            listed = await _all(tasks)
    assert sorted(r.fields["title"] for r in listed) == sorted(f"t{i}" for i in range(30))
    assert len({r.id for r in listed}) == 30


async def test_page_listing_does_not_stop_at_a_short_page_when_the_server_caps_the_size():
    pagination = Pagination(PaginationType.PAGE, size_param="_limit", size=50, page_param="_page")
    async with sample_app(pagination="page", max_page_size=10) as url:
        await seed(url, "tasks", [{"title": f"t{i}"} for i in range(25)])
        async for tasks in _collection(url, pagination=pagination):
            assert len(await _all(tasks)) == 25


async def test_envelope_and_string_ids_with_url_unsafe_characters():
    async with sample_app(pagination="page", envelope="data", ids="str") as url:
        async for tasks in _collection(url, records="data", record="data"):
            created = await tasks.create({"title": "a/b? c"})
            assert created.id.startswith("rec-")
            fetched = await tasks.get(created.id)
            assert fetched is not None and fetched.fields["title"] == "a/b? c"
            assert await tasks.get(RecordId("a/b?x y")) is None


async def test_crud_and_404_semantics():
    async with sample_app() as url:
        async for tasks in _collection(url):
            created = await tasks.create({"title": "one", "completed": False})
            assert created.id == "1"
            updated = await tasks.update(created.id, {"completed": True}, current=created)
            assert updated is not None and updated.fields["completed"] is True
            await tasks.delete(created.id)
            await tasks.delete(created.id)  # deleting a missing record succeeds
            assert await tasks.get(created.id) is None
            with pytest.raises(NotFoundError):
                await tasks.update(created.id, {"title": "x"}, current=None)


async def test_put_sends_the_whole_record():
    async with sample_app() as url:
        async for tasks in _collection(url, update_method="PUT"):
            created = await tasks.create({"title": "one", "note": "keep me"})
            updated = await tasks.update(created.id, {"title": "two"}, current=None)
            assert updated is not None
            assert updated.fields["note"] == "keep me"
            assert updated.fields["title"] == "two"


async def test_validation_error_is_permanent_and_says_why():
    async with sample_app() as url:
        async for tasks in _collection(url):
            with pytest.raises(PermanentError, match="title is required"):
                await tasks.create({"title": ""})


async def test_429_with_retry_after_is_waited_out_then_succeeds():
    seen: list[RequestInfo] = []
    async with sample_app() as url:
        await inject(url, status=429, retry_after="0.3", count=2, methods=["GET"])
        async for tasks in _collection(url, observer=seen.append, retries=3):
            started = anyio.current_time()
            assert (await tasks.list_page(None)).records == []
            waited = anyio.current_time() - started
    assert [info.code for info in seen] == ["429", "429", "200"]
    assert waited >= 0.6  # both pauses honoured


async def test_429_beyond_retries_is_rate_limited_with_retry_after():
    async with sample_app() as url:
        await inject(url, status=429, retry_after="0.05", count=10)
        async for tasks in _collection(url, retries=1):
            with pytest.raises(RateLimitedError) as caught:
                await tasks.list_page(None)
    assert caught.value.retry_after == pytest.approx(0.05)


async def test_long_retry_after_is_not_slept_inside_a_request():
    async with sample_app() as url:
        await inject(url, status=429, retry_after="120", count=1)
        async for tasks in _collection(url, retries=3):
            with anyio.fail_after(5), pytest.raises(RateLimitedError) as caught:
                await tasks.list_page(None)
    assert caught.value.retry_after == 120


@pytest.mark.parametrize("bogus", ["inf", "1e300", "999999999", "Fri, 31 Dec 9999 23:59:59 GMT"])
async def test_a_bogus_retry_after_pauses_the_connection_no_longer_than_its_cap(bogus):
    async with sample_app() as url:
        await inject(url, status=429, retry_after=bogus, count=1, methods=["GET"])
        connection = RestConnection("tasks", HttpSettings(base_url=url, retries=0, backoff_base=0.01, max_pause=0.5))
        await connection.open()
        try:
            tasks = connection.collection(RestCollectionSpec(path="/tasks"))
            with pytest.raises(RateLimitedError) as caught:
                await tasks.list_page(None)
            assert caught.value.retry_after == 0.5
            with anyio.fail_after(5):  # the connection resumes once the cap has passed
                assert (await tasks.list_page(None)).records == []
        finally:
            await connection.aclose()


async def test_5xx_is_retried_then_transient():
    async with sample_app() as url:
        await inject(url, status=503, count=2)
        async for tasks in _collection(url, retries=2):
            assert (await tasks.list_page(None)).records == []
        await inject(url, status=500, count=5)
        async for tasks in _collection(url, retries=1):
            with pytest.raises(TransientError, match="HTTP 500"):
                await tasks.list_page(None)


async def test_timeout_is_transient():
    async with sample_app() as url:
        await inject(url, status=0, delay=1.0, count=5)
        async for tasks in _collection(url, retries=0, timeout=0.2):
            with pytest.raises(TransientError, match="timeout"):
                await tasks.list_page(None)


async def test_auth_failure_is_permanent_and_the_message_has_no_secret():
    async with sample_app() as url:
        await inject(url, status=401, count=1)
        settings = HttpSettings(base_url=url, headers={"Authorization": "Bearer s3cr3t-token"})
        connection = RestConnection("tasks", settings)
        await connection.open()
        try:
            with pytest.raises(AuthError) as caught:
                await connection.collection(RestCollectionSpec(path="/tasks")).list_page(None)
        finally:
            await connection.aclose()
    assert "s3cr3t" not in str(caught.value)
    assert "HTTP 401 GET /tasks" in str(caught.value)


async def test_truncated_json_is_transient():
    async with sample_app() as url:
        await inject(url, status=200, body='[{"id": 1, "tit', count=5)
        async for tasks in _collection(url, retries=0):
            with pytest.raises(TransientError, match="invalid JSON"):
                await tasks.list_page(None)


async def test_rate_limit_spaces_requests():
    async with sample_app() as url:
        async for tasks in _collection(url, rate_limit=20):
            started = anyio.current_time()
            for _ in range(11):
                await tasks.get(RecordId("1"))
            elapsed = anyio.current_time() - started
    assert elapsed >= 0.5  # 11 requests at 20/s need at least 10 intervals of 50 ms


async def test_find_uses_the_filter_and_changes_use_updated_since():
    async with sample_app() as url:
        await seed(url, "tasks", [{"title": "a"}, {"title": "b"}, {"title": "a"}])
        spec_changes = ChangedSince(param="updated_since", field="updated_at")
        async for tasks in _collection(url, changed_since=spec_changes):
            found = await tasks.find({"title": "a"})
            assert sorted(r.fields["title"] for r in found) == ["a", "a"]
            first = await tasks.changes(None)
            assert len(first.ids) == 3
            created = await tasks.create({"title": "c"})
            later = await tasks.changes(first.cursor)
            assert created.id in later.ids
            assert len(later.ids) <= 2  # only the newest (and the boundary record)
        counts = await request_counts(url)
    assert counts["GET tasks"] >= 3


async def test_a_changes_listing_is_read_a_page_at_a_time_and_moves_on_at_its_end():
    async with sample_app(pagination="cursor") as url:
        await seed(url, "tasks", [{"title": f"t{i}"} for i in range(20)])
        spec_changes = ChangedSince(param="updated_since", field="updated_at")
        async for tasks in _collection(
            url, pagination=STYLES["cursor"][0], records="records", changed_since=spec_changes
        ):
            batches = [await tasks.changes(None)]
            while batches[-1].more:
                batches.append(await tasks.changes(batches[-1].cursor))
            # The cursor's value moves on only with the last page: pages may come in any order.
            assert [len(b.ids) for b in batches] == [7, 7, 6]
            assert all(json.loads(b.cursor or "null")["listing"]["since"] is None for b in batches[:-1])
            assert sorted(i for b in batches for i in b.ids) == sorted(r.id for r in await _all(tasks))
            newest = json.loads(batches[-1].cursor or "null")
            assert newest == max(r.fields["updated_at"] for r in await _all(tasks))

            expired = json.dumps({"listing": {"since": newest, "page": "gone", "newest": newest}})
            restarted = await tasks.changes(expired)
            assert restarted.more and not restarted.ids  # listed again from the value, not stuck
            assert json.loads(restarted.cursor or "null") == newest


async def test_link_pagination_never_follows_another_server():
    async with sample_app(pagination="link") as url:
        async for tasks in _collection(url, pagination=STYLES["link"][0]):
            with pytest.raises(PermanentError, match="another server"):
                await tasks.list_page("http://127.0.0.2:1/tasks?offset=7")


async def test_a_create_is_never_sent_twice_after_an_ambiguous_failure():
    async with sample_app() as url:
        await inject(url, status=500, count=1, methods=["POST"])
        async for tasks in _collection(url, retries=3):
            with pytest.raises(TransientError, match="HTTP 500 POST"):
                await tasks.create({"title": "once"})
        counts = await request_counts(url)
    assert counts["POST tasks"] == 1  # the caller settles it by lookup, not by sending again


async def test_a_create_refused_with_429_is_sent_again():
    async with sample_app() as url:
        await inject(url, status=429, retry_after="0.05", count=1, methods=["POST"])
        async for tasks in _collection(url, retries=3):
            created = await tasks.create({"title": "after the pause"})
        counts = await request_counts(url)
    assert created.fields["title"] == "after the pause"
    assert counts["POST tasks"] == 2


async def test_a_200_without_a_record_is_a_fault_not_a_deletion():
    async with sample_app() as url:
        (record,) = await seed(url, "tasks", [{"title": "still here"}])
        await inject(url, status=200, body="[]", count=1, methods=["GET"])
        async for tasks in _collection(url, retries=0):
            with pytest.raises(TransientError, match="without a record"):
                await tasks.get(RecordId(str(record["id"])))


async def test_a_dropped_connection_is_retried_for_a_read():
    async with sample_app() as url:
        (record,) = await seed(url, "tasks", [{"title": "behind a flaky link"}])
        await inject(url, drop="before", count=2, methods=["GET"])
        async for tasks in _collection(url, retries=3):
            found = await tasks.get(RecordId(str(record["id"])))
        counts = await request_counts(url)
    assert found is not None and found.fields["title"] == "behind a flaky link"
    assert counts["GET tasks"] == 3


async def test_a_create_whose_connection_drops_after_the_server_acted_is_not_sent_again():
    async with sample_app() as url:
        await inject(url, drop="after", count=1, methods=["POST"])
        async for tasks in _collection(url, retries=3):
            with pytest.raises(TransientError, match="POST"):
                await tasks.create({"title": "made once"})
        counts = await request_counts(url)
        async with httpx.AsyncClient() as client:
            titles = [r["title"] for r in (await client.get(f"{url}/_admin/direct/tasks")).json()]
    assert counts["POST tasks"] == 1
    assert titles == ["made once"]  # the server made it; the intent's lookup will find it


async def test_429_without_retry_after_and_502_are_retried_with_backoff():
    async with sample_app() as url:
        (record,) = await seed(url, "tasks", [{"title": "patience"}])
        await inject(url, status=429, count=1, methods=["GET"])  # no Retry-After: our own backoff
        await inject(url, status=502, count=1, methods=["GET"])
        async for tasks in _collection(url, retries=3):
            found = await tasks.get(RecordId(str(record["id"])))
        counts = await request_counts(url)
    assert found is not None and found.fields["title"] == "patience"
    assert counts["GET tasks"] == 3
