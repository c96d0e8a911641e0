"""A poison record (nested thousands deep, a lone surrogate) is parked; the daemon and
every other record go on, across restarts."""

import json

import httpx
import pytest

from tests.support.daemon import AppDb, Daemon, eventually
from tests.support.servers import inject

pytestmark = pytest.mark.anyio


def _listing() -> str:
    deep = "[" * 2000 + "]" * 2000
    shallow_but_deep = "[" * 800 + "]" * 800
    return (
        '[{"id": 1, "title": "good", "completed": false},'
        f' {{"id": 2, "title": "deep", "completed": false, "extra": {deep}}},'
        f' {{"id": 3, "title": "deep but readable", "completed": false, "note": {shallow_but_deep}}},'
        ' {"id": 4, "title": "bad \\ud800 text", "completed": false}]'
    )


async def test_poison_records_are_parked_and_the_daemon_lives(daemon: Daemon, external: str, app_db: AppDb):
    # Every first page lists the poison; the records themselves are nowhere else.
    await inject(external, status=200, body=_listing(), count=10_000, methods=["GET"], query="_page=1")
    await daemon.start()

    async def three_parked() -> bool:
        status = json.loads(daemon.command("status", "--json").stdout)
        return status["bindings"][0]["links"]["error"] == 3 and app_db.titles() == ["good"]

    await eventually(three_parked, timeout=30, what="the good record imported, the three poison ones parked")
    status = daemon.command("status").stdout
    assert "nested deeper than 64 levels" in status
    assert "not valid Unicode" in status
    async with httpx.AsyncClient() as client:  # a webhook naming a surrogate id is no harm either
        hook = await client.post(f"{daemon.url}/webhooks/tasks", content=b'{"id": "\\ud800"}')
        assert hook.status_code == 202
    assert daemon.stop() == 0
    await daemon.start()  # and it does not die on the next start
    await eventually(lambda: _resynced_again(daemon), what="a resync after the restart")
    assert app_db.titles() == ["good"]
    assert daemon.stop() == 0


async def _resynced_again(daemon: Daemon) -> bool:
    return sum(line.get("event") == "resync.done" for line in daemon.log_lines()) >= 3
