"""`tandem plan` says what `run` would do: the same refusals, and no parked record as a write."""

import json
from typing import Any

import pytest

from tests.e2e.test_sync import ext_titles
from tests.support.daemon import AppDb, Daemon, eventually
from tests.support.servers import seed

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
