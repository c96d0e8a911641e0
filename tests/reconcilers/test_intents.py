"""Write intents settled by lookup, against the sample app on loopback and real state."""

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from connectors.base import Record, RecordId
from connectors.http import HttpSettings
from connectors.rest import RestCollectionSpec, RestConnection
from connectors.sqlite import SqliteConnection, SqliteTableSpec
from reconcilers.binding import Binding
from reconcilers.intents import INTENT_WINDOW, Settled, settle_intent
from reconcilers.model import FieldMap, Link, LinkState, Policy, Side
from reconcilers.reconcile import Reconciler
from reconcilers.state import StateStore, open_state
from tests.support.daemon import AppDb
from tests.support.servers import sample_app, seed

pytestmark = pytest.mark.anyio

POLICY = Policy(fields=(FieldMap("title", "title"),), match=("title",))


@asynccontextmanager
async def _world(tmp_path: Path) -> AsyncIterator[tuple[Binding, StateStore, str]]:
    AppDb(tmp_path / "app.db")
    async with sample_app() as url, open_state(tmp_path / "state.db") as store:
        rest = RestConnection("api", HttpSettings(base_url=url))
        app = SqliteConnection("app", tmp_path / "app.db")
        await rest.open()
        await app.open()
        try:
            binding = Binding(
                name="tasks",
                policy=POLICY,
                app=app.collection(SqliteTableSpec(table="tasks", columns=("title",))),
                external=rest.collection(RestCollectionSpec(path="/tasks")),
            )
            await binding.app.check()  # as at start-up: learns the table's id type
            yield binding, store, url
        finally:
            await rest.aclose()
            await app.aclose()


async def _pending(store: StateStore) -> int:
    return await store.insert_link(
        "tasks", app_id=RecordId("7"), external_id=None, state=LinkState.PENDING, now=1.0,
        intent_side=Side.EXTERNAL, intent_values={"title": "made"},
    )  # fmt: skip


async def _link(store: StateStore, row: int) -> Link:
    link = await store.link_by_row(row)
    assert link is not None
    return link


async def test_a_create_that_happened_is_linked_not_repeated(tmp_path):
    async with _world(tmp_path) as (binding, store, url):
        row = await _pending(store)
        (made,) = await seed(url, "tasks", [{"title": "made"}])
        await seed(url, "tasks", [{"title": "other"}])
        settled, _ = await settle_intent(await _link(store, row), binding=binding, store=store, now=2.0)
        assert settled is Settled.FOUND
        link = await store.link_by_row(row)
        assert link is not None
        assert link.external_id == str(made["id"])
        assert link.state is LinkState.SYNCED


async def test_a_create_not_found_yet_is_given_time_to_land(tmp_path):
    async with _world(tmp_path) as (binding, store, _):
        row = await _pending(store)  # recorded at 1.0
        settled, wait = await settle_intent(await _link(store, row), binding=binding, store=store, now=2.0)
        assert settled is Settled.WAITING
        assert float(wait) == pytest.approx(INTENT_WINDOW - 1.0)
        assert await store.link_by_row(row) is not None  # the intent stays


async def test_a_create_that_never_happened_is_forgotten_once_it_cannot_land(tmp_path):
    async with _world(tmp_path) as (binding, store, _):
        row = await _pending(store)
        now = 1.0 + INTENT_WINDOW
        settled, _ = await settle_intent(await _link(store, row), binding=binding, store=store, now=now)
        assert settled is Settled.ABSENT
        assert await store.link_by_row(row) is None


async def test_two_lookalikes_wait_for_an_operator(tmp_path):
    async with _world(tmp_path) as (binding, store, url):
        row = await _pending(store)
        await seed(url, "tasks", [{"title": "made"}, {"title": "made"}])
        settled, message = await settle_intent(await _link(store, row), binding=binding, store=store, now=2.0)
        assert settled is Settled.AMBIGUOUS
        assert "PUT /api/bindings/tasks/links" in message
        link = await store.link_by_row(row)
        assert link is not None
        assert link.state is LinkState.ERROR


async def test_a_source_whose_id_was_reused_keeps_only_the_twin(tmp_path):
    """The app row the create was made from was deleted and its id given to a new row."""
    async with _world(tmp_path) as (binding, store, url):
        row = await _pending(store)  # made from app 7 titled "made"
        (made,) = await seed(url, "tasks", [{"title": "made"}])
        reused = Record(id=RecordId("7"), fields={"title": "someone else"})
        settled, message = await settle_intent(
            await _link(store, row), binding=binding, store=store, now=2.0, source=reused
        )
        assert settled is Settled.FOUND
        assert "id reused" in message
        link = await _link(store, row)
        assert (link.app_id, link.external_id, link.state) == (None, str(made["id"]), LinkState.DELETED)
        assert await store.link_for("tasks", Side.APP, RecordId("7")) is None  # free for the new row


@pytest.mark.parametrize("settled_first", [False, True], ids=["reused-then-settled", "settled-then-reused"])
async def test_an_interrupted_create_whose_source_id_was_reused_makes_no_twin(tmp_path, settled_first):
    """A lost create lands for app row 1; row 1 is deleted, and tandem's create of another
    record reuses its id, before or after the intent is settled. The landed record follows
    its deleted source instead of being overwritten with the new row's values (a twin)."""
    async with _world(tmp_path) as (binding, store, url):
        app_db = AppDb(tmp_path / "app.db")
        app_db.execute("INSERT INTO tasks (title) VALUES ('old')")
        old_id = RecordId(str(app_db.rows()[0]["id"]))
        await store.insert_link(
            "tasks", app_id=old_id, external_id=None, state=LinkState.PENDING, now=time.time(),
            intent_side=Side.EXTERNAL, intent_values={"title": "old"},
        )  # fmt: skip
        (landed,) = await seed(url, "tasks", [{"title": "old"}])  # the create whose response was lost
        app_db.execute("DELETE FROM tasks")
        (fresh,) = await seed(url, "tasks", [{"title": "new"}])

        reconciler = Reconciler(binding, store)
        if settled_first:  # the intent is linked to the deleted row before its id comes back
            await reconciler.reconcile((Side.APP, old_id))
        keys = [
            (Side.EXTERNAL, RecordId(str(fresh["id"]))),
            (Side.APP, old_id),
            (Side.EXTERNAL, RecordId(str(landed["id"]))),
        ]
        for _ in range(3):
            for key in keys:
                await reconciler.reconcile(key)
        assert [str(r["id"]) for r in app_db.rows()] == [old_id]  # SQLite handed the id out again

        async with httpx.AsyncClient() as client:
            records = (await client.get(f"{url}/_admin/direct/tasks")).json()
        assert [(r["id"], r["title"]) for r in records] == [(fresh["id"], "new")]
        link = await store.link_for("tasks", Side.APP, old_id)
        assert link is not None
        assert (link.external_id, link.state) == (str(fresh["id"]), LinkState.SYNCED)
