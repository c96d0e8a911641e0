"""How long the CLI's commands take to start and finish, beside `python -c pass`.

Every command but `run` is short-lived, so its start-up is the whole of what an operator
waits for. Each is run `--runs` times as a process, round-robin (so a noisy moment hits
them all alike), against a small bindings file: an SQLite table and the sample API.

    .venv/bin/python bench/startup.py [--runs 20] [--baseline OTHER/bin/tandem] [--out ...]

`--baseline` times another install of tandem (an earlier commit) in the same rounds; a
command it does not have is shown as n/a.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parent / "examples" / "sample_app.py"
CONFIG = """
[connections.app]
type = "sqlite"
path = "app.db"

[connections.tasks]
type = "rest"
base_url = "{url}"
headers = {{ Authorization = "Bearer ${{TASKS_TOKEN}}" }}

[[bindings]]
name = "tasks"
app = {{ connection = "app", table = "tasks" }}
external = {{ connection = "tasks", path = "/tasks" }}

[bindings.fields]
title = "title"
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=HERE / "out" / "startup.json")
    parser.add_argument("--baseline", help="another install's bin/tandem, timed in the same rounds")
    args = parser.parse_args()
    tandem = os.environ.get("TANDEM_BENCH_BIN") or str(Path(sys.executable).parent / "tandem")
    builds = {"this tree": tandem} | ({"baseline": args.baseline} if args.baseline else {})
    sample = subprocess.Popen([sys.executable, str(SAMPLE), "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert sample.stdout is not None
        url = "http://" + sample.stdout.readline().split("listening on ")[1].strip()
        with tempfile.TemporaryDirectory() as work:
            results = measure(Path(work), url, builds, args.runs)
    finally:
        sample.terminate()
        sample.wait(timeout=30)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"{'command':<34} {'median':>8} {'min':>8} {'max':>8}   (seconds, {args.runs} runs each)")
    for name, figures in results.items():
        if figures is None:
            print(f"{name:<34} {'n/a':>8}")
        else:
            print(f"{name:<34} {figures['median']:>8.3f} {figures['min']:>8.3f} {figures['max']:>8.3f}")


def measure(work: Path, url: str, builds: dict[str, str], runs: int) -> dict[str, dict[str, float] | None]:
    with sqlite3.connect(work / "app.db") as db:
        db.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT)")
    (work / "tandem.toml").write_text(CONFIG.format(url=url))
    env = {
        **os.environ,
        "TANDEM_CONFIG": str(work / "tandem.toml"),
        "TANDEM_STATE": str(work / "state.db"),
        "TASKS_TOKEN": "bench-token",
    }
    commands: dict[str, list[str]] = {}
    for build, tandem in builds.items():
        python = str(Path(tandem).parent / "python")
        commands[f"python -c pass ({build})"] = [python, "-c", "pass"]
        for args in (["--help"], ["--version"], ["status"], ["check"], ["plan"]):
            commands[f"tandem {' '.join(args)} ({build})"] = [tandem, *args]
    times: dict[str, list[float] | None] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            if times[name] is None:
                continue
            started = time.perf_counter()
            done = subprocess.run(command, env=env, cwd=work, capture_output=True)
            elapsed = time.perf_counter() - started
            if done.returncode != 0:
                times[name] = None  # this build has no such command
                continue
            times[name].append(elapsed)  # type: ignore[union-attr]
    return {
        name: None if values is None else {"median": statistics.median(values), "min": min(values), "max": max(values)}
        for name, values in times.items()
    }


if __name__ == "__main__":
    main()
