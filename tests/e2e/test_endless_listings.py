"""A listing that never ends (a misspelt page parameter) leaves the daemon answering:
the resync ends incomplete and says why, readiness says so, `tandem plan` returns."""

import json
from typing import Any

import httpx
import pytest

from tests.support.daemon import AppDb, Daemon, bindings_toml, eventually
from tests.support.servers import seed

pytestmark = pytest.mark.anyio


async def test_a_misspelt_page_parameter_is_reported_not_listed_for_ever(tmp_path, external: str, app_db: AppDb):
    # The sample API pages with `_page`: asked for `page`, it answers page 1 every time.
    config = bindings_toml(external).replace('page_param = "_page"', 'page_param = "page"')
    (tmp_path / "tandem.toml").write_text(config)
    await seed(external, "tasks", [{"title": f"t{i}", "completed": False} for i in range(120)])
    daemon = Daemon(tmp_path)
    try:
        await daemon.start(until="/healthz")

        async def not_ready() -> Any:
            async with httpx.AsyncClient() as client:
                answer = await client.get(f"{daemon.url}/readyz")
            return answer.json() if answer.status_code == 503 else None

        reason = await eventually(not_ready, what="readiness to report the stalled listing")
        assert reason["status"] == "listing stalled"
        assert "same records as the page before" in reason["bindings"]["tasks"]
        assert (await daemon.metrics())['tandem_listing_stalled{binding="tasks"}'] == 1
        status = json.loads(daemon.command("status", "--json").stdout)["bindings"][0]
        assert status["last_resync_result"].startswith("incomplete: ")
        assert daemon.stop() == 0
        plan = daemon.command("plan")  # returns, rather than listing for ever
        assert plan.returncode == 0, plan.stderr
        assert "incomplete" in plan.stdout + plan.stderr
    finally:
        daemon.kill()
