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
