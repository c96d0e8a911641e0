"""systemd's notification protocol: READY=1, watchdog pets, STOPPING=1.

A datagram to $NOTIFY_SOCKET; without that variable (not under systemd, or a unit not of
Type=notify) every call does nothing. The watchdog is petted at half of $WATCHDOG_USEC
from a task on the event loop, so a loop that stops turning stops the pets and systemd
restarts the service.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping

import anyio
import structlog

log = structlog.get_logger(__name__)


def notify(message: str, *, environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("systemd.notify_failed", error=str(exc))
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between pets (half the watchdog timeout), or None when there is no watchdog."""
    env = os.environ if environ is None else environ
    usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000 / 2


async def announce_ready(ready: Callable[[], bool]) -> None:
    """READY=1 once `ready()` holds, then watchdog pets for as long as the task runs."""
    while not ready():
        await anyio.sleep(0.05)
    notify("READY=1\nSTATUS=syncing")
    interval = watchdog_interval()
    if interval is None:
        return
    while True:
        notify("WATCHDOG=1")
        await anyio.sleep(interval)
