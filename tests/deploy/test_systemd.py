"""The systemd unit, checked by systemd's own tools, and the notify protocol spoken for real."""

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from tests.support.daemon import AppDb, Daemon, bindings_toml, eventually
from tests.support.servers import sample_app_process

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "tandem.service"
TANDEM = str(Path(sys.executable).parent / "tandem")


def _unit_here(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's tandem (verify checks it exists)."""
    unit = tmp_path / "tandem.service"
    unit.write_text(UNIT.read_text().replace("/opt/tandem/bin/tandem", TANDEM))
    return unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_unit_verifies_and_scores_ok_for_exposure(tmp_path):
    unit = _unit_here(tmp_path)
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=20", str(unit)],
        capture_output=True,
        text=True,
    )
    assert security.returncode == 0, security.stdout[-2000:]
    assert "Overall exposure level for tandem.service: 1." in security.stdout


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    folder = tempfile.mkdtemp(prefix="tn", dir="/tmp")  # AF_UNIX paths are short
    path = f"{folder}/notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    yield sock, path
    sock.close()
    shutil.rmtree(folder, ignore_errors=True)


def _messages(sock: socket.socket, until: float) -> list[str]:
    seen = []
    while anyio.current_time() < until:
        try:
            seen.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return seen


@pytest.mark.anyio
async def test_ready_watchdog_and_stopping_are_sent(tmp_path, notify_socket):
    sock, path = notify_socket
    with sample_app_process() as url:
        AppDb(tmp_path / "app.db")
        (tmp_path / "tandem.toml").write_text(bindings_toml(url))
        daemon = Daemon(tmp_path, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
        try:
            await daemon.start()
            seen = _messages(sock, anyio.current_time() + 1.5)
            assert any(m.startswith("READY=1") for m in seen)
            assert sum(m == "WATCHDOG=1" for m in seen) >= 3  # every 0.2 s
            assert daemon.stop(signal.SIGTERM) == 0
            assert "STOPPING=1" in _messages(sock, anyio.current_time() + 0.5)
        finally:
            daemon.kill()


@pytest.mark.anyio
async def test_sighup_does_not_stop_the_daemon(tmp_path):
    with sample_app_process() as url:
        AppDb(tmp_path / "app.db")
        (tmp_path / "tandem.toml").write_text(bindings_toml(url))
        daemon = Daemon(tmp_path)
        try:
            await daemon.start()
            assert daemon.process is not None
            daemon.process.send_signal(signal.SIGHUP)

            async def logged() -> bool:
                return any(line.get("event") == "daemon.sighup_ignored" for line in daemon.log_lines())

            await eventually(logged, what="the SIGHUP to be logged")
            assert await daemon.ready()  # still serving
            assert daemon.stop() == 0
        finally:
            daemon.kill()
