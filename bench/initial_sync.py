"""Initial two-way sync: N records on each side, nothing linked yet, against the sample app.

Measured in the same run, on the same machine, so the numbers can be compared:
  * baseline read: a plain httpx loop paging through the N external records (pages of 1,000);
  * baseline write: a plain httpx loop POSTing N records at the same concurrency as tandem;
  * tandem: `tandem run` as a process, from start until all 2N records are linked and both
    sides hold 2N records; records/s counts both directions (2N / seconds), with the API
    requests it made and its peak RSS.

    python bench/initial_sync.py --records 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
# `make bench` names tandem as users install it; by default, the one beside this interpreter.
TANDEM = os.environ.get("TANDEM_BENCH_BIN") or str(Path(sys.executable).parent / "tandem")

CONNECTIONS = """
[connections.app]
type = "sqlite"
path = "app.db"

[connections.api]
type = "rest"
base_url = "{url}"

[[bindings]]
name = "tasks"
match = ["title"]
"""

CONFIG = (
    CONNECTIONS
    + """app = {{ connection = "app", table = "tasks", id = "id" }}

[bindings.external]
connection = "api"
path = "/tasks"
pagination = {{ type = "page", page_param = "_page", size_param = "_limit", size = 1000 }}

[bindings.fields]
title = "title"
done = {{ external = "completed", type = "bool" }}
"""
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_sample_app() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "sample_app.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stdout is not None
    found = re.search(r"listening on ([\d.]+):(\d+)", process.stdout.readline())
    assert found, "sample app did not start"
    return process, f"http://{found.group(1)}:{found.group(2)}"


async def seed(url: str, records: int) -> None:
    async with httpx.AsyncClient(timeout=120) as client:
        for start in range(0, records, 5000):
            chunk = [{"title": f"ext {i}", "completed": i % 2 == 0} for i in range(start, min(records, start + 5000))]
            (await client.post(f"{url}/_admin/seed/tasks", json=chunk)).raise_for_status()


async def baseline_read(url: str) -> tuple[int, float]:
    async with httpx.AsyncClient(timeout=60) as client:
        started = time.perf_counter()
        count, page = 0, 1
        while True:
            batch = (await client.get(f"{url}/tasks", params={"_page": page, "_limit": 1000})).json()
            if not batch:
                break
            count += len(batch)
            page += 1
        return count, time.perf_counter() - started


async def baseline_write(url: str, records: int, concurrency: int) -> float:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(records):
        queue.put_nowait(i)
    async with httpx.AsyncClient(timeout=60) as client:

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                response = await client.post(f"{url}/baseline", json={"title": f"b {i}", "completed": False})
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def linked(state: Path) -> int:
    if not state.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=1) as db:
            row = db.execute("SELECT COUNT(*) FROM links WHERE state = 'synced'").fetchone()
            return int(row[0])
    except sqlite3.Error:
        return 0


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_tandem(url: str, records: int, workers: int, workdir: Path) -> dict[str, Any]:
    with sqlite3.connect(workdir / "app.db") as db:
        db.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT NOT NULL, done INTEGER NOT NULL)")
        db.executemany(
            "INSERT INTO tasks (title, done) VALUES (?, ?)", [(f"app {i}", i % 3 == 0) for i in range(records)]
        )
    (workdir / "tandem.toml").write_text(CONFIG.format(url=url))
    state = workdir / "state.db"
    env = {
        **os.environ,
        "TANDEM_CONFIG": str(workdir / "tandem.toml"),
        "TANDEM_STATE": str(state),
        "TANDEM_HTTP_ADDR": f"127.0.0.1:{free_port()}",
        "TANDEM_WORKERS": str(workers),
        "TANDEM_POLL_INTERVAL": "0.5",
        "TANDEM_RESYNC_INTERVAL": "3600",
        "TANDEM_LOG_LEVEL": "warning",
    }
    httpx.post(f"{url}/_admin/reset").raise_for_status()
    with (workdir / "tandem.log").open("w") as log:
        started = time.perf_counter()
        process = subprocess.Popen([TANDEM, "run"], env=env, stdout=log, stderr=log, cwd=workdir)
        try:
            deadline = started + 1800
            while linked(state) < 2 * records:
                if process.poll() is not None or time.perf_counter() > deadline:
                    raise SystemExit(f"tandem stopped or timed out; see {workdir / 'tandem.log'}")
                time.sleep(0.1)
            seconds = time.perf_counter() - started
            rss = peak_rss_mb(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    requests = httpx.get(f"{url}/_admin/stats").json()["requests"]
    with sqlite3.connect(workdir / "app.db") as db:
        app_rows = db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]
    external, _ = asyncio.run(baseline_read(url))
    assert app_rows == external == 2 * records, (app_rows, external)
    return {"seconds": seconds, "peak_rss_mb": rss, "requests": requests, "app_rows": app_rows}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=10_000, help="records on each side")
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    sample, url = start_sample_app()
    try:
        asyncio.run(seed(url, args.records))
        count, read_seconds = asyncio.run(baseline_read(url))
        write_seconds = asyncio.run(baseline_write(url, args.records, args.workers))
        with tempfile.TemporaryDirectory() as tmp:
            result = run_tandem(url, args.records, args.workers, Path(tmp))
    finally:
        sample.send_signal(signal.SIGTERM)
        sample.wait(timeout=30)
    synced = 2 * args.records
    summary = {
        "records_each_side": args.records,
        "workers": args.workers,
        "baseline_read_records_per_s": round(count / read_seconds),
        "baseline_write_records_per_s": round(args.records / write_seconds),
        "tandem_seconds": round(result["seconds"], 2),
        "tandem_records_per_s": round(synced / result["seconds"]),
        "tandem_peak_rss_mb": round(result["peak_rss_mb"], 1),
        "tandem_api_requests": result["requests"],
    }
    report("initial_sync", summary)


def report(name: str, results: object) -> None:
    """Print the results and keep them in bench/out/NAME.json."""
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
