"""The benchmark suite: tandem beside its ceilings and a peer, every figure from the same run.

Against `bench/api.py` (a fast in-memory API, its capacity measured first) and an SQLite
app table. Each scenario runs `--runs` times and reports medians: seconds, records/s, API
calls, peak RSS, and the ratio to its ceiling. tandem runs as a process (`tandem run`);
ceilings and the peer run as processes too, so each peak RSS is its own.

    python bench/suite.py --records 100000 --push-records 5000 --runs 3 \
        --import-sizes 10000,1000000                                        # make bench
    python bench/suite.py --records 10000 --push-records 1000 --runs 3     # make bench-quick

Results: a table on stdout and `bench/results.json` (or `--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
# `make bench` names tandem as users install it; by default, the one beside this interpreter.
TANDEM = os.environ.get("TANDEM_BENCH_BIN") or str(Path(sys.executable).parent / "tandem")
DLT_PYTHON = ROOT / ".tools" / "dlt" / "bin" / "python"
TABLE = "CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0, note TEXT)"

CONFIG = """
[connections.app]
type = "sqlite"
path = "app.db"

[connections.api]
type = "rest"
base_url = "{url}"

[[bindings]]
name = "records"
match = ["title"]
app = {{ connection = "app", table = "tasks", id = "id" }}

[bindings.external]
connection = "api"
path = "/records"
records = "data"
pagination = {{ type = "cursor", cursor_param = "cursor", next_cursor = "next_cursor", size_param = "limit", \
size = 1000 }}
changed_since = {{ param = "since", field = "seq" }}
{external_extra}

[bindings.fields]
title = "title"
done = {{ external = "completed", type = "bool" }}
note = "note"
"""


# --- the API -----------------------------------------------------------------------------


@contextmanager
def api() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "api.py"), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        found = re.search(r"listening on ([\d.]+):(\d+)", process.stdout.readline())
        assert found, "bench API did not start"
        yield f"http://{found.group(1)}:{found.group(2)}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def reset(url: str, records: list[dict[str, Any]] = ()) -> None:  # type: ignore[assignment]
    httpx.post(f"{url}/_admin/reset").raise_for_status()
    for start in range(0, len(records), 20_000):
        httpx.post(f"{url}/_admin/seed", json=records[start : start + 20_000], timeout=120).raise_for_status()


def api_requests(url: str) -> dict[str, int]:
    stats: dict[str, int] = httpx.get(f"{url}/_admin/stats").json()["requests"]
    return stats


def records(prefix: str, n: int) -> list[dict[str, Any]]:
    return [{"title": f"{prefix} {i}", "completed": i % 2 == 0, "note": None} for i in range(n)]


def app_db(path: Path, rows: list[dict[str, Any]]) -> None:
    with sqlite3.connect(path) as db:
        db.execute(TABLE)
        db.executemany(
            "INSERT INTO tasks (title, done, note) VALUES (?, ?, ?)",
            [(r["title"], int(r["completed"]), r["note"]) for r in rows],
        )


def run_json(command: list[str]) -> dict[str, Any]:
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=1800)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- tandem as a process -----------------------------------------------------------------


@dataclass
class Tandem:
    workdir: Path
    url: str
    workers: int = 8
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    started: float = 0.0
    started_wall: float = 0.0
    env: dict[str, str] = field(default_factory=dict)
    external_extra: str = ""
    """More keys for `[bindings.external]`."""

    def start(self) -> None:
        (self.workdir / "tandem.toml").write_text(CONFIG.format(url=self.url, external_extra=self.external_extra))
        self.port = _free_port()
        env = {
            **os.environ,
            "TANDEM_CONFIG": str(self.workdir / "tandem.toml"),
            "TANDEM_STATE": str(self.workdir / "state.db"),
            "TANDEM_HTTP_ADDR": f"127.0.0.1:{self.port}",
            "TANDEM_WORKERS": str(self.workers),
            "TANDEM_POLL_INTERVAL": "1",
            "TANDEM_RESYNC_INTERVAL": "3600",
            "TANDEM_LOG_LEVEL": "info",
            "TANDEM_LOG_FORMAT": "json",
            **self.env,
        }
        log = (self.workdir / "tandem.log").open("ab")
        self.started = time.perf_counter()
        self.started_wall = time.time()
        self.process = subprocess.Popen([TANDEM, "run"], env=env, stdout=log, stderr=log, cwd=self.workdir)

    def wait_for(self, condition: Callable[[], bool], *, timeout: float = 1800) -> float:
        """Seconds from start until `condition` holds."""
        assert self.process is not None
        deadline = time.perf_counter() + timeout
        while not condition():
            if self.process.poll() is not None or time.perf_counter() > deadline:
                raise SystemExit(f"tandem stopped or timed out; see {self.workdir / 'tandem.log'}")
            time.sleep(0.05)
        return time.perf_counter() - self.started

    def startup_seconds(self) -> float:
        """From the process's start until it logged `daemon.started` (interpreter, imports,
        state, connections, HTTP server): a cost the ceilings' own clocks leave out."""
        for line in (self.workdir / "tandem.log").read_text(errors="replace").splitlines():
            if '"daemon.started"' in line:
                at = datetime.fromisoformat(json.loads(line)["timestamp"]).timestamp()
                return at - self.started_wall
        return float("nan")

    def run_until_linked(self, n: int) -> dict[str, Any]:
        """Start, wait until `n` links are synced, stop: the time, with and without the
        start-up, and the peak RSS."""
        self.start()
        try:
            seconds = self.wait_for(lambda: linked(self.workdir, n))
            rss = self.peak_rss_mb()
            startup = self.startup_seconds()
        finally:
            self.stop()
        return {
            "seconds": seconds,
            "records_per_s": n / seconds,
            "startup_seconds": startup,
            "records_per_s_after_startup": n / (seconds - startup),
            "peak_rss_mb": rss,
        }

    def peak_rss_mb(self) -> float:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def metric(self, name: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10).text
        return sum(float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith(name))

    def settled(self) -> bool:
        """The queue is empty and no worker is busy (checked twice, apart)."""
        try:
            for _ in range(2):
                if self.metric("tandem_workqueue_depth{") or self.metric("tandem_active_workers{"):
                    return False
                time.sleep(0.2)
        except httpx.HTTPError:
            return False
        return True

    def resyncs_done(self) -> list[dict[str, Any]]:
        lines = (self.workdir / "tandem.log").read_text(errors="replace").splitlines()
        found = []
        for line in lines:
            if '"resync.done"' in line:
                found.append(json.loads(line))
        return found

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=120)
            self.process = None


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def linked(workdir: Path, n: int) -> bool:
    """Are `n` links synced? Counting them costs 6 ms of CPU at 100,000, twenty times a
    second on the machine tandem runs on: the highest row is asked first (rows are
    numbered as links and intents are stored), and the count only once it reaches `n`."""
    return _state_number(workdir, "SELECT COALESCE(MAX(row), 0) FROM links") >= n and links(workdir) >= n


def links(workdir: Path) -> int:
    return _state_number(workdir, "SELECT COUNT(*) FROM links WHERE state = 'synced'")


def _state_number(workdir: Path, sql: str) -> int:
    """One number from tandem's state database, read-only; 0 before it is readable."""
    state = workdir / "state.db"
    if not state.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute(sql).fetchone()[0])
    except sqlite3.Error:
        return 0


def writes(before: dict[str, int], after: dict[str, int]) -> int:
    return sum(after.get(m, 0) - before.get(m, 0) for m in ("POST", "PATCH", "PUT", "DELETE"))


def calls(before: dict[str, int], after: dict[str, int]) -> int:
    return sum(after.values()) - sum(before.values())


# --- scenarios ---------------------------------------------------------------------------


def tandem_import(url: str, n: int) -> dict[str, Any]:
    reset(url, records("ext", n))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        app_db(workdir / "app.db", [])
        before = api_requests(url)
        result = Tandem(workdir, url).run_until_linked(n)
        with sqlite3.connect(workdir / "app.db") as db:
            assert db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0] == n
    return {**result, "api_calls": calls(before, api_requests(url))}


BULK = 'bulk_create = { path = "/records/_bulk", size = 500 }'


def tandem_push(url: str, n: int, concurrency: int, *, bulk: bool = False) -> dict[str, Any]:
    reset(url)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        app_db(workdir / "app.db", records("app", n))
        before = api_requests(url)
        tandem = Tandem(workdir, url, workers=concurrency, external_extra=BULK if bulk else "")
        result = tandem.run_until_linked(n)
    return {**result, "api_calls": calls(before, api_requests(url))}


def tandem_pairing_and_steady(url: str, n: int) -> dict[str, Any]:
    same = records("both", n)
    reset(url, same)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        app_db(workdir / "app.db", same)
        before = api_requests(url)
        tandem = Tandem(workdir, url)
        tandem.start()
        try:
            seconds = tandem.wait_for(lambda: linked(workdir, n) and tandem.settled())
            rss = tandem.peak_rss_mb()
            pair_writes = tandem.metric("tandem_writes_total{")
        finally:
            tandem.stop()
        after = api_requests(url)
        pairing = {
            "seconds": seconds, "records_per_s": n / seconds, "links": links(workdir),
            "writes": int(pair_writes) + writes(before, after), "api_calls": calls(before, after), "peak_rss_mb": rss,
        }  # fmt: skip
        steady = {"0%": _steady(url, workdir, n, changed=0), "1%": _steady(url, workdir, n, changed=n // 100)}
    return {"pairing": pairing, "steady": steady}


def _steady(url: str, workdir: Path, n: int, *, changed: int) -> dict[str, Any]:
    """A restart over `n` linked records with `changed` of them edited outside meanwhile."""
    for i in range(changed):
        httpx.patch(f"{url}/records/{i * (n // max(changed, 1)) + 1}", json={"note": f"changed {time.time()}"})
    (workdir / "tandem.log").write_text("")
    before = api_requests(url)
    tandem = Tandem(workdir, url)
    tandem.start()
    try:
        tandem.wait_for(lambda: bool(tandem.resyncs_done()))
        seconds = tandem.wait_for(tandem.settled) - 0.4  # `settled` looks twice, 0.2 s apart
        resync = tandem.resyncs_done()[0]
        app_writes = tandem.metric('tandem_writes_total{binding="records",op="update",side="app"}')
        all_writes = tandem.metric("tandem_writes_total{")
        rss = tandem.peak_rss_mb()
    finally:
        tandem.stop()
    return {
        "changed": changed, "seconds": seconds, "resync_ms": resync["duration_ms"], "writes": int(all_writes),
        "app_updates": int(app_writes), "api_calls": calls(before, api_requests(url)), "peak_rss_mb": rss,
    }  # fmt: skip


# --- ceilings and peer -------------------------------------------------------------------


def ceiling_import(url: str, n: int, *, linked: bool = False) -> dict[str, Any]:
    reset(url, records("ext", n))
    with tempfile.TemporaryDirectory() as tmp:
        app_db(Path(tmp) / "app.db", [])
        what = ["import-linked", "--state", f"{tmp}/state.db"] if linked else ["import"]
        command = [sys.executable, str(ROOT / "bench" / "ceilings.py"), *what, "--url", url, "--db", f"{tmp}/app.db"]
        result = run_json(command)
    result["records_per_s"] = result["records"] / result["seconds"]
    return result


def ceiling_push(url: str, n: int, concurrency: int, clients: str) -> dict[str, Any]:
    reset(url)
    command = [sys.executable, str(ROOT / "bench" / "ceilings.py"), "push", "--url", url, "--records", str(n)]
    result = run_json([*command, "--concurrency", str(concurrency), "--clients", clients])
    result["records_per_s"] = result["records"] / result["seconds"]
    return result


def peer_dlt(url: str, n: int, *, best: bool) -> dict[str, Any] | None:
    if not DLT_PYTHON.exists():
        return None
    reset(url, records("ext", n))
    with tempfile.TemporaryDirectory() as tmp:
        command = [str(DLT_PYTHON), str(ROOT / "bench" / "peer_dlt.py"), "--url", url, "--workdir", tmp]
        result = run_json(command + (["--best"] if best else []))
    result["records_per_s"] = result["records"] / result["seconds"]
    return result


# --- the run -----------------------------------------------------------------------------


def median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per key, the median over runs (numbers), or the first run's value."""
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = statistics.median(run[key] for run in runs)
        elif isinstance(value, dict):
            out[key] = median([run[key] for run in runs])
        else:
            out[key] = value
    return out


def repeat(runs: int, measure: Callable[[], dict[str, Any] | None]) -> dict[str, Any] | None:
    results = [r for _ in range(runs) if (r := measure()) is not None]
    if not results:
        return None
    summary = median(results)
    summary["runs"] = len(results)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--push-records", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--only", default="", help="comma-separated scenarios: capacity,import,import-sizes,push,pairing"
    )
    parser.add_argument(
        "--import-sizes", default="", help="comma-separated sizes: tandem's import once at each, for its peak RSS"
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))
    n, runs = args.records, args.runs
    results: dict[str, Any] = {"records": n, "push_records": args.push_records, "runs": runs}

    def wanted(name: str) -> bool:
        return not only or name in only

    with api() as url:
        if wanted("capacity"):
            reset(url, records("cap", 10))
            capacity = run_json([sys.executable, str(ROOT / "bench" / "ceilings.py"), "capacity", "--url", url])
            results["api_capacity_requests_per_s"] = capacity["requests"] / capacity["seconds"]
            print(
                f"API capacity: {results['api_capacity_requests_per_s']:,.0f} requests/s (raw sockets, 8 connections)"
            )
        if wanted("import"):
            results["import"] = {
                "ceiling": repeat(runs, lambda: ceiling_import(url, n)),
                "ceiling_linked": repeat(runs, lambda: ceiling_import(url, n, linked=True)),
                "tandem": repeat(runs, lambda: tandem_import(url, n)),
                "dlt_defaults": repeat(runs, lambda: peer_dlt(url, n, best=False)),
                "dlt_best": repeat(runs, lambda: peer_dlt(url, n, best=True)),
            }
            print(json.dumps(results["import"], indent=1))
        sizes = [int(size) for size in filter(None, args.import_sizes.split(","))]
        if sizes and wanted("import-sizes"):
            results["import_sizes"] = {str(size): tandem_import(url, size) for size in sizes}
            print(json.dumps(results["import_sizes"], indent=1))
        if wanted("push"):
            push: dict[str, Any] = {}
            for concurrency in (1, 8, 32):
                push[str(concurrency)] = {
                    "ceiling_shared": repeat(
                        runs, lambda c=concurrency: ceiling_push(url, args.push_records, c, "shared")
                    ),
                    "ceiling_per_worker": repeat(
                        runs, lambda c=concurrency: ceiling_push(url, args.push_records, c, "per-worker")
                    ),
                    "tandem": repeat(runs, lambda c=concurrency: tandem_push(url, args.push_records, c)),
                }
            push["bulk_endpoint"] = {
                "ceiling": repeat(runs, lambda: ceiling_push(url, args.push_records, 8, "bulk")),
                "tandem": repeat(runs, lambda: tandem_push(url, args.push_records, 8, bulk=True)),
            }
            results["push"] = push
            print(json.dumps(push, indent=1))
        if wanted("pairing"):
            results["pairing_and_steady"] = repeat(runs, lambda: tandem_pairing_and_steady(url, n))
            print(json.dumps(results["pairing_and_steady"], indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
