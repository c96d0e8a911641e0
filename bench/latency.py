"""Change propagation latency, both directions, with webhooks and with polling only.

A steady `--rate` changes per second per direction for `--duration` seconds against
the sample app and an SQLite app table, 100 linked records on each side (the two
directions touch different records, so they never conflict):
  * app → external: the bench updates a row and (webhook mode) posts /webhooks/{binding}/app;
    latency = when the sample app applied tandem's write − when the row was updated;
  * external → app: the bench PATCHes the sample app and (webhook mode) posts a signed
    /webhooks/{binding}; latency = when the app row changed (an SQLite trigger stamps it)
    − when the sample app applied the PATCH.
A change overwritten by the next change to the same record before it propagated is
counted as superseded (level-triggered sync carries the newest value only), not as a
latency. The sample app's own handling time per request is measured too; the
"excluding" columns subtract the two requests tandem makes per app→external change.

    python bench/latency.py --duration 30 --rate 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from initial_sync import CONNECTIONS, TANDEM, free_port, linked, report, start_sample_app

from daemon.webhooks import sign

SECRET = "bench-webhook-secret"
RECORDS = 100

CONFIG = (
    CONNECTIONS
    + """
[bindings.app]
connection = "app"
table = "tasks"
webhook = {{ ids = "id" }}

[bindings.external]
connection = "api"
path = "/tasks"
pagination = {{ type = "page", page_param = "_page", size_param = "_limit", size = 1000 }}
changed_since = {{ param = "updated_since", field = "updated_at" }}
webhook = {{ secret = "{secret}", ids = "id" }}

[bindings.fields]
title = "title"
"""
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summary_ms(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "p50_ms": round(percentile(values, 0.50) * 1000, 1),
        "p99_ms": round(percentile(values, 0.99) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1) if values else float("nan"),
    }


def prepare(workdir: Path, url: str) -> None:
    with sqlite3.connect(workdir / "app.db") as db:
        db.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT NOT NULL)")
        db.executemany("INSERT INTO tasks (title) VALUES (?)", [(f"app {i}",) for i in range(RECORDS)])
    httpx.post(f"{url}/_admin/seed/tasks", json=[{"title": f"ext {i}"} for i in range(RECORDS)]).raise_for_status()
    (workdir / "tandem.toml").write_text(CONFIG.format(url=url, secret=SECRET))


def watch_app_rows(workdir: Path) -> None:
    """Stamp every title change in the app table (millisecond clock of SQLite)."""
    with sqlite3.connect(workdir / "app.db") as db:
        db.execute("CREATE TABLE IF NOT EXISTS bench_seen (title TEXT, at REAL)")
        db.execute(
            "CREATE TRIGGER IF NOT EXISTS bench_seen_update AFTER UPDATE OF title ON tasks BEGIN"
            " INSERT INTO bench_seen VALUES (NEW.title, (julianday('now') - 2440587.5) * 86400.0); END"
        )


def last_changes_landed(workdir: Path, url: str, changes: int) -> Callable[[], bool]:
    """Has each record's last change reached the other side? Then every earlier change
    has landed or been superseded, and waiting longer measures nothing more."""
    recent = range(max(0, changes - RECORDS), changes)
    to_external = {f"a-{n}" for n in recent}
    to_app = {f"e-{n}" for n in recent}

    def landed() -> bool:
        external = {r["title"] for r in httpx.get(f"{url}/tasks", params={"_limit": 1000}).json()}
        with sqlite3.connect(workdir / "app.db") as db:
            app = {title for (title,) in db.execute("SELECT title FROM tasks")}
        return to_external <= external and to_app <= app

    return landed


def wait_until(condition: Callable[[], bool], *, timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while not condition() and time.perf_counter() < deadline:
        time.sleep(0.1)


async def drive(
    workdir: Path, url: str, tandem_url: str, *, webhooks: bool, rate: float, duration: float
) -> dict[str, float]:
    """Make the changes; returns when each app-side change was made (by marker)."""
    app_rows = [row[0] for row in sqlite3.connect(workdir / "app.db").execute(
        "SELECT id FROM tasks WHERE title LIKE 'app %' ORDER BY id")]  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as client:
        ext_ids = [r["id"] for r in (await client.get(f"{url}/tasks", params={"_limit": 1000})).json()
                   if r["title"].startswith("ext ")]  # fmt: skip
        sent: dict[str, float] = {}
        db = sqlite3.connect(workdir / "app.db", isolation_level=None)

        async def app_changes() -> None:
            for n in range(int(rate * duration)):
                await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
                marker, row = f"a-{n}", app_rows[n % len(app_rows)]
                sent[marker] = time.time()
                db.execute("UPDATE tasks SET title = ? WHERE id = ?", (marker, row))
                if webhooks:
                    await client.post(f"{tandem_url}/webhooks/tasks/app", json={"id": row})

        async def external_changes() -> None:
            for n in range(int(rate * duration)):
                await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
                record = ext_ids[n % len(ext_ids)]
                await client.patch(f"{url}/tasks/{record}", json={"title": f"e-{n}"})
                if webhooks:
                    body = json.dumps({"id": record}).encode()
                    headers = {"X-Tandem-Signature": sign(SECRET, body), "Content-Type": "application/json"}
                    await client.post(f"{tandem_url}/webhooks/tasks", content=body, headers=headers)

        start = time.perf_counter()
        await asyncio.gather(app_changes(), external_changes())
        db.close()
        return sent


def run_mode(url: str, *, webhooks: bool, rate: float, duration: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        httpx.post(f"{url}/_admin/reset", params={"data": "true"}).raise_for_status()
        prepare(workdir, url)
        port = free_port()
        quiet = {"TANDEM_POLL_INTERVAL": "60", "TANDEM_APP_POLL_INTERVAL": "60"} if webhooks else {}
        env = {
            **os.environ,
            "TANDEM_CONFIG": str(workdir / "tandem.toml"),
            "TANDEM_STATE": str(workdir / "state.db"),
            "TANDEM_HTTP_ADDR": f"127.0.0.1:{port}",
            "TANDEM_RESYNC_INTERVAL": "3600",
            "TANDEM_LOG_LEVEL": "warning",
            **quiet,
        }
        with (workdir / "tandem.log").open("w") as log:
            process = subprocess.Popen([TANDEM, "run"], env=env, stdout=log, stderr=log, cwd=workdir)
            try:
                deadline = time.time() + 120
                while linked(workdir / "state.db") < 2 * RECORDS:
                    if process.poll() is not None or time.time() > deadline:
                        raise SystemExit(f"tandem did not sync; see {workdir / 'tandem.log'}")
                    time.sleep(0.1)
                watch_app_rows(workdir)
                httpx.get(f"{url}/_admin/applied")  # start the logs afresh
                sent = asyncio.run(
                    drive(workdir, url, f"http://127.0.0.1:{port}", webhooks=webhooks, rate=rate, duration=duration)
                )
                changes = int(rate * duration)
                landed = last_changes_landed(workdir, url, changes)
                wait_until(landed, timeout=2 if webhooks else 12)  # the longest to wait for a straggler
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
        logs = httpx.get(f"{url}/_admin/applied").json()
        with sqlite3.connect(workdir / "app.db") as db:
            seen = dict(db.execute("SELECT title, MIN(at) FROM bench_seen WHERE title LIKE 'e-%' GROUP BY title"))
    applied: dict[str, float] = {}
    for at, title in logs["applied"]:
        applied.setdefault(title, at)  # the first time each title landed
    to_external = [applied[m] - t for m, t in sent.items() if m in applied]
    to_app = [seen[m] - applied[m] for m in seen if m in applied]
    handling = logs["handling"]
    mean_handling = statistics.fmean(handling) if handling else 0.0
    changes = int(rate * duration)
    out = {
        "mode": "webhooks" if webhooks else "polling",
        "app_to_external": summary_ms(to_external),
        "external_to_app": summary_ms(to_app),
        "superseded": {"app_to_external": changes - len(to_external), "external_to_app": changes - len(to_app)},
        "sample_app_handling_ms": {
            "mean": round(mean_handling * 1000, 2),
            "p99": round(percentile(handling, 0.99) * 1000, 2),
        },
    }
    out["app_to_external_excluding_handling_p99_ms"] = round(
        out["app_to_external"]["p99_ms"] - 2 * mean_handling * 1000, 1
    )
    out["external_to_app_excluding_handling_p99_ms"] = round(out["external_to_app"]["p99_ms"] - mean_handling * 1000, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--rate", type=float, default=50, help="changes per second per direction")
    args = parser.parse_args()
    sample, url = start_sample_app()
    try:
        results = [
            run_mode(url, webhooks=True, rate=args.rate, duration=args.duration),
            run_mode(url, webhooks=False, rate=args.rate, duration=args.duration),
        ]
    finally:
        sample.send_signal(signal.SIGTERM)
        sample.wait(timeout=30)
    report("latency", results)


if __name__ == "__main__":
    main()
