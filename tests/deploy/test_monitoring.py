"""Alert rules and the dashboard, checked with Prometheus's own tools and against a live tandem."""

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_sync import ext_records
from tests.support.daemon import AppDb, Daemon, bindings_toml, eventually, free_port
from tests.support.servers import sample_app_process

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools" / "root" / "usr" / "bin"
RULES = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "tandem.json"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert (TOOLS / "promtool").exists(), "promtool missing: run `make tools`"
    return subprocess.run([str(TOOLS / "promtool"), *args], cwd=RULES, capture_output=True, text=True, timeout=60)


def test_rules_are_valid():
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_fire_when_they_should_and_not_otherwise():
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def _referenced_metrics() -> set[str]:
    text = (RULES / "alerts.yml").read_text()
    text += "\n".join(t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"])
    names = set(re.findall(r"\btandem_[a-z_]+", text))
    return {re.sub(r"_(bucket|count|sum)$", "", name) for name in names}


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Daemon]:
    with sample_app_process() as url:
        AppDb(tmp_path / "app.db")
        (tmp_path / "tandem.toml").write_text(bindings_toml(url))
        daemon = Daemon(tmp_path)
        yield daemon
        daemon.kill()


async def test_every_metric_the_rules_and_dashboard_use_is_exported(running: Daemon):
    await running.start()
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{running.url}/metrics")).text
    exported = set(re.findall(r"^# TYPE (\S+)", text, flags=re.MULTILINE))
    exported |= {f"{name}_total" for name in exported}  # counters are declared without the suffix
    missing = _referenced_metrics() - exported
    assert not missing, f"used by rules or dashboard but not exported: {sorted(missing)}"
    assert running.stop() == 0


async def test_a_real_prometheus_scrapes_tandem_and_fires_an_alert(tmp_path: Path):
    with sample_app_process() as url:
        app_db = AppDb(tmp_path / "app.db")
        for i in range(5):
            app_db.execute("INSERT INTO tasks (title) VALUES (?)", (f"task {i}",))
        (tmp_path / "tandem.toml").write_text(bindings_toml(url))
        daemon = Daemon(tmp_path)
        prom_port = free_port()
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: [{RULES / 'alerts.yml'}]\n"
            "scrape_configs:\n"
            f"  - job_name: tandem\n    static_configs: [{{targets: ['127.0.0.1:{daemon.port}']}}]\n"
        )
        prometheus = subprocess.Popen(
            [
                str(TOOLS / "prometheus"),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "prometheus.log").open("w"),
        )
        try:
            await daemon.start()

            async def pushed() -> bool:
                return len(await ext_records(url)) == 5

            await eventually(pushed, what="the initial push")
            async with httpx.AsyncClient() as client:  # the external collection is wiped
                await client.post(f"{url}/_admin/reset", params={"data": "true"})

            async def firing() -> bool:
                async with httpx.AsyncClient() as client:
                    try:
                        alerts = (await client.get(f"http://127.0.0.1:{prom_port}/api/v1/alerts")).json()
                    except httpx.HTTPError:
                        return False
                return any(
                    a["labels"]["alertname"] == "TandemDeletesBlocked" and a["state"] == "firing"
                    for a in alerts["data"]["alerts"]
                )

            await eventually(firing, timeout=60, what="TandemDeletesBlocked to fire in Prometheus")
            async with httpx.AsyncClient() as client:
                query = f"http://127.0.0.1:{prom_port}/api/v1/query"
                links = (await client.get(query, params={"query": 'tandem_links{state="synced"}'})).json()
            assert links["data"]["result"][0]["value"][1] == "5"
            assert daemon.stop() == 0
        finally:
            daemon.kill()
            prometheus.terminate()
            prometheus.wait(timeout=30)
