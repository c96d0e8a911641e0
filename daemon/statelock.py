"""One daemon per state database: an exclusive lock on a file beside it.

Two daemons writing one link table would race each other into twins. The lock is an
flock on `<state>.lock`, so the kernel releases it when the holder dies, even by
SIGKILL: a stale lock file never blocks a restart. Start-up waits a while for the lock
(a previous instance may still be finishing its shutdown) and then gives up.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio

from reconcilers.migrations import StateError

POLL = 0.1


def lock_path(state: Path) -> Path:
    return state.with_name(state.name + ".lock")


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode(errors="replace").strip()
    return f"pid {text}" if text.isdigit() else "another process"


@contextmanager
def _opened(path: Path) -> Iterator[int]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StateError(f"state database lock {path}: cannot open: {exc.strerror}") from exc
    try:
        yield fd
    finally:
        os.close(fd)  # closing releases the lock


@asynccontextmanager
async def state_lock(state: Path, *, wait: float) -> AsyncIterator[None]:
    """Hold the state database's lock, waiting up to `wait` seconds for it."""
    if str(state) == ":memory:":
        yield
        return
    path = lock_path(state)
    with _opened(path) as fd:
        with anyio.move_on_after(wait):
            while not _try_lock(fd):
                await anyio.sleep(POLL)
        if not _try_lock(fd):
            raise StateError(
                f"state database {state} is in use by {_holder(fd)} (lock {path}); one tandem per state database"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
