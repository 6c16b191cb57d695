"""A collection's write lock held in a file, across processes: what a store kept in a folder shares.

``flock`` on ``write.lock``: the kernel releases it when the holder dies, however it dies, so a kill -9 never
leaves a collection locked. The holder writes a line describing itself into the file, which a waiter that gives
up quotes in its CollectionBusyError. flock locks belong to an open file, so two threads of one process that
each open the file exclude each other too.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from .errors import CollectionBusyError, StorageError

LOCK_FILE = "write.lock"
_POLL_SECONDS = (0.005, 0.01, 0.02, 0.05)  # the waits between tries, the last repeated


def describe_this_process() -> str:
    """How a lock holder names itself to a waiter: pid, host, command, since when."""
    command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv[:3])) or "python"
    since = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"pid {os.getpid()} on {socket.gethostname()} ({command}), since {since}"


@contextmanager
def hold_file_lock(folder: Path, timeout: float, holder: str, *, where: str) -> Iterator[None]:
    """Hold ``folder``/write.lock exclusively for the block, waiting up to ``timeout`` seconds for another holder."""
    path = folder / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StorageError(
            f"cannot open the write lock {path} ({exc.strerror or exc}); the collection's folder must be writable "
            f"by every process that writes to it",
            location=str(path),
        ) from exc
    try:
        _acquire(fd, path, timeout, where)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{holder}\n".encode(), 0)
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, path: Path, timeout: float, where: str) -> None:
    deadline = time.monotonic() + timeout
    for attempt in range(sys.maxsize):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            holder = _read_holder(path)
            raise CollectionBusyError(
                f"{where} is being written by {holder or 'another process'}; waited {timeout:g} s for it "
                f"([store] lock_timeout): run the write again when it has finished, or raise lock_timeout",
                location=str(path),
                holder=holder,
            )
        time.sleep(min(left, _POLL_SECONDS[min(attempt, len(_POLL_SECONDS) - 1)]))


def _read_holder(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip() or None
    except OSError:
        return None


class ThreadLock:
    """The write lock of a store held in one process only (in memory): the same interface, threads excluded."""

    def __init__(self, where: str) -> None:
        self._lock = threading.Lock()
        self._holder: str | None = None
        self._where = where

    @contextmanager
    def hold(self, timeout: float, holder: str) -> Iterator[None]:
        if not self._lock.acquire(timeout=timeout):
            raise CollectionBusyError(
                f"{self._where} is being written by {self._holder or 'another thread'}; waited {timeout:g} s for it "
                f"([store] lock_timeout): run the write again when it has finished, or raise lock_timeout",
                location=self._where,
                holder=self._holder,
            )
        self._holder = holder
        try:
            yield
        finally:
            self._holder = None
            self._lock.release()


class FolderClaim:
    """A folder held by this process for as long as it is open (``open.lock``, flock): for stores whose files one
    process at a time may open. A second process is refused at once, in one line naming the holder and the
    remedy; the kernel releases the claim when the holder dies."""

    FILE = "open.lock"

    def __init__(self, folder: Path, *, where: str, remedy: str) -> None:
        path = folder / self.FILE
        try:
            self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(
                f"cannot open {path} ({exc.strerror or exc}); the folder must be writable", location=str(path)
            ) from exc
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            holder = _read_holder(path)
            raise StorageError(
                f"{where} is open in {holder or 'another process'}; {remedy}", location=str(path)
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{describe_this_process()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None
