"""The mass-delete guard, graceful shutdown with work in flight, and the CLI's exit codes."""

import signal
from typing import Any

import httpx
import pytest

from tests.e2e.test_sync import ext_records
from tests.support.daemon import Daemon, eventually
from tests.support.servers import inject

pytestmark = pytest.mark.anyio


async def test_an_emptied_external_collection_deletes_nothing_until_an_operator_allows(daemon, external, app_db):
    for i in range(10):
        app_db.execute("INSERT INTO tasks (title) VALUES (?)", (f"task {i}",))
    await daemon.start()

    async def all_pushed() -> bool:
        return len(await ext_records(external)) == 10

    await eventually(all_pushed, what="initial push")
    async with httpx.AsyncClient() as client:  # the external collection is wiped (or broken)
        await client.post(f"{external}/_admin/reset", params={"data": "true"})

    async def blocked() -> bool:
        metrics = await daemon.metrics()
        return metrics.get('tandem_deletes_blocked_total{binding="tasks"}', 0) >= 1

    await eventually(blocked, what="the guard to trip")
    assert len(app_db.rows()) == 10
    status = daemon.command("status")
    assert "DELETES BLOCKED: 10" in status.stdout
    assert any(line.get("event") == "resync.deletes_blocked" for line in daemon.log_lines())

    result = daemon.command("resync", "--binding", "tasks", "--allow-deletes")
    assert result.returncode == 0, result.stderr

    async def deleted() -> bool:
        return app_db.rows() == []

    await eventually(deleted, what="deletions after the operator allowed them")
    assert daemon.stop() == 0


async def test_sigterm_lets_the_reconcile_in_flight_finish(daemon, external, app_db):
    await daemon.start()
    await inject(external, status=0, delay=2.0, count=1, methods=["POST"])  # a slow create
    app_db.execute("INSERT INTO tasks (title) VALUES ('slow one')")
    await eventually(lambda: _working(daemon), what="the create to be in flight")
    assert daemon.stop(signal.SIGTERM) == 0
    assert [r["title"] for r in await ext_records(external)] == ["slow one"]
    status = daemon.command("status", "--json")
    assert '"synced": 1' in status.stdout  # the link was written before exit: no pending intent


def test_check_exits_2_naming_the_key_of_a_bad_file(daemon: Daemon, tmp_path):
    config = tmp_path / "tandem.toml"
    config.write_text(config.read_text().replace('path = "/tasks"', 'path = "/tasks"\npage_size = 5'))
    result = daemon.command("check")
    assert result.returncode == 2
    assert "tandem.toml" in result.stderr
    assert "external.page_size: unknown key" in result.stderr


def test_check_reaches_each_connection(daemon: Daemon):
    result = daemon.command("check")
    assert result.returncode == 0, result.stderr
    assert "binding tasks: ok" in result.stdout


def test_check_exits_1_when_a_connection_is_unreachable(daemon: Daemon, tmp_path):
    config = tmp_path / "tandem.toml"
    text = config.read_text()
    start = text.index('base_url = "') + len('base_url = "')
    end = text.index('"', start)
    config.write_text(text[:start] + "http://127.0.0.1:9" + text[end:])
    result = daemon.command("check")
    assert result.returncode == 1
    # The binding and its side are named, with what went wrong; the app side still checks.
    assert "binding tasks: external side tasks:/tasks: tasks: ConnectError on GET /tasks" in result.stderr
    assert "connection app: ok" in result.stdout


async def test_check_names_the_binding_the_side_and_the_servers_reason(daemon: Daemon, external: str):
    await inject(external, status=401, body='{"error": "token expired"}', count=1, methods=["GET"])
    result = daemon.command("check")
    assert result.returncode == 1
    assert 'binding tasks: external side tasks:/tasks: tasks: HTTP 401 GET /tasks: {"error": "token expired"}' in (
        result.stderr
    )
    assert "binding tasks: ok" not in result.stdout


def test_a_bad_environment_value_exits_2(daemon: Daemon):
    daemon.env["TANDEM_WORKERS"] = "lots"
    result = daemon.command("status")
    assert result.returncode == 2
    assert "TANDEM_WORKERS" in result.stderr


def test_a_missing_app_table_exits_2(daemon: Daemon, app_db):
    app_db.execute("DROP TABLE tasks")
    result = daemon.command("plan")
    assert result.returncode == 2
    assert "table 'tasks' does not exist" in result.stderr


async def test_a_create_cut_off_by_shutdown_is_settled_on_restart_without_a_twin(daemon, external, app_db):
    daemon.env["TANDEM_SHUTDOWN_TIMEOUT"] = "0.5"
    await daemon.start()
    # The API takes 3 s to create: shutdown abandons the request, the server still creates.
    await inject(external, status=0, delay=3.0, count=1, methods=["POST"])
    app_db.execute("INSERT INTO tasks (title) VALUES ('interrupted')")
    await eventually(lambda: _working(daemon), what="the create to be in flight")
    assert daemon.stop(signal.SIGTERM) == 0
    status = daemon.command("status", "--json")
    assert '"pending": 1' in status.stdout  # the write intent outlived the process

    async def created_by_server() -> bool:
        return len(await ext_records(external)) == 1

    await eventually(created_by_server, what="the server to finish the abandoned create")
    await daemon.start()

    async def settled() -> bool:
        status = daemon.command("status", "--json")
        return '"synced": 1' in status.stdout and '"pending": 0' in status.stdout

    await eventually(settled, what="the intent settled by lookup")
    assert [r["title"] for r in await ext_records(external)] == ["interrupted"]  # no twin
    assert daemon.stop() == 0


async def test_link_api_reads_pairs_and_unlinks(daemon, external, app_db):
    app_db.execute("INSERT INTO tasks (title) VALUES ('linked')")
    await daemon.start()

    async def pushed() -> list[dict[str, Any]]:
        return await ext_records(external)

    (record,) = await eventually(pushed, what="the push")
    async with httpx.AsyncClient(base_url=daemon.url, headers=daemon.api_headers) as client:
        link = (await client.get("/api/bindings/tasks/links", params={"app_id": "1"})).json()
        assert link["external_id"] == str(record["id"])
        assert link["state"] == "synced"
        taken = await client.put("/api/bindings/tasks/links", json={"app_id": "1", "external_id": "999"})
        assert taken.status_code == 409
        assert (await client.delete("/api/bindings/tasks/links", params={"app_id": "1"})).status_code == 204
        assert (await client.get("/api/bindings/tasks/links", params={"app_id": "1"})).status_code == 404
        paired = await client.put("/api/bindings/tasks/links", json={"app_id": 1, "external_id": record["id"]})
        assert paired.status_code == 201
        assert (await client.get("/api/bindings/nope/links", params={"app_id": "1"})).status_code == 404
    assert len(await ext_records(external)) == 1
    assert daemon.stop() == 0


async def _working(daemon: Daemon) -> bool:
    metrics = await daemon.metrics()
    return metrics.get('tandem_active_workers{binding="tasks"}', 0) >= 1


async def test_a_run_of_401s_parks_nothing_and_the_records_sync_once_the_credentials_work(daemon, external, app_db):
    await daemon.start()
    await inject(external, status=401, count=40, methods=["POST"], body='{"error": "token expired"}')
    for i in range(5):
        app_db.execute("INSERT INTO tasks (title) VALUES (?)", (f"during the outage {i}",))

    async def refused() -> bool:
        return any("HTTP 401" in str(line.get("error")) for line in daemon.log_lines())

    await eventually(refused, what="the API to refuse the credentials")

    async def all_pushed() -> bool:
        return len(await ext_records(external)) == 5

    await eventually(all_pushed, timeout=30, what="the records to sync once the API accepts the token again")
    status = daemon.command("status", "--json")
    assert '"error": 0' in status.stdout and '"synced": 5' in status.stdout
    assert daemon.stop() == 0
