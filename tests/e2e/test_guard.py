"""One mass-delete guard per binding: deletions from feeds and webhooks count against it too."""

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from daemon.webhooks import sign
from tests.e2e.test_sync import ext_records
from tests.support.daemon import AppDb, Daemon, bindings_toml, eventually

pytestmark = pytest.mark.anyio

HOOK_SECRET = "whsec-guard-0123456789"
ROWS = 25
# The test daemon's guard: deletions wait once more than 3 and more than half the links.
MOST_DELETED = ROWS // 2


@pytest.fixture
def hooked(tmp_path: Path, external: str, app_db: AppDb) -> Iterator[Daemon]:
    hook = f'\n[bindings.external.webhook]\nsecret = "{HOOK_SECRET}"\nids = "id"\n'
    (tmp_path / "tandem.toml").write_text(bindings_toml(external) + hook)
    process = Daemon(tmp_path, env={"TANDEM_POLL_INTERVAL": "600"})
    yield process
    process.kill()


async def _synced(daemon: Daemon, app_db: AppDb, external: str) -> None:
    for i in range(ROWS):
        app_db.execute("INSERT INTO tasks (title) VALUES (?)", (f"task {i}",))
    await daemon.start()

    async def pushed() -> bool:
        return len(await ext_records(external)) == ROWS and '"synced": 25' in daemon.command("status", "--json").stdout

    await eventually(pushed, what="the initial push")


async def _drained(daemon: Daemon) -> bool:
    return (await daemon.metrics()).get('tandem_workqueue_depth{binding="tasks"}') == 0


async def _held(daemon: Daemon) -> bool:
    metrics = await daemon.metrics()
    return metrics.get('tandem_deletes_blocked_total{binding="tasks"}', 0) >= 1


async def test_webhooks_naming_every_vanished_record_delete_no_more_than_the_guard_allows(hooked, external, app_db):
    await _synced(hooked, app_db, external)
    ids = [record["id"] for record in await ext_records(external)]
    async with httpx.AsyncClient() as client:  # the external side lists [] and answers 404 for each
        await client.post(f"{external}/_admin/reset", params={"data": "true"})
        for record_id in ids:
            body = json.dumps({"id": record_id}).encode()
            headers = {"X-Tandem-Signature": sign(HOOK_SECRET, body)}
            assert (await client.post(f"{hooked.url}/webhooks/tasks", content=body, headers=headers)).status_code == 202
    await eventually(lambda: _held(hooked), what="the guard to hold the webhook's deletions")

    await eventually(lambda: _drained(hooked), what="the queue to drain")
    assert len(app_db.rows()) >= ROWS - MOST_DELETED
    assert any(line.get("event") == "reconcile.delete_held" for line in hooked.log_lines())
    assert "DELETES BLOCKED" in hooked.command("status").stdout
    assert hooked.stop() == 0


async def test_the_app_emptying_its_table_deletes_no_more_than_the_guard_allows(daemon, external, app_db):
    await _synced(daemon, app_db, external)
    app_db.execute("DELETE FROM tasks")
    await eventually(lambda: _held(daemon), what="the guard to hold the change feed's deletions")

    await eventually(lambda: _drained(daemon), what="the queue to drain")
    assert len(await ext_records(external)) >= ROWS - MOST_DELETED
    assert "DELETES BLOCKED" in daemon.command("status").stdout

    result = daemon.command("resync", "--binding", "tasks", "--allow-deletes")
    assert result.returncode == 0, result.stderr

    async def all_deleted() -> bool:
        return await ext_records(external) == []

    await eventually(all_deleted, what="the deletions the operator allowed")
    assert daemon.stop() == 0
