"""tandem run as a process, an SQLite app table and the sample app over loopback."""

import json
import re
import signal
from typing import Any

import httpx
import pytest

from tests.support.daemon import SECRET, AppDb, Daemon, bindings_toml, eventually
from tests.support.servers import inject, seed

pytestmark = pytest.mark.anyio


async def ext_records(url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as client:
        records = (await client.get(f"{url}/tasks", params={"_limit": 1000})).json()
    return sorted(records, key=lambda r: r["title"])


async def ext_titles(url: str) -> list[str]:
    return sorted(r["title"] for r in await ext_records(url))


async def test_initial_sync_pairs_by_match_and_makes_no_twins(daemon: Daemon, external: str, app_db: AppDb):
    app_db.execute("INSERT INTO tasks (title, done) VALUES ('only in app', 1)")
    app_db.execute("INSERT INTO tasks (title, done, note) VALUES ('on both', 0, 'from app')")
    await seed(
        external,
        "tasks",
        [{"title": "only external", "completed": True}, {"title": "on both", "completed": False}],
    )
    await daemon.start()
    expected = ["on both", "only external", "only in app"]

    async def converged() -> bool:
        return app_db.titles() == expected and await ext_titles(external) == expected

    await eventually(converged, what="both sides hold the three records once")
    app_rows = {row["title"]: row for row in app_db.rows()}
    assert app_rows["only external"]["done"] == 1
    ext = {r["title"]: r for r in await ext_records(external)}
    assert ext["only in app"]["completed"] is True
    assert ext["on both"]["note"] == "from app"  # the pair merged by policy (app wins)
    assert daemon.stop() == 0


async def test_updates_and_deletes_flow_both_ways(daemon: Daemon, external: str, app_db: AppDb):
    first = app_db.execute("INSERT INTO tasks (title) VALUES ('first')")
    app_db.execute("INSERT INTO tasks (title) VALUES ('second')")
    await seed(external, "tasks", [{"title": "third", "completed": False}])
    await daemon.start()
    await eventually(lambda: _has(external, ["first", "second", "third"]), what="initial sync")
    await eventually(lambda: _app_has(app_db, ["first", "second", "third"]), what="initial sync app")

    app_db.execute("UPDATE tasks SET title = 'first, renamed', done = 1 WHERE id = ?", (first,))
    await eventually(lambda: _has(external, ["first, renamed", "second", "third"]), what="app update")
    renamed = next(r for r in await ext_records(external) if r["title"] == "first, renamed")
    assert renamed["completed"] is True

    third = next(r for r in await ext_records(external) if r["title"] == "third")
    async with httpx.AsyncClient() as client:
        await client.patch(f"{external}/tasks/{third['id']}", json={"title": "third, renamed"})
    await eventually(lambda: _app_has(app_db, ["first, renamed", "second", "third, renamed"]), what="external update")

    app_db.execute("DELETE FROM tasks WHERE title = 'second'")
    await eventually(lambda: _has(external, ["first, renamed", "third, renamed"]), what="app delete")
    async with httpx.AsyncClient() as client:
        await client.delete(f"{external}/tasks/{third['id']}")
    await eventually(lambda: _app_has(app_db, ["first, renamed"]), what="external delete")

    expected = {
        ("external", "create"): 2, ("app", "create"): 1, ("external", "update"): 1,
        ("app", "update"): 1, ("external", "delete"): 1, ("app", "delete"): 1,
    }  # fmt: skip
    assert await _writes(daemon) == expected
    resyncs = _resyncs(daemon)

    async def two_more_resyncs() -> bool:
        return _resyncs(daemon) >= resyncs + 2

    await eventually(two_more_resyncs, what="two more resyncs")
    # The change notifications of tandem's own writes came back and changed nothing.
    assert await _writes(daemon) == expected
    assert daemon.stop() == 0


async def _writes(daemon: Daemon) -> dict[tuple[str, str], int]:
    metrics = await daemon.metrics()
    found = {}
    for name, value in metrics.items():
        match = re.match(r'tandem_writes_total\{binding="tasks",op="(\w+)",side="(\w+)"\}', name)
        if match and value:
            found[(match.group(2), match.group(1))] = int(value)
    return found


def _resyncs(daemon: Daemon) -> int:
    return sum(1 for line in daemon.log_lines() if line.get("event") == "resync.done")


async def test_conflict_is_resolved_by_policy_and_counted(daemon: Daemon, external: str, app_db: AppDb):
    row = app_db.execute("INSERT INTO tasks (title, note) VALUES ('shared', 'base')")
    await daemon.start()
    await eventually(lambda: _has(external, ["shared"]), what="initial sync")
    assert daemon.stop() == 0

    ext = (await ext_records(external))[0]
    async with httpx.AsyncClient() as client:
        await client.patch(f"{external}/tasks/{ext['id']}", json={"note": "external edit"})
    app_db.execute("UPDATE tasks SET note = 'app edit' WHERE id = ?", (row,))
    await daemon.start()

    async def resolved() -> bool:
        records = await ext_records(external)
        return records[0]["note"] == "app edit" and app_db.rows()[0]["note"] == "app edit"

    await eventually(resolved, what="app-wins resolution on both sides")
    metrics = await daemon.metrics()
    assert metrics['tandem_conflicts_total{binding="tasks"}'] == 1
    status = daemon.command("status", "--json")
    assert '"conflicts_total": 1' in status.stdout
    assert daemon.stop() == 0


async def test_a_refused_record_is_parked_while_others_sync(daemon: Daemon, external: str, app_db: AppDb):
    bad = app_db.execute("INSERT INTO tasks (title) VALUES ('   ')")  # the API refuses blank titles
    app_db.execute("INSERT INTO tasks (title) VALUES ('good')")
    await daemon.start()
    await eventually(lambda: _has(external, ["good"]), what="the good record syncs")

    async def parked() -> bool:
        metrics = await daemon.metrics()
        return metrics.get('tandem_links{binding="tasks",state="error"}') == 1

    await eventually(parked, what="the bad record parked")
    app_db.execute("INSERT INTO tasks (title) VALUES ('later')")
    await eventually(lambda: _has(external, ["good", "later"]), what="others keep syncing")
    status = daemon.command("status")
    assert "title is required" in status.stdout

    app_db.execute("UPDATE tasks SET title = 'fixed' WHERE id = ?", (bad,))
    await eventually(lambda: _has(external, ["fixed", "good", "later"]), what="the fixed record syncs")
    assert daemon.stop() == 0


async def test_a_blob_in_the_app_table_crosses_as_text(daemon: Daemon, external: str, app_db: AppDb):
    """A BLOB is a value JSON cannot hold: the resync must still list, store and compare it."""
    app_db.execute("INSERT INTO tasks (title, note) VALUES ('with a blob', X'68C3A9')")  # "hé" in UTF-8
    app_db.execute("INSERT INTO tasks (title) VALUES ('plain')")
    await daemon.start()

    async def crossed() -> bool:
        notes = {r["title"]: r.get("note") for r in await ext_records(external)}
        return notes == {"with a blob": "hé", "plain": None}

    await eventually(crossed, what="both records, the blob as text")
    assert daemon.command("resync").returncode == 0
    status = json.loads(daemon.command("status", "--json").stdout)["bindings"][0]
    assert status["links"]["synced"] == 2 and status["last_resync_result"] == "complete", status
    assert daemon.stop() == 0


async def test_sigterm_exits_zero_and_a_restart_writes_nothing(daemon: Daemon, external: str, app_db: AppDb):
    for i in range(20):
        app_db.execute("INSERT INTO tasks (title) VALUES (?)", (f"task {i}",))
    await seed(external, "tasks", [{"title": f"ext {i}", "completed": False} for i in range(20)])
    await daemon.start()
    await eventually(lambda: _count(external, 40), what="initial sync")
    await eventually(lambda: _app_count(app_db, 40), what="initial sync app")
    assert daemon.stop(signal.SIGTERM) == 0
    assert any(line.get("event") == "daemon.stopped" for line in daemon.log_lines())

    await daemon.start()

    async def resynced_twice() -> bool:
        metrics = await daemon.metrics()
        return metrics.get('tandem_reconcile_total{binding="tasks",result="success"}', 0) >= 0 and (
            sum(1 for line in daemon.log_lines() if line.get("event") == "resync.done") >= 4
        )

    await eventually(resynced_twice, what="two resyncs after the restart")
    metrics = await daemon.metrics()
    writes = {k: v for k, v in metrics.items() if k.startswith("tandem_writes_total")}
    assert all(value == 0 for value in writes.values()), writes
    assert daemon.stop(signal.SIGINT) == 0


async def test_plan_reports_writes_and_writes_nothing(daemon: Daemon, external: str, app_db: AppDb, tmp_path):
    app_db.execute("INSERT INTO tasks (title) VALUES ('pending push')")
    await seed(external, "tasks", [{"title": "pending pull", "completed": False}])
    result = daemon.command("plan", "--json")
    assert result.returncode == 0, result.stderr
    assert '"op": "create"' in result.stdout
    assert '"side": "external"' in result.stdout and '"side": "app"' in result.stdout
    assert app_db.titles() == ["pending push"]
    assert await ext_titles(external) == ["pending pull"]
    assert not (tmp_path / "state.db").exists()


async def test_no_secret_reaches_the_output(daemon: Daemon, external: str, app_db: AppDb):
    # An API that echoes the credential in its error body: the record is parked, and the
    # stored error must still not show the token anywhere.
    echo = f'{{"error": "bad request from Bearer {SECRET}"}}'
    await inject(external, status=422, body=echo, count=1, methods=["POST"])
    app_db.execute("INSERT INTO tasks (title) VALUES ('refused')")
    app_db.execute("INSERT INTO tasks (title) VALUES ('x')")
    await daemon.start()
    await eventually(lambda: _count(external, 1), what="the other record to sync")

    async def parked() -> bool:
        return "bad request from ***" in daemon.command("status").stdout

    await eventually(parked, what="the refused record parked, its error masked")
    async with httpx.AsyncClient(base_url=daemon.url, headers=daemon.api_headers) as client:
        api_outputs = [(await client.get("/api/bindings")).text]
        for app_id in ("1", "2"):
            api_outputs.append((await client.get("/api/bindings/tasks/links", params={"app_id": app_id})).text)
    assert daemon.stop() == 0
    outputs = [daemon.log_text(), *api_outputs]
    for args in (("status",), ("status", "--json"), ("plan",), ("check",)):
        result = daemon.command(*args)
        outputs += [result.stdout, result.stderr]
    assert all(SECRET not in text for text in outputs)


async def _has(url: str, titles: list[str]) -> bool:
    return await ext_titles(url) == sorted(titles)


async def _app_has(app_db: AppDb, titles: list[str]) -> bool:
    return app_db.titles() == sorted(titles)


async def _count(url: str, n: int) -> bool:
    return len(await ext_records(url)) == n


async def _app_count(app_db: AppDb, n: int) -> bool:
    return len(app_db.rows()) == n


async def test_a_deletion_against_an_edit_recreates_the_record(daemon: Daemon, external: str, app_db: AppDb):
    row = app_db.execute("INSERT INTO tasks (title) VALUES ('keep me')")
    await daemon.start()
    await eventually(lambda: _has(external, ["keep me"]), what="initial sync")
    assert daemon.stop() == 0
    (record,) = await ext_records(external)
    async with httpx.AsyncClient() as client:
        await client.delete(f"{external}/tasks/{record['id']}")
    app_db.execute("UPDATE tasks SET note = 'edited while the twin was deleted' WHERE id = ?", (row,))
    await daemon.start()

    async def recreated() -> bool:
        records = await ext_records(external)
        return len(records) == 1 and records[0]["note"] == "edited while the twin was deleted"

    await eventually(recreated, what="the edit to win over the deletion")
    assert records_differ(record, (await ext_records(external))[0])
    metrics = await daemon.metrics()
    assert metrics['tandem_conflicts_total{binding="tasks"}'] == 1
    assert len(app_db.rows()) == 1
    assert daemon.stop() == 0


def records_differ(before: dict[str, Any], after: dict[str, Any]) -> bool:
    return before["id"] != after["id"]


async def test_an_ambiguous_match_waits_for_an_operator(daemon: Daemon, external: str, app_db: AppDb):
    app_db.execute("INSERT INTO tasks (title) VALUES ('twice')")
    twins = await seed(external, "tasks", [{"title": "twice", "completed": False}] * 2)
    await daemon.start()

    async def parked() -> bool:
        metrics = await daemon.metrics()
        return metrics.get('tandem_links{binding="tasks",state="error"}') == 3

    await eventually(parked, what="all three records parked as ambiguous")
    assert "records match on title" in daemon.command("status").stdout
    assert len(await ext_records(external)) == 2  # nothing was created or paired by guess
    async with httpx.AsyncClient(base_url=daemon.url, headers=daemon.api_headers) as client:
        response = await client.put(
            "/api/bindings/tasks/links", json={"app_id": "1", "external_id": str(twins[0]["id"])}
        )
        assert response.status_code == 201

    async def paired() -> bool:
        result = daemon.command("status", "--json")
        return '"synced": 1' in result.stdout

    await eventually(paired, what="the operator's pairing")
    assert daemon.command("resync").returncode == 0  # retries what is still parked

    async def second_mirrored() -> bool:
        return len(app_db.rows()) == 2

    await eventually(second_mirrored, what="the other external record to get its own app twin")
    assert daemon.stop() == 0


async def test_huge_and_unicode_values_cross_intact(daemon: Daemon, external: str, app_db: AppDb):
    big = "λ✓ 🚀 " * 350_000  # about 4.5 MB of UTF-8
    app_db.execute("INSERT INTO tasks (title, note) VALUES (?, ?)", ("big from the app", big))
    await seed(external, "tasks", [{"title": "big from outside", "note": big[::-1], "completed": False}])
    await daemon.start()

    async def both_crossed() -> bool:
        notes = {r["title"]: r.get("note") for r in await ext_records(external)}
        rows = {row["title"]: row["note"] for row in app_db.rows()}
        return notes.get("big from the app") == big and rows.get("big from outside") == big[::-1]

    await eventually(both_crossed, timeout=60, what="multi-megabyte values on both sides")
    assert daemon.stop() == 0


async def test_a_failed_resync_is_tried_again_within_seconds_not_an_interval_later(
    tmp_path, external: str, app_db: AppDb
):
    (tmp_path / "tandem.toml").write_text(bindings_toml(external))
    await seed(external, "tasks", [{"title": "waiting outside", "completed": False}])
    # More refusals than one listing's attempts (a first and 3 retries): the first resync
    # ends incomplete, and the next one, with the rest used up, completes.
    await inject(external, status=503, count=7, methods=["GET"], path_prefix="/tasks")
    daemon = Daemon(tmp_path, env={"TANDEM_RESYNC_INTERVAL": "3600"})
    try:
        await daemon.start()

        async def incomplete_then_complete() -> bool:
            results = [line["result"] for line in daemon.log_lines() if line.get("event") == "resync.done"]
            return results[:1] == ["incomplete"] and "complete" in results

        # The retry comes 5 s later (jittered); the interval would be an hour.
        await eventually(incomplete_then_complete, timeout=30, what="an incomplete resync, then a complete one")
    finally:
        daemon.kill()
