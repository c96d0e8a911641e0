"""The mass-delete guard, graceful shutdown with work in flight, and the CLI's exit codes."""

import signal

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

    async def in_flight() -> bool:
        metrics = await daemon.metrics()
        return metrics.get('tandem_active_workers{binding="tasks"}', 0) >= 1

    await eventually(in_flight, what="the create to be in flight")
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
    assert "ConnectError" in result.stderr


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
