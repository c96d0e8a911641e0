"""A change source's late report of a change tandem has carried over since needs no read."""

import time
from pathlib import Path

import pytest

from connectors.base import Record, RecordId
from connectors.sqlite import SqliteConnection, SqliteTableSpec
from reconcilers.binding import Binding
from reconcilers.model import FieldMap, LinkState, Policy, Side
from reconcilers.observe import Observation
from reconcilers.reconcile import Reconciler
from reconcilers.state import open_state
from tests.support.daemon import AppDb

pytestmark = pytest.mark.anyio

POLICY = Policy(fields=(FieldMap("title", "title"),), match=("title",))
KEY = (Side.EXTERNAL, RecordId("x"))


@pytest.mark.parametrize(
    ("seen", "title", "carried_over"),
    [
        ("before the link changed", "agreed", True),  # tandem's own write, reported late
        ("before the link changed", "edited again", False),  # news: the reconcile reads
        ("after the link changed", "agreed", False),  # fresh: the reconcile uses it, no read
    ],
)
async def test_a_late_report_is_settled_only_when_it_shows_what_was_agreed(
    tmp_path: Path, seen: str, title: str, carried_over: bool
) -> None:
    AppDb(tmp_path / "app.db")
    app = SqliteConnection("app", tmp_path / "app.db")
    await app.open()
    try:
        table = app.collection(SqliteTableSpec(table="tasks", columns=("title",)))
        async with open_state(tmp_path / "state.db") as store:
            changed_at = time.time()
            await store.insert_link(
                "tasks", app_id=RecordId("1"), external_id=RecordId("x"), state=LinkState.SYNCED,
                now=changed_at, base={"title": "agreed"},
            )  # fmt: skip
            reconciler = Reconciler(Binding("tasks", POLICY, app=table, external=table), store)
            seen_at = changed_at - 5 if seen.startswith("before") else changed_at + 5
            reconciler.observations[KEY] = (Observation(Record(RecordId("x"), {"title": title})), seen_at)

            assert await reconciler.carried_over(KEY) is carried_over
            assert (KEY in reconciler.observations) is not carried_over
    finally:
        await app.aclose()


@pytest.mark.parametrize("reported", [True, False])
async def test_a_pairs_reconcile_leaves_a_reported_sighting_to_its_own_key(tmp_path: Path, reported: bool) -> None:
    """The resync queued the app side; the external side's feed reported the same change
    meanwhile. The app side's reconcile carries it over using the feed's sighting, and
    the external side's own turn then needs no read. A sighting no source reported is
    used once: nothing later acts on it."""
    app_db = AppDb(tmp_path / "app.db")
    app_db.execute("CREATE TABLE ext (id INTEGER PRIMARY KEY, title TEXT NOT NULL)")
    app_db.execute("INSERT INTO tasks (id, title) VALUES (1, 'old')")
    app_db.execute("INSERT INTO ext (id, title) VALUES (1, 'new')")
    app = SqliteConnection("app", tmp_path / "app.db")
    await app.open()
    try:
        tasks = app.collection(SqliteTableSpec(table="tasks", columns=("title",)))
        ext = app.collection(SqliteTableSpec(table="ext", columns=("title",)))
        for table in (tasks, ext):
            await table.check()
        async with open_state(tmp_path / "state.db") as store:
            now = time.time()
            await store.insert_link(
                "tasks", app_id=RecordId("1"), external_id=RecordId("1"), state=LinkState.SYNCED,
                now=now - 10, base={"title": "old"},
            )  # fmt: skip
            other = (Side.EXTERNAL, RecordId("1"))
            binding = Binding("tasks", POLICY, app=tasks, external=ext)
            reconciler = Reconciler(binding, store, reported=lambda key: reported and key == other)
            reconciler.observations[other] = (Observation(Record(RecordId("1"), {"id": 1, "title": "new"})), now - 5)

            result = await reconciler.reconcile((Side.APP, RecordId("1")))

            assert [write.side for write in result.writes] == [Side.APP]
            assert app_db.titles() == ["new"]
            assert await reconciler.carried_over(other) is reported
            assert other not in reconciler.observations
    finally:
        await app.aclose()
