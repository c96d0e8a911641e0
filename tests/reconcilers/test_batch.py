"""The resync's batch path against the sample app on loopback, a real app table and real state."""

import time
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from connectors.base import Record, RecordId
from connectors.http import HttpSettings
from connectors.pagination import Pagination, PaginationType
from connectors.rest import BulkCreate, RestCollectionSpec, RestConnection
from connectors.sqlite import SqliteConnection, SqliteTableSpec
from reconcilers.batch import BatchApplier
from reconcilers.binding import Binding
from reconcilers.model import FieldMap, Link, LinkState, Policy, Side
from reconcilers.observe import Key, ResyncWork
from reconcilers.resync import BatchPath, observe
from reconcilers.state import NewLink, StateStore, open_state
from reconcilers.workqueue import WorkQueue
from tests.support.daemon import AppDb
from tests.support.servers import inject, request_counts, sample_app, seed

pytestmark = pytest.mark.anyio

PAGES = Pagination(PaginationType.PAGE, size_param="_limit", size=500, page_param="_page")
POLICY = Policy(fields=(FieldMap("title", "title"), FieldMap("note", "note")), match=("title",))


@asynccontextmanager
async def _world(
    tmp_path: Path, *, bulk: BulkCreate | None = None
) -> AsyncIterator[tuple[Binding, StateStore, str, AppDb]]:
    app_db = AppDb(tmp_path / "app.db")
    async with sample_app() as url, open_state(tmp_path / "state.db") as store:
        rest = RestConnection("api", HttpSettings(base_url=url, backoff_base=0.01))
        app = SqliteConnection("app", tmp_path / "app.db")
        await rest.open()
        await app.open()
        try:
            binding = Binding(
                name="tasks",
                policy=POLICY,
                app=app.collection(SqliteTableSpec(table="tasks", columns=("title", "note"))),
                external=rest.collection(RestCollectionSpec(path="/tasks", pagination=PAGES, bulk_create=bulk)),
            )
            await binding.app.check()
            yield binding, store, url, app_db
        finally:
            await rest.aclose()
            await app.aclose()


async def _resync(binding: Binding, store: StateStore, queue: WorkQueue[Key], *, workers: int = 4) -> set[Key]:
    """The keys the batch path took over from the resync (those it then could not carry
    out are on `queue`)."""
    applier = BatchApplier(
        binding, store, queue, workers=workers, clock=time.time, on_writes=lambda side, op, count: None
    )
    taken: set[Key] = set()

    @asynccontextmanager
    async def recording() -> AsyncIterator[BatchPath]:
        async with applier.session() as path:

            async def taking(work: ResyncWork) -> set[Key]:
                keys = await path.take(work)
                taken.update(keys)
                return keys

            async def taking_listed(side: Side, records: Sequence[Record]) -> ResyncWork:
                left = await path.take_listed(side, records)
                taken.update({(side, record.id) for record in records} - set(left.keys))
                return left

            yield BatchPath(taking, taking_listed)

    observed = await observe(
        name="tasks", app=binding.app, external=binding.external, store=store, policy=POLICY,
        allow_deletes=False, batch=recording,
    )  # fmt: skip
    assert not taken & set(observed.work.keys)  # never both taken and left for the reconcile
    return taken


async def test_an_import_pairs_and_creates_by_the_page_without_per_record_requests(tmp_path: Path):
    async with _world(tmp_path) as (binding, store, url, app_db):
        await seed(url, "tasks", [{"title": f"ext {i}"} for i in range(1200)] + [{"title": "both"}])
        app_db.execute("INSERT INTO tasks (title, note) VALUES ('both', NULL), ('app only', 'n')")
        before = await request_counts(url)
        done = await _resync(binding, store, WorkQueue())

        assert len(done) == 1200 + 2 + 1  # 1200 creates into the app, one pair (two keys), one push
        counts = await store.counts("tasks")
        assert counts == {"synced": 1202}
        titles = sorted(row["title"] for row in app_db.rows())
        assert len(titles) == 1202 and titles.count("both") == 1
        after = await request_counts(url)
        assert after.get("POST tasks", 0) - before.get("POST tasks", 0) == 1  # "app only", pushed
        # The listing (3 pages and the empty one), and the lookup before "app only" is pushed:
        # an API's listing is no proof that its twin does not exist.
        assert after.get("GET tasks", 0) - before.get("GET tasks", 0) == 5


async def test_an_import_into_an_empty_side_creates_while_the_listing_goes_on(tmp_path: Path):
    async with _world(tmp_path) as (binding, store, url, app_db):
        await seed(url, "tasks", [{"title": f"ext {i}"} for i in range(1200)])
        # The app's empty listing ends while the second page is on its way; the third lingers.
        await inject(url, status=0, delay=0.5, methods=["GET"], query="_page=2")
        await inject(url, status=0, delay=3.0, methods=["GET"], query="_page=3")
        async with anyio.create_task_group() as tg:
            tg.start_soon(_resync, binding, store, WorkQueue())
            with anyio.fail_after(30):
                while len(app_db.rows()) < 500:
                    await anyio.sleep(0.02)
            gets_at_first_rows = (await request_counts(url)).get("GET tasks", 0)

        # A page was created before the listing asked for its end (the empty 4th page).
        assert gets_at_first_rows < 4
        assert (await request_counts(url)).get("GET tasks", 0) == 4
        assert sorted(app_db.titles()) == sorted(f"ext {i}" for i in range(1200))
        assert await store.counts("tasks") == {"synced": 1200}


@asynccontextmanager
async def _resync_past_page(binding: Binding, store: StateStore, url: str, page: int) -> AsyncIterator[set[Key]]:
    """A resync under way, entered once its listing has asked for `page`; left once it
    is done. Yields the keys the batch path took, complete on leaving."""
    taken: set[Key] = set()

    async def resync() -> None:
        taken.update(await _resync(binding, store, WorkQueue()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(resync)
        with anyio.fail_after(30):
            while (await request_counts(url)).get("GET tasks", 0) < page:
                await anyio.sleep(0.01)
        yield taken


async def test_a_record_a_workers_create_made_during_the_listing_is_left_to_the_reconcile(tmp_path: Path):
    async with _world(tmp_path) as (binding, store, url, app_db):
        await seed(url, "tasks", [{"title": f"ext {i}"} for i in range(600)])
        await inject(url, status=0, delay=0.5, methods=["GET"], query="_page=2")
        async with _resync_past_page(binding, store, url, 2) as taken:
            # While the second page is on its way, a worker pushes app record 99: its write
            # intent is stored, and the record it made is listed on that page.
            intent = NewLink(
                RecordId("99"), None, LinkState.PENDING, intent_side=Side.EXTERNAL, intent_values={"title": "made"}
            )
            await store.insert_links_many("tasks", [intent], now=time.time())
            [made] = await seed(url, "tasks", [{"title": "made"}])

        assert "made" not in app_db.titles()  # not created back into the app
        assert len(app_db.titles()) == 600 and len(taken) == 600
        assert (Side.EXTERNAL, RecordId(str(made["id"]))) not in taken  # the reconcile's to settle


def _counting_reads(store: StateStore) -> list[int]:
    """Counts the store's reads of the creates in flight (one item per read)."""
    reads: list[int] = []
    read = store.pending

    async def counted(binding: str, *, side: Side | None = None, excluding: Collection[int] = ()) -> list[Link]:
        reads.append(1)
        return await read(binding, side=side, excluding=excluding)

    store.pending = counted  # type: ignore[method-assign]
    return reads


async def test_an_import_reads_the_creates_in_flight_again_only_once_another_is_stored(tmp_path: Path):
    async with _world(tmp_path) as (binding, store, url, app_db):
        await seed(url, "tasks", [{"title": f"ext {i}"} for i in range(2000)])
        # The app's empty listing is done before the first page comes; the fifth lingers.
        await inject(url, status=0, delay=0.3, methods=["GET"], query="_page=1")
        await inject(url, status=0, delay=0.5, methods=["GET"], query="_page=5")
        reads = _counting_reads(store)
        async with _resync_past_page(binding, store, url, 5) as taken:
            reads_before = len(reads)
            # While the fifth page is on its way, a worker pushes an app record (an id the
            # import does not reach) as the reconcile does: its intent first, then the
            # record, listed on that page.
            await store.insert_link(
                "tasks", app_id=RecordId("99999"), external_id=None, state=LinkState.PENDING, now=time.time(),
                intent_side=Side.EXTERNAL, intent_values={"title": "made"},
            )  # fmt: skip
            [made] = await seed(url, "tasks", [{"title": "made"}])

        assert reads_before == 1  # four pages, one read: the batch's own intents do not count
        assert "made" not in app_db.titles()  # the fifth page read again, and left it
        assert (Side.EXTERNAL, RecordId(str(made["id"]))) not in taken
        assert len(app_db.titles()) == 2000


async def test_a_refused_create_is_parked_alone_and_an_unknown_outcome_left_to_the_reconcile(tmp_path: Path):
    async with _world(tmp_path) as (binding, store, url, app_db):
        for title in ("refused", "lost", "fine"):
            app_db.execute("INSERT INTO tasks (title) VALUES (?)", (title,))
        # One create at a time, in row order: the first POST is refused, the second's answer lost.
        await inject(url, status=422, count=1, methods=["POST"])
        await inject(url, drop="after", count=1, methods=["POST"])
        queue: WorkQueue[Key] = WorkQueue()
        done = await _resync(binding, store, queue, workers=1)

        fine = await store.link_for("tasks", Side.APP, RecordId("3"))
        refused = await store.link_for("tasks", Side.APP, RecordId("1"))
        lost = await store.link_for("tasks", Side.APP, RecordId("2"))
        assert fine is not None and fine.state is LinkState.SYNCED
        assert refused is not None and refused.state is LinkState.ERROR and "422" in (refused.error or "")
        assert lost is not None and lost.state is LinkState.PENDING  # its intent waits for a lookup
        assert len(done) == 3 and len(queue) == 1  # only the unknown outcome is handed to the reconcile
        assert await queue.get() == (Side.APP, RecordId("2"))


async def test_a_key_a_worker_holds_is_left_to_the_worker_who_looks_again(tmp_path: Path):
    async with _world(tmp_path) as (binding, store, _, app_db):
        app_db.execute("INSERT INTO tasks (title) VALUES ('busy'), ('free')")
        queue: WorkQueue[Key] = WorkQueue()
        busy = (Side.APP, RecordId("1"))
        queue.add(busy)
        assert await queue.get() == busy  # a worker has it in hand
        await _resync(binding, store, queue)
        assert await store.link_for("tasks", Side.APP, RecordId("1")) is None
        free = await store.link_for("tasks", Side.APP, RecordId("2"))
        assert free is not None and free.state is LinkState.SYNCED
        queue.done(busy)  # the worker finishes what it had seen
        assert len(queue) == 1 and await queue.get() == busy  # and is handed the key again


async def test_pushes_go_to_the_bulk_endpoint_and_a_refused_record_fails_alone(tmp_path: Path):
    async with _world(tmp_path, bulk=BulkCreate("/tasks/_bulk", size=100)) as (binding, store, url, app_db):
        titles = [f"app {i}" for i in range(600)]
        titles.insert(150, "   ")  # the sample app refuses a blank title
        for title in titles:
            app_db.execute("INSERT INTO tasks (title) VALUES (?)", (title,))
        before = await request_counts(url)
        await _resync(binding, store, WorkQueue())

        counts = await store.counts("tasks")
        assert counts == {"synced": 600, "error": 1}
        refused = await store.link_for("tasks", Side.APP, RecordId("151"))
        assert refused is not None and "422" in (refused.error or "")
        after = await request_counts(url)
        # Pages of 500 and 101 rows, in chunks of 100: seven bulk requests, and the chunk
        # the blank title refused sent again one record at a time.
        assert after.get("POST tasks", 0) - before.get("POST tasks", 0) == 7 + 100
