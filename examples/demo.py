"""The demo `make run` starts: an SQLite app, the sample external app, and tandem between them.

It seeds both sides, starts `tandem run`, shows the first two-way sync, makes one
change on each side and shows it arrive on the other. Then it keeps running so you
can make changes of your own (it prints how), showing both sides and any parked record
whenever something changes; Ctrl-C stops everything. `DEMO_DIR` moves its files
(default: examples/.demo), `TANDEM_HTTP_ADDR` its tandem.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORK = Path(os.environ.get("DEMO_DIR") or HERE / ".demo").resolve()
BIN = Path(sys.executable).parent


def api(method: str, url: str, body: Any = None, token: str | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read()
    return json.loads(text) if text else None


def app_rows(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute("SELECT id, title, done FROM tasks ORDER BY id"))


class TandemStopped(SystemExit):
    pass


def wait_for(what: str, check: Any, tandem: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tandem.poll() is not None:
            raise TandemStopped(f"demo: tandem stopped before {what}:\n{tandem_said()}")
        if check():
            return
        time.sleep(0.2)
    raise SystemExit(f"demo: timed out waiting for {what} (tandem's log: {WORK / 'tandem.log'})")


def tandem_said() -> str:
    """The lines in which tandem said why it stopped (`tandem: ...`), else the log's end."""
    lines = (WORK / "tandem.log").read_text(errors="replace").splitlines()
    said = [line for line in lines if line.startswith("tandem: ")]
    return "\n".join(said or lines[-5:])


def screen(db: Path, url: str, tandem_url: str) -> list[str]:
    app = [f"{title}{' ✓' if done else ''}" for _, title, done in app_rows(db)]
    external = [f"{r['title']}{' ✓' if r.get('completed') else ''}" for r in api("GET", f"{url}/tasks?_limit=100")]
    lines = [f"  app (SQLite tasks):       {app}", f"  external (sample /tasks): {external}"]
    try:
        token_file = os.environ.get("TANDEM_API_TOKEN_FILE") or WORK / "tandem-state.db.api-token"
        token = os.environ.get("TANDEM_API_TOKEN") or Path(token_file).read_text().strip()
        (binding,) = api("GET", f"{tandem_url}/api/bindings", token=token)["bindings"]
    except (OSError, ValueError):
        return lines  # tandem is starting or stopping
    for parked in binding["parked"]:
        ids = f"app {parked['app_id']}" if parked["app_id"] else f"external {parked['external_id']}"
        lines.append(f"  parked ({ids}): {parked['error']}")
    return lines


def show(db: Path, url: str, tandem_url: str) -> None:
    print("\n".join(screen(db, url, tandem_url)), flush=True)


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

    addr = os.environ.get("TANDEM_HTTP_ADDR", "127.0.0.1:8787")
    refuse_a_taken_port(addr)
    env = {
        **os.environ,
        "DEMO_API_URL": url,
        "DEMO_API_TOKEN": "demo-token",
        "TANDEM_CONFIG": str(WORK / "tandem.toml"),
        "TANDEM_STATE": str(WORK / "tandem-state.db"),
        "TANDEM_HTTP_ADDR": addr,
    }
    # The same settings for `tandem status`, `check` and `plan` run by hand beside the demo.
    settings = {name: env[name] for name in ("DEMO_API_URL", "DEMO_API_TOKEN", "TANDEM_CONFIG", "TANDEM_STATE")}
    (WORK / "env").write_text("".join(f"export {k}={v}\n" for k, v in {**settings, "TANDEM_HTTP_ADDR": addr}.items()))
    env |= {
        "TANDEM_POLL_INTERVAL": "0.5",
        "TANDEM_RESYNC_INTERVAL": "30",
        "TANDEM_LOG_FORMAT": os.environ.get("TANDEM_LOG_FORMAT", "console"),
    }
    log = (WORK / "tandem.log").open("w")
    tandem = subprocess.Popen([str(BIN / "tandem"), "run"], env=env, stdout=log, stderr=log)
    tandem_url = f"http://{addr}"
    try:
        print(f"Sample external app on {url}; tandem on {tandem_url} (log: {WORK / 'tandem.log'})\n")
        print("Before the first sync:")
        show(db, url, tandem_url)
        wait_for("the first sync", lambda: len(app_rows(db)) == 4 and len(api("GET", f"{url}/tasks")) == 4, tandem)
        print("\nAfter the first sync ('Ship v1' was paired by title, not copied twice):")
        show(db, url, tandem_url)

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
            tandem,
        )
        print("...and each change shows on the other side:")
        show(db, url, tandem_url)
        print(
            "\nStill running; what changes shows here. Try:\n"
            f"  sqlite3 {db} \"INSERT INTO tasks (title) VALUES ('from sqlite')\"\n"
            f"  curl -X POST {url}/tasks -H 'Content-Type: application/json'"
            f' -d \'{{"title": "from the API", "completed": false}}\'\n'
            f"  curl -X POST {url}/tasks -H 'Content-Type: application/json' -d '{{\"title\": \"no done flag\"}}'"
            "   (parked: the app's done is NOT NULL)\n"
            f"  curl {url}/tasks    |   curl {tandem_url}/metrics\n"
            f"  (. {shown(WORK / 'env')} && {shown(BIN / 'tandem')} status)     and the same for check and plan\n"
            "Ctrl-C stops the demo.",
            flush=True,
        )
        watch(db, url, tandem_url, tandem)
    except KeyboardInterrupt:
        pass
    finally:
        if tandem.poll() is None:
            tandem.send_signal(signal.SIGTERM)
            tandem.wait(timeout=30)
        log.close()


def shown(path: Path) -> str:
    """`path` relative to here when it is below, else in full."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def refuse_a_taken_port(addr: str) -> None:
    host, _, port = addr.rpartition(":")
    with socket.socket() as probe:
        if probe.connect_ex((host.strip("[]"), int(port))) == 0:
            raise SystemExit(
                f"demo: {addr} is in use (another tandem or another program listens there);"
                " stop it, or choose another port: TANDEM_HTTP_ADDR=127.0.0.1:8788 make run"
            )


def watch(db: Path, url: str, tandem_url: str, tandem: subprocess.Popen[bytes]) -> None:
    """Both sides and the parked records, printed again whenever they change."""
    last = screen(db, url, tandem_url)
    while tandem.poll() is None:
        time.sleep(0.5)
        now = screen(db, url, tandem_url)
        if now != last:
            print(f"\n{time.strftime('%H:%M:%S')}:\n" + "\n".join(now), flush=True)
            last = now
    raise TandemStopped(f"demo: tandem stopped:\n{tandem_said()}")


if __name__ == "__main__":
    main()
