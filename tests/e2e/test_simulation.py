"""A seeded history of changes on both sides, with faults and SIGKILLs, then the invariants.

For each seed: random creates, updates and deletes on both sides (edits to the same
record on both sides, deletions against edits), API faults switched on and off (5xx,
429 with Retry-After, creates whose response is lost past the client timeout), and the
daemon killed with SIGKILL at random moments and restarted. Then the faults stop, both
sides go quiet, and the suite checks: both sides hold the same values; every record is
linked exactly once; no title appears twice on either side (no twins); and a further
`tandem plan` plans no write. A failing seed is in the test id: rerun it with
`TANDEM_SIM_SEEDS=N pytest tests/e2e/test_simulation.py`; `make test` runs seeds 1-3 and
`make soak` runs seeds 1-40.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from daemon.webhooks import sign
from tests.e2e.test_webhooks import HOOK_SECRET, WEBHOOK
from tests.support.daemon import AppDb, Daemon, bindings_toml, eventually
from tests.support.servers import inject, sample_app_process

pytestmark = pytest.mark.anyio

# `make test` runs the fixed seeds (3 keeps the reused-id twin it found as a regression);
# `make soak` runs many more, chosen with TANDEM_SIM_SEEDS.
CHOSEN = os.environ.get("TANDEM_SIM_SEEDS", "1,2,3")
SEEDS = [pytest.param(int(seed), id=f"seed-{seed}") for seed in CHOSEN.split(",")]
STEPS = int(os.environ.get("TANDEM_SIM_STEPS", "50"))
LOST_CREATE_DELAY = 1.5
"""Seconds the server takes over a "lost create", past the client's 1 s timeout."""


class World:
    def __init__(self, rng: random.Random, app_db: AppDb, url: str, daemon: Daemon, *, seed: int) -> None:
        self.rng, self.app_db, self.url, self.daemon = rng, app_db, url, daemon
        # The later faults draw from their own stream, so each seed's history of steps and
        # of the first faults is as it was before they were added.
        self.later = random.Random(seed * 7919 + 1)
        self.poison: set[str] = set()  # titles of external records no side can take in
        self.counter = 0
        self.kills = 0
        self.faults: Counter[str] = Counter()
        self.created: set[str] = set()
        self.deleted: set[str] = set()  # titles the history deleted on either side
        self.bad: set[str] = set()  # titles of app rows with a value of the wrong type
        self.held_back: list[Any] = []  # webhooks delivered late, after newer ones
        self.webhooks: Counter[str] = Counter()

    def title(self) -> str:
        self.counter += 1
        name = f"t{self.counter}"
        self.created.add(name)
        return name

    async def ext_records(self) -> list[dict[str, Any]]:
        """The external records, less the poison ones (parked, and left alone by the history)."""
        async with httpx.AsyncClient(timeout=10) as client:
            records = (await client.get(f"{self.url}/_admin/direct/tasks")).json()
        return [record for record in records if record.get("title") not in self.poison]

    async def later_fault(self, client: httpx.AsyncClient) -> None:
        """A state database lost while the listing answers [] once, a mapped column renamed
        away for a moment, or a poison record on the external side."""
        kind = self.later.choice(["lost-state", "schema-change", "poison"])
        self.faults[kind] += 1
        if kind == "lost-state":
            self.daemon.kill()
            self.kills += 1
            # A state database is lost while tandem is down (a disk replaced, a backup
            # restored), not within the second a delayed create may still land: no state
            # could know of a record made after its own loss, so none is expected to.
            await anyio.sleep(LOST_CREATE_DELAY + 0.5)
            for path in self.daemon.workdir.glob("state.db*"):
                path.unlink()
            # The listing's first page lies once; lookups (?title=...) tell the truth.
            await inject(self.url, status=200, body="[]", count=1, methods=["GET"], query="_page=1&", unless="title=")
            await self.daemon.start()
        elif kind == "schema-change":
            self.app_db.execute("ALTER TABLE tasks RENAME COLUMN note TO note_away")
            await anyio.sleep(self.later.uniform(0.3, 1.0))  # how long the fault lasts
            self.app_db.execute("ALTER TABLE tasks RENAME COLUMN note_away TO note")
        else:
            self.counter += 1
            title = f"poison{self.counter}"
            self.poison.add(title)
            deep: Any = "leaf"
            for _ in range(100):
                deep = [deep]
            created = await client.post(
                f"{self.url}/_admin/seed/tasks", json=[{"title": title, "completed": False, "note": deep}]
            )
            await self.hook(created.json()[0]["id"])

    async def hook(self, record_id: Any) -> None:
        """Tell the daemon of an external change as the external app would: sometimes twice,
        sometimes late (after a newer notification), sometimes not at all (daemon down)."""
        roll = self.rng.random()
        if roll < 0.25:
            self.held_back.append(record_id)
            self.webhooks["reordered"] += 1
            return
        ids = [record_id, record_id] if roll < 0.5 else [record_id]
        if len(ids) == 2:
            self.webhooks["duplicated"] += 1
        if self.held_back and self.rng.random() < 0.5:
            ids.append(self.held_back.pop(0))
        for each in ids:
            body = json.dumps({"data": {"id": each}}).encode()
            headers = {"X-Tandem-Signature": sign(HOOK_SECRET, body), "Content-Type": "application/json"}
            try:
                async with httpx.AsyncClient(timeout=5) as client:
                    await client.post(f"{self.daemon.url}/webhooks/tasks", content=body, headers=headers)
                self.webhooks["sent"] += 1
            except httpx.HTTPError:
                self.webhooks["lost"] += 1  # the daemon was down: the poll finds the change

    async def step(self) -> None:
        rng = self.rng
        action = rng.choice(
            ["app-create", "app-update", "app-delete", "ext-create", "ext-update", "ext-delete",
             "both-edit", "fault", "fault", "kill"]
        )  # fmt: skip
        app_rows = self.app_db.rows()
        async with httpx.AsyncClient(timeout=10) as client:
            ext = await self.ext_records()
            if action == "app-create" and rng.random() < 0.15:  # a value the mapping refuses
                title = self.title()
                self.bad.add(title)
                self.app_db.execute("INSERT INTO tasks (title, done) VALUES (?, 'maybe')", (title,))
            elif action == "app-create":
                self.app_db.execute("INSERT INTO tasks (title, note) VALUES (?, ?)", (self.title(), "new"))
            elif action == "app-update" and (good := [r for r in app_rows if r["title"] not in self.bad]):
                row = rng.choice(good)
                self.app_db.execute("UPDATE tasks SET note = ?, done = ? WHERE id = ?",
                                    (f"a{self.counter}", rng.randint(0, 1), row["id"]))  # fmt: skip
                self.counter += 1
            elif action == "app-delete" and app_rows:
                row = rng.choice(app_rows)
                self.deleted.add(row["title"])
                self.app_db.execute("DELETE FROM tasks WHERE id = ?", (row["id"],))
            elif action == "ext-create":
                fresh = {"title": self.title(), "note": "new", "completed": False}
                created = await client.post(f"{self.url}/_admin/seed/tasks", json=[fresh])
                await self.hook(created.json()[0]["id"])
            elif action == "ext-update" and ext:
                record = rng.choice(ext)
                await client.patch(f"{self.url}/_admin/direct/tasks/{record['id']}",
                                   json={"note": f"e{self.counter}", "completed": rng.random() < 0.5})  # fmt: skip
                self.counter += 1
                await self.hook(record["id"])
            elif action == "ext-delete" and ext:
                record = rng.choice(ext)
                self.deleted.add(record["title"])
                await client.delete(f"{self.url}/_admin/direct/tasks/{record['id']}")
                await self.hook(record["id"])
            elif action == "both-edit" and (good := [r for r in app_rows if r["title"] not in self.bad]) and ext:
                row = rng.choice(good)
                twin = next((r for r in ext if r["title"] == row["title"]), None)
                self.app_db.execute("UPDATE tasks SET note = ? WHERE id = ?", (f"both-a{self.counter}", row["id"]))
                if twin is not None:
                    if rng.random() < 0.3:  # a deletion against the edit
                        # The edit wins if tandem sees both at once; if it synced the edit
                        # before the deletion happened, the later deletion wins: either is right.
                        self.deleted.add(row["title"])
                        await client.delete(f"{self.url}/_admin/direct/tasks/{twin['id']}")
                    else:
                        await client.patch(f"{self.url}/_admin/direct/tasks/{twin['id']}",
                                           json={"note": f"both-e{self.counter}"})  # fmt: skip
                self.counter += 1
            elif action == "fault":
                kind = rng.choice(
                    ["500", "503", "429", "lost-create", "slow", "bad-json", "short-listing", "reset", "cut-create"]
                )
                self.faults[kind] += 1
                if kind == "500":
                    await inject(self.url, status=500, count=rng.randint(1, 6), path_prefix="/tasks")
                elif kind == "429":
                    await inject(self.url, status=429, retry_after="0.3", count=rng.randint(1, 4), path_prefix="/tasks")
                elif kind == "lost-create":  # the server creates, the client gives up first
                    await inject(
                        self.url, status=0, delay=LOST_CREATE_DELAY, count=1, methods=["POST"], path_prefix="/tasks"
                    )
                elif kind == "503":
                    await inject(self.url, status=503, count=rng.randint(1, 4), path_prefix="/tasks")
                elif kind == "bad-json":  # a truncated body
                    await inject(self.url, status=200, body='[{"id": 1, "tit', count=2, methods=["GET"])
                elif kind == "reset":  # the connection breaks before the server acts
                    await inject(self.url, drop="before", count=rng.randint(1, 3), path_prefix="/tasks")
                elif kind == "cut-create":  # the server creates, then the connection breaks
                    await inject(self.url, drop="after", count=1, methods=["POST"], path_prefix="/tasks")
                elif kind == "short-listing":  # a page that claims the listing is over
                    # A listing's first page claims to be empty; a lookup (?title=...) tells
                    # the truth, as the daemon must be able to trust some answer.
                    await inject(
                        self.url, status=200, body="[]", count=3, methods=["GET"], query="_page=1&", unless="title="
                    )
                else:
                    await inject(self.url, status=0, delay=0.3, count=3, path_prefix="/tasks")
                if self.later.random() < 0.3:
                    await self.later_fault(client)
            elif action == "kill":
                self.daemon.kill()  # SIGKILL: no cleanup at all
                self.kills += 1
                await self.daemon.start()
        await anyio.sleep(rng.uniform(0.02, 0.25))


def _sides(
    app_db: AppDb, ext: list[dict[str, Any]], bad: set[str]
) -> tuple[dict[str, tuple[Any, ...]], dict[str, tuple[Any, ...]]]:
    app = {row["title"]: (row["note"], bool(row["done"])) for row in app_db.rows() if row["title"] not in bad}
    external = {r["title"]: (r.get("note"), bool(r.get("completed"))) for r in ext}
    return app, external


@pytest.mark.parametrize("seed", SEEDS)
async def test_invariants_hold_after_faults_and_kills(seed: int, tmp_path: Path):
    rng = random.Random(seed)
    with sample_app_process() as url:
        app_db = AppDb(tmp_path / "app.db")
        config = bindings_toml(url).replace('base_url = "', 'timeout = "1s"\nretries = 1\nbase_url = "', 1)
        # The guard is for accidents, and this history deletes on purpose.
        config = config.replace("max_fraction = 0.5, min_count = 3", "max_fraction = 1.0, min_count = 1000")
        (tmp_path / "tandem.toml").write_text(config + WEBHOOK)
        log_level = os.environ.get("TANDEM_SIM_LOG_LEVEL", "info")  # debug shows every reconcile
        daemon = Daemon(
            tmp_path, env={"TANDEM_SHUTDOWN_TIMEOUT": "1", "TANDEM_LOG_LEVEL": log_level, "HOOK_SECRET": HOOK_SECRET}
        )
        world = World(rng, app_db, url, daemon, seed=seed)
        try:
            for _ in range(5):
                app_db.execute("INSERT INTO tasks (title, note) VALUES (?, 'seed')", (world.title(),))
            await daemon.start()
            for _ in range(STEPS):
                await world.step()

            async with httpx.AsyncClient() as client:  # faults off; the world goes quiet
                await client.post(f"{url}/_admin/reset")

            async def converged() -> bool:
                app, external = _sides(app_db, await world.ext_records(), world.bad)
                return app == external

            try:
                await eventually(converged, timeout=60, what="both sides to converge")
            except AssertionError:
                app, external = _sides(app_db, await world.ext_records(), world.bad)
                raise AssertionError(
                    f"seed {seed}: sides differ; only in app {sorted(set(app) - set(external))},"
                    f" only external {sorted(set(external) - set(app))},"
                    f" values differ {sorted(t for t in set(app) & set(external) if app[t] != external[t])}"
                ) from None
            ext = await world.ext_records()
            app_titles = [row["title"] for row in app_db.rows() if row["title"] not in world.bad]
            ext_titles = [r["title"] for r in ext]
            assert len(app_titles) == len(set(app_titles)), f"seed {seed}: twins in the app"
            twins = sorted((r["title"], r["id"]) for r in ext if ext_titles.count(r["title"]) > 1)
            assert not twins, f"seed {seed}: twins in the external app: {twins}"
            lost = (world.created - world.deleted - world.bad) - set(ext_titles)
            assert not lost, f"seed {seed}: records nobody deleted are gone: {sorted(lost)}"
            assert not world.bad & set(ext_titles), f"seed {seed}: a refused record reached the external app"

            async def all_linked() -> bool:
                with sqlite3.connect(tmp_path / "state.db") as db:
                    states = dict(db.execute("SELECT state, COUNT(*) FROM links GROUP BY state").fetchall())
                parked_bad = len(world.bad & {row["title"] for row in app_db.rows()}) + len(world.poison)
                return states.get("synced", 0) + states.get("conflict", 0) == len(app_titles) and (
                    not states.get("pending") and states.get("error", 0) == parked_bad
                )

            await eventually(all_linked, timeout=30, what="every record linked once, every refused one parked")
            if world.bad & {row["title"] for row in app_db.rows()}:
                assert "not a boolean" in daemon.command("status").stdout  # parked with its error
            assert daemon.stop(signal.SIGTERM) == 0
            plan = daemon.command("plan", "--json")
            assert plan.returncode == 0, plan.stderr
            assert json.loads(plan.stdout)["bindings"][0]["writes"] == [], f"seed {seed}: a further resync writes"
            print(
                f"seed {seed}: {STEPS} steps, {world.kills} SIGKILLs, faults {dict(world.faults)},"
                f" webhooks {dict(world.webhooks)},"
                f" {len(app_titles)} records on each side at the end, {len(world.bad)} refused and parked"
            )
        finally:
            daemon.kill()
