"""Politeness, measured at the server: the rate limit holds and Retry-After is honoured."""

from pathlib import Path

import httpx
import pytest

from tests.e2e.test_sync import ext_records
from tests.support.daemon import AppDb, Daemon, bindings_toml, eventually
from tests.support.servers import inject

pytestmark = pytest.mark.anyio


async def _arrivals(url: str) -> list[tuple[float, bool]]:
    """(when, refused by an injected fault) for every API request the server saw."""
    async with httpx.AsyncClient() as client:
        arrivals = (await client.get(f"{url}/_admin/stats")).json()["arrivals"]
    return sorted((at, bool(refused)) for at, refused in arrivals)


def _busiest_second(arrivals: list[tuple[float, bool]]) -> int:
    ordered = [at for at, _ in arrivals]
    best, start = 0, 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


async def _pushed(daemon: Daemon, count: int) -> bool:
    """Asked of tandem, not of the API, so that only tandem's requests reach the server."""
    metrics = await daemon.metrics()
    return metrics.get('tandem_writes_total{binding="tasks",op="create",side="external"}') == count


def _limited_daemon(tmp_path: Path, url: str, rate: int) -> Daemon:
    config = bindings_toml(url).replace('base_url = "', f'rate_limit = {rate}\nbase_url = "', 1)
    (tmp_path / "tandem.toml").write_text(config)
    return Daemon(tmp_path, env={"TANDEM_WORKERS": "16"})


async def test_no_second_holds_more_requests_than_the_rate_limit(tmp_path, external, app_db: AppDb):
    for i in range(60):
        app_db.execute("INSERT INTO tasks (title) VALUES (?)", (f"task {i}",))
    daemon = _limited_daemon(tmp_path, external, rate=20)
    try:
        await daemon.start()

        await eventually(lambda: _pushed(daemon, 60), timeout=30, what="the push of 60 records at 20 requests/s")
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    arrivals = await _arrivals(external)
    assert len(arrivals) > 60  # the pushes and the listings
    assert _busiest_second(arrivals) <= 20 + 1  # a bucket of one token: at most one extra at a window's edge
    assert len(await ext_records(external)) == 60


async def test_a_429_storm_pauses_every_request_for_retry_after_then_sync_recovers(tmp_path, external, app_db):
    daemon = _limited_daemon(tmp_path, external, rate=50)
    try:
        await daemon.start()
        async with httpx.AsyncClient() as client:
            await client.post(f"{external}/_admin/reset")  # arrivals are counted from here on
        await inject(external, status=429, retry_after="1", count=4, methods=["POST"])
        for i in range(5):
            app_db.execute("INSERT INTO tasks (title) VALUES (?)", (f"stormy {i}",))

        await eventually(lambda: _pushed(daemon, 5), timeout=30, what="the sync to recover after the storm")
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    arrivals = await _arrivals(external)
    refused = [i for i, (_, was_refused) in enumerate(arrivals) if was_refused]
    assert len(refused) == 4
    # After each 429, no request of the connection at all (creates or change polls) came
    # back before Retry-After had passed.
    gaps = [arrivals[i + 1][0] - arrivals[i][0] for i in refused]
    assert all(gap >= 0.95 for gap in gaps), gaps
    assert len(await ext_records(external)) == 5
