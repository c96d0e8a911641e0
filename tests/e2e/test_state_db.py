"""The state database under misuse: a second daemon, a writer holding its lock, no write access."""

import os
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import anyio
import pytest

from tests.e2e.test_sync import ext_records
from tests.support.daemon import TANDEM, AppDb, Daemon, bindings_toml, eventually

pytestmark = pytest.mark.anyio


async def test_a_second_daemon_on_one_state_database_is_refused(daemon: Daemon, external: str, app_db: AppDb):
    await daemon.start()
    assert daemon.process is not None
    second = Daemon(daemon.workdir)  # same state file, its own port
    result = subprocess.run([TANDEM, "run"], env=second.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"state database {daemon.workdir / 'state.db'} is in use by pid {daemon.process.pid}" in result.stderr
    app_db.execute("INSERT INTO tasks (title) VALUES ('still syncing')")  # the first one is unharmed

    async def pushed() -> bool:
        return [r["title"] for r in await ext_records(external)] == ["still syncing"]

    await eventually(pushed, what="the first daemon to go on")
    assert daemon.stop() == 0


async def test_a_writer_holding_the_state_lock_delays_sync_and_loses_nothing(
    daemon: Daemon, external: str, app_db: AppDb
):
    await daemon.start()
    holder = sqlite3.connect(daemon.workdir / "state.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # no other writer until it ends: longer than busy_timeout
        app_db.execute("INSERT INTO tasks (title) VALUES ('written while locked')")
        await anyio.sleep(7)
        assert daemon.process is not None and daemon.process.poll() is None
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    async def pushed() -> bool:
        return [r["title"] for r in await ext_records(external)] == ["written while locked"]

    await eventually(pushed, timeout=30, what="the record once the lock was released")
    assert "database is locked" in daemon.log_text()  # said, not swallowed
    assert daemon.stop() == 0


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_a_read_only_state_database_is_a_clear_error(external: str, other_user_bin: Path):
    root = Path(tempfile.mkdtemp(prefix="tandem-ro-", dir="/tmp"))  # reachable by uid 10001
    try:
        os.chmod(root, 0o777)
        AppDb(root / "app.db")
        os.chmod(root / "app.db", 0o666)
        (root / "tandem.toml").write_text(bindings_toml(external).replace('path = "app.db"', f'path = "{root}/app.db"'))
        state = root / "state.db"
        sqlite3.connect(state).close()  # root's file, read-only to the daemon's user
        os.chmod(state, 0o644)
        env = {**Daemon(root).env, "TANDEM_STATE": str(state)}
        user = ["setpriv", "--reuid=10001", "--regid=10001", "--clear-groups"]
        tandem = str(other_user_bin / "tandem")
        result = subprocess.run([*user, tandem, "run"], env=env, cwd=root, capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        assert f"state database {state}" in result.stderr
        assert "readonly database" in result.stderr
        assert state.stat().st_size == 0  # untouched
    finally:
        shutil.rmtree(root, ignore_errors=True)
