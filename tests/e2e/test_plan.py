"""`tandem plan` says what `run` would do: the same refusals, and no parked record as a write."""

import json
import sqlite3
from typing import Any

import pytest

from tests.e2e.test_sync import ext_titles
from tests.support.daemon import AppDb, Daemon, bindings_toml, eventually
from tests.support.servers import inject, seed

pytestmark = pytest.mark.anyio


def _plan(daemon: Daemon) -> dict[str, Any]:
    result = daemon.command("plan", "--json")
    assert result.returncode == 0, result.stderr
    (binding,) = json.loads(result.stdout)["bindings"]
    return binding


async def test_plan_foresees_a_not_null_refusal_and_run_parks_it_with_the_same_words(
    daemon: Daemon, external: str, app_db: AppDb
):
    # `title` is NOT NULL without a default in the app; the external record has none.
    await seed(external, "tasks", [{"title": None, "completed": False}, {"title": "fine", "completed": True}])
    before = _plan(daemon)
    (would_park,) = before["would_park"]
    assert would_park["error"] == "app:tasks: title would be null, which the column refuses (NOT NULL)"
    assert [(w["op"], w["side"]) for w in before["writes"]] == [("create", "app")]

    await daemon.start()

    async def parked() -> str | None:
        text = daemon.command("status").stdout
        return text if "title would be null" in text else None

    status = await eventually(parked, what="the record without a title parked")
    assert status is not None and would_park["error"] in status
    assert app_db.titles() == ["fine"]
    assert daemon.stop() == 0

    after = _plan(daemon)
    assert after["writes"] == [] and after["would_park"] == []
    assert [p["error"] for p in after["still_parked"]] == [would_park["error"]]
    text = daemon.command("plan").stdout
    assert text.splitlines()[0] == "tasks: nothing to write"
    assert "1 record parked and unchanged since" in text
    assert "None" not in text


async def test_plan_text_says_each_write_in_words(daemon: Daemon, external: str, app_db: AppDb):
    app_db.execute("INSERT INTO tasks (title) VALUES ('pending push')")
    await seed(external, "tasks", [{"title": "pending pull", "completed": False}])
    text = daemon.command("plan").stdout
    lines = text.splitlines()
    assert lines[0] == "tasks: 2 writes planned"
    assert any(line.startswith("  create in external from app 1: ") for line in lines), text
    assert any(line.startswith("  create in app from external ") for line in lines), text
    assert "None" not in text
    assert await ext_titles(external) == ["pending pull"]


async def test_one_write_is_one_write(daemon: Daemon, external: str, app_db: AppDb):
    app_db.execute("INSERT INTO tasks (title) VALUES ('alone')")
    assert daemon.command("plan").stdout.splitlines()[0] == "tasks: 1 write planned"


async def test_plan_and_run_agree_on_a_tombstone_whose_survivor_the_policy_now_deletes(
    tmp_path, external: str, app_db: AppDb
):
    # Once deletes flow both ways, the survivor of the tombstone is deleted.
    daemon = Daemon(tmp_path)
    try:
        record = await _tombstone(daemon, external, app_db)
        # An import into the app gets the deleted row's id from SQLite: the tombstone lets the
        # id go and keeps the external one only.
        await seed(external, "tasks", [{"title": "new", "completed": False}])

        async def imported() -> bool:
            return [(row["id"], row["title"]) for row in app_db.rows()] == [(1, "new")]

        await eventually(imported, what="the new record imported under the reused id")
        assert daemon.stop() == 0
        with sqlite3.connect(tmp_path / "state.db") as db:
            assert db.execute("SELECT app_id, external_id FROM links WHERE state = 'deleted'").fetchall() == [
                (None, str(record["id"]))
            ]

        (tmp_path / "tandem.toml").write_text(bindings_toml(external, deletes='"both"'))
        planned = _plan(daemon)
        assert [(w["op"], w["side"], w["external_id"]) for w in planned["writes"]] == [
            ("delete", "external", str(record["id"]))
        ]
        await daemon.start()
        await eventually(lambda: _only(external, ["new"]), what="the survivor deleted as planned")
        assert app_db.titles() == ["new"]
        assert daemon.stop() == 0
    finally:
        daemon.kill()


async def _tombstone(daemon: Daemon, external: str, app_db: AppDb) -> dict[str, Any]:
    """With deletes flowing to the app only, an app deletion leaves a tombstone that keeps
    the external record; returns that record, the daemon still running."""
    (daemon.workdir / "tandem.toml").write_text(bindings_toml(external, deletes='"to-app"'))
    (record,) = await seed(external, "tasks", [{"title": "kept", "completed": False}])
    await daemon.start()
    await eventually(lambda: _has_rows(app_db, 1), what="the record imported")
    app_db.execute("DELETE FROM tasks")

    async def tombstoned() -> bool:
        return "deleted 1" in daemon.command("status").stdout

    await eventually(tombstoned, what="the tombstone")
    return record


async def _has_rows(app_db: AppDb, n: int) -> bool:
    return len(app_db.rows()) == n


async def _only(external: str, titles: list[str]) -> bool:
    return await ext_titles(external) == titles


async def test_a_record_deleted_by_a_reconcile_is_not_brought_back_by_its_own_listing_sighting(
    tmp_path, external: str, app_db: AppDb
):
    # A resync lists the survivor of a tombstone and queues both of its keys; the first
    # reconcile deletes it, and the second must not take the listing's sighting as a
    # record new to the app.
    daemon = Daemon(tmp_path)
    try:
        await _tombstone(daemon, external, app_db)
        assert daemon.stop() == 0
        (tmp_path / "tandem.toml").write_text(bindings_toml(external, deletes='"both"'))
        await daemon.start()
        await eventually(lambda: _only(external, []), what="the survivor deleted")

        async def settled() -> bool:
            return "synced 0" in daemon.command("status").stdout and "deleted 0" in daemon.command("status").stdout

        await eventually(settled, what="the pair forgotten")
        assert app_db.titles() == []
        assert daemon.stop() == 0
        brought_back = [
            line
            for line in daemon.log_lines()
            if line.get("event") == "reconcile.done" and "create:app" in line.get("writes", [])
        ]
        assert brought_back == []
    finally:
        daemon.kill()


async def test_a_record_parked_and_unchanged_since_is_no_planned_write(daemon: Daemon, external: str, app_db: AppDb):
    await inject(external, status=422, body='{"error": "title taken"}', count=1, methods=["POST"])
    app_db.execute("INSERT INTO tasks (title) VALUES ('refused')")
    await daemon.start()

    async def parked() -> bool:
        return "title taken" in daemon.command("status").stdout

    await eventually(parked, what="the refused record parked")
    assert daemon.stop() == 0
    planned = _plan(daemon)
    assert planned["writes"] == []  # run leaves it alone until it changes, and so says plan
    assert [p["app_id"] for p in planned["still_parked"]] == ["1"]
