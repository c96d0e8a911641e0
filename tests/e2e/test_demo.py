"""`make run`'s demo as a newcomer meets it: its own suggestions work and its screen shows them."""

import os
import queue
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.daemon import free_port

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.py"


class Screen:
    """The demo's stdout, read line by line on a thread so that waits have a deadline."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        assert process.stdout is not None
        threading.Thread(target=self._read, args=(process.stdout,), daemon=True).start()

    def _read(self, stdout: Any) -> None:
        for line in stdout:
            self._queue.put(line)

    def until(self, pattern: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            self.lines.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"the demo never printed {pattern!r}; it printed:\n{''.join(self.lines)}")


def _env(tmp_path: Path, addr: str) -> dict[str, str]:
    return {**os.environ, "DEMO_DIR": str(tmp_path / "demo"), "TANDEM_HTTP_ADDR": addr, "PYTHONUNBUFFERED": "1"}


def _curl(line: str) -> tuple[str, str]:
    """The URL and body of a `curl -X POST URL ... -d BODY` line the demo suggests."""
    words = shlex.split(line.split("(parked")[0])
    return words[words.index("POST") + 1], words[words.index("-d") + 1]


def test_the_demos_suggestions_work_and_a_parked_record_shows_on_its_screen(tmp_path: Path):
    demo = subprocess.Popen(
        [sys.executable, str(DEMO)], env=_env(tmp_path, f"127.0.0.1:{free_port()}"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    screen = Screen(demo)
    try:
        screen.until("After the first sync")
        good = screen.until(r"curl -X POST .*from the API")
        parked = screen.until(r"curl -X POST .*no done flag")
        status = screen.until(r"tandem status\)")
        screen.until("Ctrl-C stops the demo")
        for line in (good, parked):
            url, body = _curl(line)
            assert httpx.post(url, content=body, headers={"Content-Type": "application/json"}).status_code == 201
        screen.until(r"app \(SQLite tasks\):.*'from the API'")
        screen.until(r"parked \(external \d+\): .*done would be null, which the column refuses")
        # The printed way to run `tandem status` beside the demo works as printed.
        command = status.strip().split("     ")[0]
        result = subprocess.run(["bash", "-c", command], cwd=DEMO.parents[1], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert "parked: " in result.stdout and "done would be null" in result.stdout
    finally:
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=30) in (0, 1, -signal.SIGINT)


def test_a_port_in_use_is_said_at_once_with_the_variable_to_change(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        result = subprocess.run(
            [sys.executable, str(DEMO)], env=_env(tmp_path, addr), capture_output=True, text=True, timeout=30
        )
    assert result.returncode == 1
    assert f"demo: {addr} is in use" in result.stderr
    assert "TANDEM_HTTP_ADDR=" in result.stderr
    assert "timed out" not in result.stderr  # not after waiting for a first sync that never comes
