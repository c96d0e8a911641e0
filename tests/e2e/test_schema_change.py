"""A mapped column that disappears under the running daemon stops the binding's writes;
the other side keeps its data."""

import httpx
import pytest

from tests.e2e.test_sync import ext_records
from tests.support.daemon import AppDb, Daemon, eventually

pytestmark = pytest.mark.anyio


async def _synced_with_notes(daemon: Daemon, app_db: AppDb, external: str) -> None:
    for i in range(25):
        app_db.execute("INSERT INTO tasks (title, note) VALUES (?, 'kept')", (f"task {i}",))
    await daemon.start()

    async def pushed() -> bool:
        records = await ext_records(external)
        return len(records) == 25 and all(r.get("note") == "kept" for r in records)

    await eventually(pushed, what="the initial push")


@pytest.mark.parametrize(
    "change", ["ALTER TABLE tasks DROP COLUMN note", "ALTER TABLE tasks RENAME COLUMN note TO remark"]
)
async def test_a_dropped_or_renamed_column_writes_nothing_and_says_so(daemon, external, app_db, change):
    await _synced_with_notes(daemon, app_db, external)
    app_db.execute(change)
    app_db.execute("UPDATE tasks SET title = 'renamed 0' WHERE title = 'task 0'")  # the feed reports a change

    async def said() -> bool:
        return any("no longer in the table" in str(line.get("error")) for line in daemon.log_lines())

    await eventually(said, what="the missing column to be named in the log")

    async def listed_incomplete() -> bool:
        return any(
            line.get("event") == "resync.listing_incomplete" and "no longer in the table" in str(line.get("error"))
            for line in daemon.log_lines()
        )

    await eventually(listed_incomplete, what="a resync that cannot read the table")
    records = await ext_records(external)
    assert len(records) == 25
    assert all(r.get("note") == "kept" for r in records)  # nothing was nulled
    assert "task 0" in [r["title"] for r in records]  # nor anything else written
    async with httpx.AsyncClient() as client:
        writes = (await client.get(f"{daemon.url}/metrics")).text
    assert 'tandem_writes_total{binding="tasks",op="update",side="external"}' not in writes
    assert daemon.stop() == 0
