"""The state store on a real SQLite file."""

import sqlite3

import pytest

from connectors.base import RecordId
from reconcilers.migrations import StateError
from reconcilers.model import LinkState, Side
from reconcilers.state import LinkTaken, open_state

pytestmark = pytest.mark.anyio


async def test_one_link_per_record(tmp_path):
    async with open_state(tmp_path / "state.db") as store:
        await store.insert_link(
            "b", app_id=RecordId("1"), external_id=RecordId("x"), state=LinkState.SYNCED, now=1.0,
            base={"t": "a"},
        )  # fmt: skip
        with pytest.raises(LinkTaken):
            await store.insert_link(
                "b", app_id=RecordId("2"), external_id=RecordId("x"), state=LinkState.SYNCED, now=1.0
            )
        link = await store.link_for("b", Side.EXTERNAL, RecordId("x"))
        assert link is not None and link.app_id == "1" and link.base == {"t": "a"}


async def test_state_survives_reopen_and_refuses_a_newer_schema(tmp_path):
    path = tmp_path / "state.db"
    async with open_state(path) as store:
        await store.set_cursor("b", "app-changes", "42")
    async with open_state(path) as store:
        assert await store.cursor("b", "app-changes") == "42"
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_version (version) VALUES (99)")
    with pytest.raises(StateError, match="newer than this tandem supports"):
        async with open_state(path):
            pass


async def test_corrupt_state_is_a_clear_error(tmp_path):
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match="state database"):
        async with open_state(path):
            pass
