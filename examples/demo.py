"""The demo `make run` starts: an SQLite app, the sample external app, and tandem between them.

It seeds both sides, starts `tandem run`, shows the first two-way sync, makes one
change on each side and shows it arrive on the other. Then it keeps running so you
can make changes of your own (it prints how); Ctrl-C stops everything.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORK = HERE / ".demo"
BIN = Path(sys.executable).parent


def api(method: str, url: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read()
    return json.loads(text) if text else None


def app_rows(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute("SELECT id, title, done FROM tasks ORDER BY id"))


def wait_for(what: str, check: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise SystemExit(f"demo: timed out waiting for {what}")


def show(db: Path, url: str) -> None:
    print("  app (SQLite tasks):      ", [f"{title}{' ✓' if done else ''}" for _, title, done in app_rows(db)])
    external = api("GET", f"{url}/tasks?_limit=100")
    print("  external (sample /tasks):", [f"{r['title']}{' ✓' if r.get('completed') else ''}" for r in external])


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    db = WORK / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT NOT NULL,"
            " done INTEGER NOT NULL DEFAULT 0, note TEXT)"
        )
        conn.executemany(
            "INSERT INTO tasks (title, done) VALUES (?, ?)",
            [("Write the README", 1), ("Ship v1", 0), ("Water the plants", 0)],
        )
    shutil.copy(HERE / "tandem.toml", WORK / "tandem.toml")

    sample = subprocess.Popen(
        [sys.executable, str(HERE / "sample_app.py"), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        run_demo(sample, db)
    finally:
        if sample.poll() is None:
            sample.send_signal(signal.SIGTERM)
            sample.wait(timeout=30)


def run_demo(sample: subprocess.Popen[str], db: Path) -> None:
    assert sample.stdout is not None
    found = re.search(r"listening on ([\d.]+):(\d+)", sample.stdout.readline())
    if not found:
        raise SystemExit("demo: the sample app did not start")
    url = f"http://{found.group(1)}:{found.group(2)}"
    api("POST", f"{url}/_admin/seed/tasks", [
        {"title": "Ship v1", "completed": False, "note": "already in the tracker"},
        {"title": "Book the venue", "completed": True},
    ])  # fmt: skip

    env = {
        **os.environ,
        "DEMO_API_URL": url,
        "DEMO_API_TOKEN": "demo-token",
        "TANDEM_CONFIG": str(WORK / "tandem.toml"),
        "TANDEM_STATE": str(WORK / "tandem-state.db"),
        "TANDEM_POLL_INTERVAL": "0.5",
        "TANDEM_RESYNC_INTERVAL": "30",
        "TANDEM_LOG_FORMAT": os.environ.get("TANDEM_LOG_FORMAT", "console"),
    }
    log = (WORK / "tandem.log").open("w")
    tandem = subprocess.Popen([str(BIN / "tandem"), "run"], env=env, stdout=log, stderr=log)
    addr = env.get("TANDEM_HTTP_ADDR", "127.0.0.1:8787")
    try:
        print(f"Sample external app on {url}; tandem on http://{addr} (log: {WORK / 'tandem.log'})\n")
        print("Before the first sync:")
        show(db, url)
        wait_for("the first sync", lambda: len(app_rows(db)) == 4 and len(api("GET", f"{url}/tasks")) == 4)
        print("\nAfter the first sync ('Ship v1' was paired by title, not copied twice):")
        show(db, url)

        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE tasks SET done = 1 WHERE title = 'Ship v1'")
        venue = next(r for r in api("GET", f"{url}/tasks") if r["title"] == "Book the venue")
        api("PATCH", f"{url}/tasks/{venue['id']}", {"title": "Book the bigger venue"})
        print("\nThe app ticks 'Ship v1'; the external app renames 'Book the venue'...")
        wait_for(
            "both changes to cross",
            lambda: (
                any(r["title"] == "Ship v1" and r["completed"] for r in api("GET", f"{url}/tasks"))
                and any(title == "Book the bigger venue" for _, title, _ in app_rows(db))
            ),
        )
        print("...and each change shows on the other side:")
        show(db, url)
        print(
            "\nStill running. Try:\n"
            f"  sqlite3 {db} \"INSERT INTO tasks (title) VALUES ('from sqlite')\"\n"
            f"  curl -X POST {url}/tasks -H 'Content-Type: application/json' -d '{{\"title\": \"from the API\"}}'\n"
            f"  curl {url}/tasks    |   curl http://{addr}/metrics   |   "
            f"TANDEM_CONFIG={WORK / 'tandem.toml'} DEMO_API_URL={url} DEMO_API_TOKEN=x"
            f" TANDEM_STATE={WORK / 'tandem-state.db'} {BIN / 'tandem'} status\n"
            "Ctrl-C stops the demo."
        )
        tandem.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if tandem.poll() is None:
            tandem.send_signal(signal.SIGTERM)
            tandem.wait(timeout=30)
        log.close()


if __name__ == "__main__":
    main()
