"""Several processes on one collection of a database without transactions (``vecguard.protocols.SharesCollection``):
a lease lock and a change feed, kept as records in a companion collection beside the data.

The lock. Threads of this process queue on one ``threading.Lock`` per collection (``ProcessLock``). Where the
database is a server, processes also queue on one lock record: acquiring inserts it unless one exists (the server
keeps the first insert, in its own order) and reads it back to see whose it is. The holder renews it (a counter)
from a daemon thread every lease / 3. A waiter that sees the same holder and count for a whole lease by its own
monotonic clock (no clocks are compared across machines) deletes the record if it is still that holder's with that
count, then tries again: a holder that died frees the collection after one lease. A holder that finds at release
that its record was taken over raises StorageError: a write of its may have raced with the new holder's.

The change feed. Before each write calls the database, it appends change records (the ids it will touch,
``CHANGE_IDS`` per record) at sequence head + 1; when the lock is released, the head record is set to head + 1:
that is the commit, of every write made under that one hold of the lock (a batch's upsert, delete and manifest
become one step of the token, and two database writes fewer each). Readers take the records with seq <= head. A
writer killed before its commit leaves records at head + 1 that the next commit covers, so they are read then
(rereading an id whose data did not change is harmless). The change records of all but the last ``KEPT_CHANGES``
commits are trimmed; ``changes_since`` an older token answers None.

A write made outside ``lock_writes`` takes the lock for that one call, so it commits on its own: the feed numbers
changes by reading the head, which is right only while one process writes.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from typing import Protocol

from vecguard.errors import CollectionBusyError, ConfigError, InvalidArgumentError, StorageError
from vecguard.faults import kill_point

COMPANION_SUFFIX = ".vecguard"
DEFAULT_LEASE = 15.0  # seconds; a dead holder keeps writers out this long, a live one renews 3 times within it
CHANGE_IDS = 1000  # ids per change record: a record stays well under a request's size limit
KEPT_CHANGES = 10_000  # commits whose ids stay listed; a reader further behind rereads everything
TRIM_EVERY = 100  # commits between two trims of the feed
READ_WINDOW = 100  # commits read per request by changes_since
IMPLICIT_LOCK_WAIT = 30.0  # seconds a write outside lock_writes waits for the lock (the default [store] lock_timeout)


def companion_name(collection: str) -> str:
    """The companion collection of ``collection``: its lock and change records, never counted among its points."""
    return collection + COMPANION_SUFFIX


def checked_lease(section: str, lease: object) -> float:
    """The ``lock_lease`` option in seconds, or ConfigError naming ``section``."""
    if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not 0 < lease <= 3600:
        raise ConfigError(
            f"{section} lock_lease must be the seconds a writer that died keeps the others out, more than 0 and at "
            f"most 3600, got {lease!r}"
        )
    return float(lease)


def describe_this_process(what: str = "a store write") -> str:
    """A holder description for a lock taken without one: what, pid, host, program, since when (local time)."""
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    return f"{what} by pid {os.getpid()} on {socket.gethostname()} ({program}) since {time.strftime('%H:%M:%S')}"


@dataclass(frozen=True)
class LockRecord:
    owner: str  # one acquisition's random id: two holders that describe themselves alike stay apart
    holder: str  # what the holder said about itself, for the waiters' busy error
    renewals: int


class CompanionRecords(Protocol):
    """What a database gives the lock and the feed: records in a collection's companion collection.

    Readers never create the companion collection: before it exists there is no lock and the head is 0.
    """

    def insert_lock(self, record: LockRecord) -> None:
        """Insert the lock record unless one exists; an existing one stays as it is."""
        ...

    def read_lock(self) -> LockRecord | None: ...

    def renew_lock(self, owner: str, renewals: int) -> None:
        """Set the renewal count of ``owner``'s lock record; a lock record that is gone stays gone."""
        ...

    def delete_lock(self, owner: str, renewals: int | None) -> None:
        """Delete the lock record if it is still ``owner``'s (and still at ``renewals``, when given)."""
        ...

    def read_head(self) -> int:
        """The sequence number of the last committed change; 0 before any."""
        ...

    def write_head(self, seq: int) -> None: ...

    def add_changes(self, seq: int, key: str, parts: list[list[str]]) -> None:
        """Store one change's ids at ``seq``, one record per part, under ids made unique by ``key``."""
        ...

    def read_changes(self, after: int, upto: int) -> Iterator[list[str]]:
        """The ids of every change record with ``after < seq <= upto``, a record at a time."""
        ...

    def delete_changes(self, upto: int) -> None:
        """Delete the change records with ``seq <= upto``."""
        ...


@dataclass
class Hold:
    """One hold of a collection's write lock in this process: by whom, in which thread, and the sequence number its
    changes are announced at (read at its first change, committed when it ends)."""

    holder: str
    thread: int
    seq: int | None = None


class ProcessLock:
    """The write lock among the threads of this process, one per collection, and its current hold."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hold: Hold | None = None


_process_locks: dict[str, ProcessLock] = {}
_process_locks_guard = threading.Lock()


def process_lock(collection_key: str) -> ProcessLock:
    """This process's lock of the collection named by ``collection_key`` (database kind, location, name): two store
    objects on one collection share it."""
    with _process_locks_guard:
        return _process_locks.setdefault(collection_key, ProcessLock())


class Lease:
    """One held lock record, renewed from a daemon thread until released."""

    def __init__(self, records: CompanionRecords, owner: str, lease: float) -> None:
        self._records = records
        self.owner = owner
        self._lease = lease
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name="vecguard-lock-lease", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        renewals = 0
        while not self._stop.wait(self._lease / 3):
            renewals += 1
            try:
                self._records.renew_lock(self.owner, renewals)
                current = self._records.read_lock()
            except StorageError:
                continue  # the server is away: the lease may lapse meanwhile, and release() will tell
            if current is None or current.owner != self.owner:
                return  # taken over: release() reports it

    def end(self, what: str, location: str | None) -> None:
        """Stop renewing; StorageError when the record was taken over meanwhile (then this hold commits nothing)."""
        self._stop.set()
        self._renewer.join()
        current = self._records.read_lock()
        if current is None or current.owner != self.owner:
            by = f"by {current.holder}" if current is not None else "and released"
            raise StorageError(
                f"the write lock of {what} at {location} was taken over {by} while this process held it, as this "
                f"process did not renew it for a lease ([store] lock_lease = {self._lease:g} s): a write may have "
                f"raced with another; run `vecguard check`, and raise lock_lease if this process stalls that long",
                location=location,
            )


class SharedCollection:
    """``SharesCollection`` for one store: the write lock and the change feed over ``records``.

    ``across_processes``: the database is a server that several processes use, so the lock is also a lease record;
    otherwise (an embedded database, which one process holds) the threading lock is all of it.
    """

    def __init__(
        self,
        records: CompanionRecords,
        *,
        collection_key: str,
        across_processes: bool,
        lease: float,
        what: str,
        location: str | None,
    ) -> None:
        self._records = records
        self._process = process_lock(collection_key)
        self.across_processes = across_processes
        self._lease = lease
        self._what = what
        self._location = location

    # ------------------------------------------------------------ the lock

    @contextmanager
    def lock_writes(self, timeout: float, holder: str) -> Iterator[None]:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
            raise InvalidArgumentError(f"lock_writes timeout must be seconds >= 0, got {timeout!r}")
        if not isinstance(holder, str) or not holder:
            raise InvalidArgumentError(f"lock_writes holder must describe this process in a str, got {holder!r}")
        deadline = time.monotonic() + timeout
        if not self._process.lock.acquire(timeout=timeout):
            current = self._process.hold
            raise self._busy(current.holder if current else "another thread of this process", timeout)
        try:
            hold = self._process.hold = Hold(holder, threading.get_ident())
            lease = self._acquire_lease(holder, deadline, timeout) if self.across_processes else None
            try:
                yield
            except BaseException:
                self._end(hold, lease, failing=True)
                raise
            self._end(hold, lease, failing=False)
        finally:
            self._process.hold = None
            self._process.lock.release()

    def _end(self, hold: Hold, lease: Lease | None, *, failing: bool) -> None:
        """Commit the hold's changes and free the lock record. After a block that raised, a commit that fails too is
        left to the next one: the block's own error is the one to see."""
        if lease is not None:
            lease.end(self._what, self._location)
        try:
            with suppress(StorageError) if failing else nullcontext():
                if hold.seq is not None:
                    self._records.write_head(hold.seq)
                    if hold.seq % TRIM_EVERY == 0 and hold.seq > KEPT_CHANGES:
                        self._records.delete_changes(upto=hold.seq - KEPT_CHANGES)
        finally:
            if lease is not None:
                with suppress(StorageError):  # a record left behind only keeps the others out for one lease
                    self._records.delete_lock(lease.owner, None)

    def _acquire_lease(self, holder: str, deadline: float, timeout: float) -> Lease:
        owner = uuid.uuid4().hex
        watched: tuple[str, int] | None = None  # the other holder's record as last seen, and since when
        watched_since = 0.0
        poll = min(0.25, self._lease / 8)
        while True:
            self._records.insert_lock(LockRecord(owner, holder, 0))
            current = self._records.read_lock()
            if current is None:
                continue  # released between the insert and the read: insert again
            if current.owner == owner:
                return Lease(self._records, owner, self._lease)
            now = time.monotonic()
            if watched != (current.owner, current.renewals):
                watched, watched_since = (current.owner, current.renewals), now
            elif now - watched_since >= self._lease:
                # Not renewed for a whole lease: its holder died or stalls. Deleted only if unchanged since.
                self._records.delete_lock(current.owner, current.renewals)
                continue
            if now >= deadline:
                raise self._busy(current.holder, timeout)
            time.sleep(min(poll, deadline - now))

    def _busy(self, holder: str, timeout: float) -> CollectionBusyError:
        return CollectionBusyError(
            f"{self._what} at {self._location or 'in memory'} is locked for writing by {holder}; waited {timeout:g} s: "
            f"retry once it has finished, or wait longer ([store] lock_timeout)",
            location=self._location,
            holder=holder,
        )

    def _held_by_this_thread(self) -> AbstractContextManager[None]:
        """Nothing when this thread holds the lock already; otherwise the lock, for one write."""
        hold = self._process.hold
        if hold is not None and hold.thread == threading.get_ident():
            return nullcontext()
        return self.lock_writes(IMPLICIT_LOCK_WAIT, describe_this_process())

    # ------------------------------------------------------------ the feed

    @contextmanager
    def changing(self, ids: list[str]) -> Iterator[None]:
        """The block that writes ``ids`` to the database, under the write lock, with the change announced first; the
        hold of the lock commits it when it ends."""
        with self._held_by_this_thread():
            hold = self._process.hold
            if hold.seq is None:
                hold.seq = self._records.read_head() + 1
            if ids:
                parts = [ids[start : start + CHANGE_IDS] for start in range(0, len(ids), CHANGE_IDS)]
                self._records.add_changes(hold.seq, uuid.uuid4().hex, parts)
            kill_point("store.change_intent")
            yield

    def change_token(self) -> int:
        return self._records.read_head()

    def changes_since(self, token: int) -> list[str] | None:
        if isinstance(token, bool) or not isinstance(token, int):
            raise InvalidArgumentError(f"changes_since needs a token from change_token(), got {token!r}")
        head = self._records.read_head()
        if not head - KEPT_CHANGES <= token <= head:
            return None  # trimmed, or a token of a collection deleted and created again since
        changed: set[str] = set()
        for after in range(token, head, READ_WINDOW):
            for ids in self._records.read_changes(after, min(after + READ_WINDOW, head)):
                changed.update(ids)
        if token < self._records.read_head() - KEPT_CHANGES:
            return None  # so many commits came meanwhile that a trim may have removed records being read
        return list(changed)
