"""Kinto and PouchDB Server as real processes on loopback, installed by `make tools`.

Each runs with in-memory storage, so every test works in its own bucket or database.
Both count the requests they serve, so tests can say what tandem asked for: Kinto
through a test hook loaded into it, PouchDB Server through its request log.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.daemon import free_port

ROOT = Path(__file__).resolve().parents[2]
KINTO = ROOT / ".tools" / "kinto" / "bin" / "kinto"
POUCHDB = ROOT / ".tools" / "pouchdb" / "node_modules" / ".bin" / "pouchdb-server"
HOOKS = ROOT / "tests" / "servers"

KINTO_USER, KINTO_PASSWORD = "tandem", "kinto-5ecret-pw"


def _wait_until_up(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within 30 s:\n{log.read_text(errors='replace')}")


@contextmanager
def _process(command: list[str], *, url: str, workdir: Path, env: dict[str, str] | None = None) -> Iterator[Path]:
    if not Path(command[0]).exists():
        raise RuntimeError(f"{command[0]} is missing: run `make tools`")
    log = workdir / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_until_up(process, url, log)
        yield log
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# --- Kinto ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KintoServer:
    url: str  # …/v1

    @property
    def auth(self) -> tuple[str, str]:
        return (KINTO_USER, KINTO_PASSWORD)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url + "/", auth=self.auth, timeout=10)

    async def new_collection(self, collection: str = "contacts") -> str:
        """A fresh bucket holding `collection`; returns the bucket's name."""
        bucket = f"b{uuid.uuid4().hex[:10]}"
        async with self.client() as client:
            (await client.put(f"buckets/{bucket}")).raise_for_status()
            (await client.put(f"buckets/{bucket}/collections/{collection}")).raise_for_status()
        return bucket

    async def records(self, bucket: str, collection: str = "contacts") -> list[dict[str, Any]]:
        async with self.client() as client:
            response = await client.get(f"buckets/{bucket}/collections/{collection}/records")
            response.raise_for_status()
            data: list[dict[str, Any]] = response.json()["data"]
            return data

    async def purge_tombstones(self, bucket: str, collection: str = "contacts") -> int:
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"{self.url}/__test__/purge", params={"parent": f"/buckets/{bucket}/collections/{collection}"}
            )
            response.raise_for_status()
            return int(response.json()["purged"])

    async def requests(self, bucket: str) -> list[dict[str, Any]]:
        """The requests served so far on `bucket`: method, path, query parameter names."""
        async with httpx.AsyncClient() as client:
            seen: list[dict[str, Any]] = (await client.get(f"{self.url}/__test__/requests")).json()
        return [r for r in seen if f"/buckets/{bucket}/" in r["path"] + "/"]


@contextmanager
def kinto_server(workdir: Path) -> Iterator[KintoServer]:
    port = free_port()
    command = [str(KINTO), "start", "--ini", str(HOOKS / "kinto.ini"), "--port", str(port)]
    url = f"http://127.0.0.1:{port}/v1"
    with _process(command, url=url + "/", workdir=workdir, env={**os.environ, "PYTHONPATH": str(HOOKS)}):
        yield KintoServer(url)


def basic_auth_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- PouchDB Server (the CouchDB API) ---------------------------------------------------

_REQUEST_LINE = re.compile(r"\[info\]\s+(GET|PUT|POST|DELETE|HEAD|COPY)\s+(\S+)\s+(\d{3})")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class CouchServer:
    url: str
    log: Path

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url + "/", timeout=10)

    async def new_database(self) -> str:
        name = f"db{uuid.uuid4().hex[:10]}"
        async with self.client() as client:
            (await client.put(name)).raise_for_status()
        return name

    async def docs(self, database: str) -> list[dict[str, Any]]:
        async with self.client() as client:
            response = await client.get(f"{database}/_all_docs", params={"include_docs": "true"})
            response.raise_for_status()
            return [row["doc"] for row in response.json()["rows"]]

    def requests(self, database: str) -> list[tuple[str, str, int]]:
        """The requests served so far on `database`: method, path with query, status."""
        text = _ANSI.sub("", self.log.read_text(errors="replace"))
        found = [(m.group(1), m.group(2), int(m.group(3))) for m in _REQUEST_LINE.finditer(text)]
        return [r for r in found if r[1].startswith(f"/{database}/") or r[1] == f"/{database}"]


@contextmanager
def couch_server(workdir: Path) -> Iterator[CouchServer]:
    port = free_port()
    command = [str(POUCHDB), "--in-memory", "--port", str(port), "--host", "127.0.0.1"]
    command += ["--config", str(workdir / "config.json")]
    url = f"http://127.0.0.1:{port}"
    with _process(command, url=url + "/", workdir=workdir) as log:
        yield CouchServer(url, log)
