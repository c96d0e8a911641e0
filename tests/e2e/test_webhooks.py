"""Webhooks into the running daemon: signed notifications act at once, bad ones change nothing."""

import json
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from daemon.webhooks import sign
from tests.e2e.test_sync import ext_records
from tests.support.daemon import AppDb, Daemon, bindings_toml, eventually
from tests.support.servers import request_counts, seed

pytestmark = pytest.mark.anyio

HOOK_SECRET = "whsec-e2e-0123456789"
WEBHOOK = """
[bindings.external.webhook]
secret = "${HOOK_SECRET}"
ids = "data.id"
"""


@pytest.fixture
def hooked(tmp_path: Path, external: str, app_db: AppDb) -> Iterator[Daemon]:
    (tmp_path / "tandem.toml").write_text(bindings_toml(external) + WEBHOOK)
    # Polls and resyncs every 10 minutes: only a webhook can make anything happen quickly.
    process = Daemon(
        tmp_path,
        env={"HOOK_SECRET": HOOK_SECRET, "TANDEM_POLL_INTERVAL": "600", "TANDEM_RESYNC_INTERVAL": "600"},
    )
    yield process
    process.kill()


async def notify(daemon: Daemon, payload: object, *, secret: str = HOOK_SECRET, path: str = "tasks") -> int:
    body = json.dumps(payload).encode()
    headers = {"X-Tandem-Signature": sign(secret, body), "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=daemon.url) as client:
        return (await client.post(f"/webhooks/{path}", content=body, headers=headers)).status_code


async def _metric(daemon: Daemon, name: str) -> float:
    return (await daemon.metrics()).get(name, 0.0)


async def _synced(daemon: Daemon, app_db: AppDb, external: str, n: int) -> None:
    async def done() -> bool:
        return len(app_db.rows()) == n and len(await ext_records(external)) == n

    await eventually(done, what=f"{n} records on both sides")


async def test_a_signed_webhook_brings_the_change_without_waiting_for_a_poll(hooked, external, app_db):
    (record,) = await seed(external, "tasks", [{"title": "before", "completed": False}])
    await hooked.start()
    await _synced(hooked, app_db, external, 1)
    async with httpx.AsyncClient() as client:
        await client.patch(f"{external}/tasks/{record['id']}", json={"title": "after"})
    assert await notify(hooked, {"data": {"id": record["id"]}}) == 202

    async def arrived() -> bool:
        return app_db.titles() == ["after"]

    await eventually(arrived, timeout=5, what="the change to arrive through the webhook")
    assert await _metric(hooked, 'tandem_webhooks_total{binding="tasks",result="accepted",side="external"}') == 1
    assert hooked.stop() == 0


async def test_bad_notifications_are_refused_and_change_nothing(hooked, external, app_db):
    await hooked.start()
    adds = await _metric(hooked, 'tandem_workqueue_adds_total{binding="tasks"}')
    assert await notify(hooked, {"data": {"id": 1}}, secret="wrong-secret") == 401
    async with httpx.AsyncClient(base_url=hooked.url) as client:
        bad_json = b"{not json"
        headers = {"X-Tandem-Signature": sign(HOOK_SECRET, bad_json)}
        assert (await client.post("/webhooks/tasks", content=bad_json, headers=headers)).status_code == 400
        huge = b'{"pad": "' + b"x" * (1024 * 1024 + 1) + b'"}'
        headers = {"X-Tandem-Signature": sign(HOOK_SECRET, huge)}
        assert (await client.post("/webhooks/tasks", content=huge, headers=headers)).status_code == 413
        unsigned = await client.post("/webhooks/tasks", json={"data": {"id": 1}})
        assert unsigned.status_code == 401
    assert await notify(hooked, {"data": {"id": 1}}, path="nope") == 404
    assert await _metric(hooked, 'tandem_workqueue_adds_total{binding="tasks"}') == adds
    logs = hooked.log_text()
    assert HOOK_SECRET not in logs
    assert '"result": "unauthorized"' in logs
    assert hooked.stop() == 0


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_sender_still_writing_a_body_too_large_reads_the_413(hooked, external, app_db, declared):
    """As a sender that writes its whole body before it reads (curl, most HTTP clients): the
    answer is there to read, not a reset connection, and the connection serves the next
    request. A raw socket, because httpx reads a response even after its write failed."""
    await hooked.start()
    chunk = b"x" * 65536
    chunks = 32  # 2 MiB, twice the default max_body
    framing = f"Content-Length: {len(chunk) * chunks}" if declared else "Transfer-Encoding: chunked"
    head = f"POST /webhooks/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n{framing}\r\n\r\n".encode()
    async with await anyio.connect_tcp("127.0.0.1", hooked.port) as stream:
        await stream.send(head)
        for _ in range(chunks):
            await stream.send(chunk if declared else b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await anyio.sleep(0.005)
        if not declared:
            await stream.send(b"0\r\n\r\n")
        answer = b""
        with anyio.fail_after(10):
            while b"body over" not in answer:
                answer += await stream.receive()
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        await stream.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        with anyio.fail_after(10):
            assert (await stream.receive()).startswith(b"HTTP/1.1 200")
    assert hooked.stop() == 0


async def test_a_storm_of_duplicates_costs_one_reconciles_worth_of_writes(hooked, external, app_db):
    (record,) = await seed(external, "tasks", [{"title": "calm", "completed": False}])
    await hooked.start()
    await _synced(hooked, app_db, external, 1)
    reconciles = 'tandem_reconcile_total{binding="tasks",result="success"}'
    before = await _metric(hooked, reconciles)
    async with httpx.AsyncClient() as client:
        await client.patch(f"{external}/tasks/{record['id']}", json={"title": "stormy"})
    async with anyio.create_task_group() as tg:  # 50 duplicates at once
        for _ in range(50):
            tg.start_soon(notify, hooked, {"data": {"id": record["id"]}})

    async def arrived() -> bool:
        return app_db.titles() == ["stormy"]

    await eventually(arrived, timeout=5, what="the change")

    async def drained() -> bool:
        return await _metric(hooked, 'tandem_workqueue_depth{binding="tasks"}') == 0

    await eventually(drained, what="the queue to drain")
    assert await _metric(hooked, reconciles) - before < 50  # duplicates merged on the queue
    assert await _metric(hooked, 'tandem_writes_total{binding="tasks",op="update",side="app"}') == 1
    assert hooked.stop() == 0


async def test_the_echo_of_our_own_write_writes_nothing_and_is_counted(hooked, external, app_db):
    row = app_db.execute("INSERT INTO tasks (title) VALUES ('mine')")
    await hooked.start()
    await _synced(hooked, app_db, external, 1)
    app_db.execute("UPDATE tasks SET note = 'pushed' WHERE id = ?", (row,))

    async def pushed() -> bool:
        return (await ext_records(external))[0].get("note") == "pushed"

    await eventually(pushed, what="the app change to reach the external app")
    (record,) = await ext_records(external)
    writes_before = await _metric(hooked, 'tandem_writes_total{binding="tasks",op="update",side="external"}')
    assert await notify(hooked, {"data": {"id": record["id"]}}) == 202  # the external app's echo

    async def echoed() -> bool:
        return await _metric(hooked, 'tandem_echoes_suppressed_total{binding="tasks"}') >= 1

    await eventually(echoed, what="the echo to be recognised")
    assert await _metric(hooked, 'tandem_writes_total{binding="tasks",op="update",side="external"}') == writes_before
    assert await _metric(hooked, 'tandem_writes_total{binding="tasks",op="update",side="app"}') == 0
    assert hooked.stop() == 0


async def test_an_app_side_webhook_reads_the_change_log_at_once(tmp_path, external, app_db):
    (tmp_path / "tandem.toml").write_text(bindings_toml(external))
    slow = {"TANDEM_POLL_INTERVAL": "600", "TANDEM_RESYNC_INTERVAL": "600", "TANDEM_APP_POLL_INTERVAL": "600"}
    daemon = Daemon(tmp_path, env=slow)
    try:
        await daemon.start()

        async def resynced() -> bool:
            return any(line.get("event") == "resync.done" for line in daemon.log_lines())

        await eventually(resynced, what="the start-up resync")  # so only the webhook can see the row
        app_db.execute("INSERT INTO tasks (title) VALUES ('poked')")
        async with httpx.AsyncClient(base_url=daemon.url) as client:
            response = await client.post("/webhooks/tasks/app", json={"event": "changed"})
        assert response.status_code == 202

        async def pushed() -> bool:
            return [r["title"] for r in await ext_records(external)] == ["poked"]

        await eventually(pushed, timeout=5, what="the app change to be read on the webhook")
        assert daemon.stop() == 0
    finally:
        daemon.kill()


async def test_deeply_nested_json_is_a_clear_400_and_the_daemon_goes_on(hooked, external, app_db):
    await hooked.start()
    deep = b"[" * 5000 + b"]" * 5000
    async with httpx.AsyncClient(base_url=hooked.url) as client:
        hook = await client.post(
            "/webhooks/tasks", content=deep, headers={"X-Tandem-Signature": sign(HOOK_SECRET, deep)}
        )
        assert hook.status_code == 400
        assert "nested deeper" in hook.json()["error"]
        link = await client.put("/api/bindings/tasks/links", content=deep, headers=hooked.api_headers)
        assert link.status_code == 400
        assert "nested deeper" in link.json()["error"]
        assert (await client.get("/healthz")).status_code == 200
    assert hooked.stop() == 0


async def test_a_webhook_naming_thousands_of_ids_costs_one_look_not_a_read_each(hooked, external, app_db):
    await hooked.start()
    await eventually(lambda: _resynced(hooked), what="the start-up resync")
    adds = await _metric(hooked, 'tandem_workqueue_adds_total{binding="tasks"}')
    before = (await request_counts(external)).get("GET tasks", 0)
    assert await notify(hooked, {"data": {"id": list(range(100_000, 105_000))}}) == 202
    # The ids are put on the queue before the answer: none were.
    assert await _metric(hooked, 'tandem_workqueue_adds_total{binding="tasks"}') == adds

    async def looked() -> int:
        return (await request_counts(external)).get("GET tasks", 0) - before

    assert await eventually(looked, what="one look at the external changes") < 10
    assert any(line.get("event") == "webhook.too_many_ids" for line in hooked.log_lines())
    assert hooked.stop() == 0


async def _resynced(daemon: Daemon) -> bool:
    return any(line.get("event") == "resync.done" for line in daemon.log_lines())
