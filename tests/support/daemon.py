"""`tandem` as a real process, for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx

TANDEM = str(Path(sys.executable).parent / "tandem")
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(check: Callable[[], Awaitable[T]], *, timeout: float = 20.0, what: str = "") -> T:
    """Poll `check` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = anyio.current_time() + timeout
    last: Any = None
    while anyio.current_time() < deadline:
        last = await check()
        if last:
            return last
        await anyio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check!r}; last saw {last!r}")


class AppDb:
    """The app's own SQLite database, written as the app would (its own connections)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with self.connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS tasks (id INTEGER PRIMARY KEY, title TEXT NOT NULL,"
                " done INTEGER NOT NULL DEFAULT 0, note TEXT)"
            )

    def connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10)
        db.row_factory = sqlite3.Row
        return db

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> int | None:
        with self.connect() as db:
            return db.execute(sql, params).lastrowid

    def rows(self) -> list[dict[str, Any]]:
        with self.connect() as db:
            return [dict(row) for row in db.execute("SELECT * FROM tasks ORDER BY id")]

    def titles(self) -> list[str]:
        return sorted(row["title"] for row in self.rows())


def bindings_toml(url: str, **overrides: str) -> str:
    extra = "\n".join(f"{key} = {value}" for key, value in overrides.items())
    return f"""
[connections.app]
type = "sqlite"
path = "app.db"

[connections.tasks]
type = "rest"
base_url = "{url}"
headers = {{ Authorization = "Bearer ${{TASKS_TOKEN}}" }}

[[bindings]]
name = "tasks"
match = ["title"]
delete_guard = {{ max_fraction = 0.5, min_count = 3 }}
{extra}
app = {{ connection = "app", table = "tasks", id = "id" }}

[bindings.external]
connection = "tasks"
path = "/tasks"
pagination = {{ type = "page", page_param = "_page", size_param = "_limit", size = 50 }}
changed_since = {{ param = "updated_since", field = "updated_at" }}

[bindings.fields]
title = "title"
done = {{ external = "completed", type = "bool" }}
note = "note"
"""


SECRET = "tok-e2e-5ecret-value"
API_TOKEN = "api-e2e-0123456789abcdef"


class Daemon:
    def __init__(self, workdir: Path, *, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "tandem.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.env = {
            **os.environ,
            "TANDEM_CONFIG": str(workdir / "tandem.toml"),
            "TANDEM_STATE": str(workdir / "state.db"),
            "TANDEM_HTTP_ADDR": f"127.0.0.1:{self.port}",
            "TANDEM_POLL_INTERVAL": "0.2",
            "TANDEM_RESYNC_INTERVAL": "1",
            "TANDEM_SHUTDOWN_TIMEOUT": "5",
            "TANDEM_LOG_FORMAT": "json",
            "TANDEM_LOG_LEVEL": "debug",
            "TASKS_TOKEN": SECRET,
            "TANDEM_API_TOKEN": API_TOKEN,
            **(env or {}),
        }

    @property
    def api_headers(self) -> dict[str, str]:
        """What the admin API asks of a caller."""
        return {"Authorization": f"Bearer {self.env['TANDEM_API_TOKEN']}"}

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [TANDEM, *args], env=self.env, cwd=self.workdir, capture_output=True, text=True, timeout=60
        )

    async def start(self, *, until: str = "/readyz") -> None:
        """Start `tandem run` and wait until `until` answers 200 (`/healthz`: only alive)."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen([TANDEM, "run"], env=self.env, cwd=self.workdir, stdout=log, stderr=log)
        await eventually(lambda: self.ready(until), what=until)

    async def ready(self, path: str = "/readyz") -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"tandem exited with {self.process.returncode}:\n{self.log_text()}")
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"{self.url}{path}")).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        self.process = None
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines

    async def metrics(self) -> dict[str, float]:
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"{self.url}/metrics")).text
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values
