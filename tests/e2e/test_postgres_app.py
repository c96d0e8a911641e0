"""tandem run with the app's table in the PostgreSQL server on this machine, against the sample app."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from connectors.postgres_changelog import qualified
from tests.e2e.test_sync import ext_records, ext_titles
from tests.support.daemon import Daemon, bindings_toml, eventually
from tests.support.postgres import DSN, scratch_schema
from tests.support.servers import seed

pytestmark = pytest.mark.anyio


class AppTable:
    """The app's PostgreSQL table, written as the app would: its own connections."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.table = qualified(schema, "tasks")

    async def execute(self, sql: str, *params: Any) -> None:
        connection = await asyncpg.connect(DSN)
        try:
            await connection.execute(sql.replace("{t}", self.table), *params)
        finally:
            await connection.close()

    async def rows(self) -> list[dict[str, Any]]:
        connection = await asyncpg.connect(DSN)
        try:
            return [dict(r) for r in await connection.fetch(f"SELECT * FROM {self.table} ORDER BY id")]
        finally:
            await connection.close()

    async def titles(self) -> list[str]:
        return sorted(row["title"] for row in await self.rows())


@pytest.fixture
async def pg_app() -> AsyncIterator[AppTable]:
    columns = (
        "id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, title text NOT NULL,"
        " done boolean NOT NULL DEFAULT false, note text"
    )
    async with scratch_schema(f"tandem_e2e_{uuid.uuid4().hex[:8]}", "tasks", columns) as schema:
        yield AppTable(schema)


@pytest.fixture
def pg_daemon(tmp_path: Path, external: str, pg_app: AppTable) -> Iterator[Daemon]:
    config = (
        bindings_toml(external)
        .replace('type = "sqlite"\npath = "app.db"', 'type = "postgres"\ndsn = "${APP_DSN}"')
        .replace('table = "tasks", id = "id"', f'table = "tasks", schema = "{pg_app.schema}", id = "id"')
    )
    (tmp_path / "tandem.toml").write_text(config)
    # The change log is read every 60 s: only a notification can bring app changes quickly.
    process = Daemon(tmp_path, env={"APP_DSN": DSN, "TANDEM_APP_POLL_INTERVAL": "60"})
    yield process
    process.kill()


async def test_postgres_and_rest_sync_both_ways_with_changes_woken_by_notify(
    pg_daemon: Daemon, external: str, pg_app: AppTable
):
    await pg_app.execute("INSERT INTO {t} (title, note) VALUES ('on both', 'from app'), ('only in app', NULL)")
    await seed(
        external, "tasks", [{"title": "on both", "completed": True}, {"title": "only outside", "completed": False}]
    )
    await pg_daemon.start()
    expected = ["on both", "only in app", "only outside"]

    async def paired() -> bool:
        return await pg_app.titles() == expected and await ext_titles(external) == expected

    await eventually(paired, what="initial sync with pairing")

    await pg_app.execute("INSERT INTO {t} (title, done) VALUES ('typed in the app', true)")

    async def pushed() -> bool:
        return any(r["title"] == "typed in the app" and r["completed"] for r in await ext_records(external))

    await eventually(pushed, timeout=5, what="a new app row, woken by NOTIFY (polling is 60 s)")

    await pg_app.execute("UPDATE {t} SET note = 'edited in the app' WHERE title = 'only outside'")
    await pg_app.execute("DELETE FROM {t} WHERE title = 'only in app'")

    async def followed() -> bool:
        records = {r["title"]: r for r in await ext_records(external)}
        return "only in app" not in records and records["only outside"].get("note") == "edited in the app"

    await eventually(followed, timeout=5, what="an app update and delete")

    ext_id = next(r["id"] for r in await ext_records(external) if r["title"] == "on both")
    async with httpx.AsyncClient() as client:
        await client.patch(f"{external}/_admin/direct/tasks/{ext_id}", json={"note": "edited outside"})
        await client.delete(
            f"{external}/_admin/direct/tasks/"
            + str(next(r["id"] for r in await ext_records(external) if r["title"] == "typed in the app"))
        )

    async def pulled() -> bool:
        rows = {row["title"]: row for row in await pg_app.rows()}
        return "typed in the app" not in rows and rows["on both"]["note"] == "edited outside"

    await eventually(pulled, what="an external update and delete")
    assert pg_daemon.stop() == 0
    status = pg_daemon.command("status", "--json")
    assert '"synced": 2' in status.stdout


async def test_changelog_command_installs_and_removes_the_trigger(pg_daemon: Daemon, pg_app: AppTable):
    assert pg_daemon.command("changelog", "install").returncode == 0
    connection = await asyncpg.connect(DSN)
    try:
        count = "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass($1) AND NOT tgisinternal"
        assert await connection.fetchval(count, pg_app.table) == 1
        assert pg_daemon.command("changelog", "remove").returncode == 0
        assert await connection.fetchval(count, pg_app.table) == 0
    finally:
        await connection.close()


async def test_a_missing_schema_is_named(pg_daemon: Daemon, pg_app: AppTable, tmp_path: Path):
    config = (tmp_path / "tandem.toml").read_text().replace(pg_app.schema, "no_such_schema")
    (tmp_path / "tandem.toml").write_text(config)
    result = pg_daemon.command("check")
    assert result.returncode == 2
    assert "no_such_schema.tasks does not exist" in result.stderr
