"""Several processes on one collection (SharesCollection): a real Chroma server, real processes killed for real.

The conformance kit (vecguard.testing.SharesCollectionConformance, run in test_conformance.py) checks the lock and
the feed between two processes; this module adds what only real crashes show (a holder killed by SIGKILL, a holder
stopped past its lease, a writer killed between announcing its change and making it, on Chroma and Qdrant local),
three processes taking turns, and the Qdrant server's lock records run by local mode's engine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from vecguard import CollectionBusyError, ConfigError, Registry, StorageError
from vecguard.backends.sharing import SharedCollection

LEASE = 2.0  # seconds: short, so a dead holder frees the collection within the test
VECTORS = np.eye(8, dtype=np.float32)

# A child process: opens the store from argv[1] = [options, base, action, argument] and does one action.
CHILD = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    import numpy as np
    from vecguard import Registry
    plugin, options, base, action, argument = json.loads(sys.argv[1])
    store = Registry.discover().build("store", plugin, options, Path(base))
    holder = f"{action} child {os.getpid()}"
    if action == "take_turns":  # argument: the folder where a holder leaves its mark while inside
        for turn in range(5):
            with store.lock_writes(120, holder):
                mark = os.open(os.path.join(argument, "inside"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                with open(os.path.join(argument, "turns"), "a") as turns:
                    turns.write(f"{os.getpid()} {turn}\\n")
                time.sleep(0.05)
                os.close(mark)
                os.remove(os.path.join(argument, "inside"))
    elif action == "hold":  # until stdin gives a line; a lock taken over meanwhile raises at the block's end
        with store.lock_writes(60, holder):
            print("held", flush=True)
            sys.stdin.readline()
    elif action == "upsert":  # argument: ids
        store.upsert(argument, np.eye(len(argument), 8, dtype=np.float32), [{"text": key} for key in argument])
    store.close()
    print("done", flush=True)
""")


def child(plugin: str, options: dict[str, Any], base: Path, action: str, argument: Any = None, **env: str) -> Any:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps([plugin, options, str(base), action, argument])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def wait_for_line(process: Any, expected: str) -> None:
    line = process.stdout.readline()
    assert line.strip() == expected, f"child said {line!r}: {process.stderr.read()[-3000:]}"


def build(plugin: str, options: dict[str, Any], base: Path) -> Any:
    return Registry.discover().build("store", plugin, dict(options), base)


@pytest.fixture
def chroma(chroma_server: tuple[str, int]) -> dict[str, Any]:
    """Options for a fresh collection on the session's Chroma server, with a short lease."""
    host, port = chroma_server
    return {"host": host, "port": port, "collection": f"shared-{uuid.uuid4().hex[:12]}", "lock_lease": LEASE}


def test_three_processes_taking_turns_are_never_inside_together(chroma: dict[str, Any], tmp_path: Path) -> None:
    children = [child("chroma", chroma, tmp_path, "take_turns", str(tmp_path)) for _ in range(3)]
    for process in children:
        out, err = process.communicate(timeout=300)
        # A second holder inside would fail to create the mark (O_EXCL) and exit with FileExistsError.
        assert process.returncode == 0 and out.strip() == "done", err[-3000:]
    turns = (tmp_path / "turns").read_text().splitlines()
    assert len(turns) == 15 and len(set(turns)) == 15


def test_a_holder_killed_by_sigkill_frees_the_lock_after_one_lease(chroma: dict[str, Any], tmp_path: Path) -> None:
    holder = child("chroma", chroma, tmp_path, "hold")
    wait_for_line(holder, "held")
    store = build("chroma", chroma, tmp_path)
    with pytest.raises(CollectionBusyError, match=f"hold child {holder.pid}"):
        with store.lock_writes(0.5, "the parent"):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    started = time.monotonic()
    with store.lock_writes(30, "the parent"):
        waited = time.monotonic() - started
    # Not renewed since the kill: taken over once the parent has seen it unchanged for a lease, not before.
    assert LEASE * 0.9 <= waited <= LEASE + 2.0, f"the lock of a killed holder was free after {waited:.2f} s"
    store.close()


def test_a_holder_stopped_past_its_lease_is_told_at_release_that_it_lost_the_lock(
    chroma: dict[str, Any], tmp_path: Path
) -> None:
    holder = child("chroma", chroma, tmp_path, "hold")
    wait_for_line(holder, "held")
    store = build("chroma", chroma, tmp_path)
    os.kill(holder.pid, signal.SIGSTOP)  # a stall (swap, a debugger, a VM paused) longer than the lease
    try:
        with store.lock_writes(30, "the parent"):
            os.kill(holder.pid, signal.SIGCONT)
            holder.stdin.write("\n")
            holder.stdin.flush()
            out, err = holder.communicate(timeout=60)
    finally:
        if holder.poll() is None:
            os.kill(holder.pid, signal.SIGCONT)
    assert holder.returncode != 0
    assert "StorageError" in err and "was taken over by the parent" in err, err[-3000:]
    store.close()


@pytest.mark.parametrize("plugin", ["chroma", "qdrant"])
def test_a_writer_killed_between_announcing_and_writing_is_listed_by_the_next_commit(
    plugin: str, chroma: dict[str, Any], tmp_path: Path
) -> None:
    options = chroma if plugin == "chroma" else {"path": "qdrant", "local_mode": True}  # one process at a time
    store = build(plugin, options, tmp_path)
    store.upsert(["first"], VECTORS[:1], [{"text": "first"}])
    before = store.change_token()
    if plugin == "qdrant":
        store.close()  # the child needs the folder
    killed = child(
        plugin, options, tmp_path, "upsert", ["killed-1", "killed-2"], VECGUARD_KILL_AT="store.change_intent"
    )
    killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL
    if plugin == "qdrant":
        store = build(plugin, options, tmp_path)
    assert store.change_token() == before, "an announced change that was never made must not be committed"
    assert store.count() == 1 and store.get(["killed-1"]) == {}
    store.upsert(["next"], VECTORS[1:2], [{"text": "next"}])  # on the server: after the dead writer's lease
    assert store.change_token() > before
    assert set(store.changes_since(before)) == {"killed-1", "killed-2", "next"}
    store.close()


def test_a_chroma_server_collection_and_its_companion_are_apart(chroma: dict[str, Any], tmp_path: Path) -> None:
    import chromadb

    store = build("chroma", chroma, tmp_path)
    with store.lock_writes(10, "a writer"):
        store.upsert(["a", "b"], VECTORS[:2], [{"text": "a"}, {"text": "b"}])
    client = chromadb.HttpClient(host=chroma["host"], port=chroma["port"])
    names = {collection.name for collection in client.list_collections()}
    assert {chroma["collection"], chroma["collection"] + ".vecguard"} <= names
    assert client.get_collection(chroma["collection"]).count() == 2  # none of the lock or change records
    store.close()


def test_an_embedded_chroma_holder_that_dies_leaves_no_lock_behind(tmp_path: Path) -> None:
    """An embedded client is one process's: its lock is the threading lock, so nothing outlives a killed holder."""
    options = {"path": str(tmp_path / "chroma")}
    holder = child("chroma", options, tmp_path, "hold")
    wait_for_line(holder, "held")
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    store = build("chroma", options, tmp_path)
    started = time.monotonic()
    with store.lock_writes(30, "the next process"):
        assert time.monotonic() - started < 1.0
    store.close()


def test_the_server_lock_over_qdrant_records_excludes_steals_and_reports_a_takeover(tmp_path: Path) -> None:
    """The Qdrant server's lease records (insert_only, filtered set_payload and delete), run by local mode's engine:
    two SharedCollections over one client stand for two processes."""
    store = build("qdrant", {"path": ":memory:"}, tmp_path)
    records = store._sharing._records
    first, second = (
        SharedCollection(
            records, collection_key=f"test:{i}", across_processes=True, lease=0.5, what="q", location="test"
        )
        for i in range(2)
    )
    with first.lock_writes(5, "first holder"):
        with pytest.raises(CollectionBusyError, match="first holder"):
            with second.lock_writes(0.2, "second holder"):
                pass
        with pytest.raises(CollectionBusyError):  # three leases long: renewed all the while, so never taken over
            with second.lock_writes(1.5, "second holder"):
                pass
    with pytest.raises(StorageError, match="was taken over"):
        with first.lock_writes(5, "first holder"):
            records.renew_lock = lambda owner, renewals: None  # stalls: renews no more
            with second.lock_writes(5, "second holder"):  # waits one lease, then takes it
                del records.renew_lock
    with second.lock_writes(0.2, "second holder"):  # the first holder's failed release left the lock free
        pass
    store.close()


def test_changes_older_than_what_the_feed_keeps_are_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vecguard.backends.sharing as sharing

    monkeypatch.setattr(sharing, "KEPT_CHANGES", 3)
    monkeypatch.setattr(sharing, "TRIM_EVERY", 2)
    store = build("qdrant", {"path": ":memory:"}, tmp_path)
    for i in range(8):
        store.upsert([f"p{i}"], VECTORS[i : i + 1], [{}])
    assert store.change_token() == 8
    assert store.changes_since(4) is None  # older than the last 3 changes
    assert set(store.changes_since(5)) == {"p5", "p6", "p7"}
    companion = store._client.scroll(store._name + ".vecguard", limit=100, with_payload=True)[0]
    assert sorted(p.payload["seq"] for p in companion if "seq" in p.payload) == [6, 7, 8]  # trimmed at 8
    store.close()


@pytest.mark.parametrize(
    "plugin, options, message",
    [
        ("chroma", {"lock_lease": 0}, "lock_lease must be the seconds"),
        ("chroma", {"lock_lease": "15"}, "lock_lease must be the seconds"),
        ("chroma", {"collection": "docs.vecguard"}, "not ending in '.vecguard'"),
        ("chroma", {"collection": "-docs"}, "starting and ending with a letter or digit"),
        ("chroma", {"collection": "d" * 504}, "3 to 503 characters"),
        ("qdrant", {"path": ":memory:", "lock_lease": -1}, "lock_lease must be the seconds"),
        ("qdrant", {"path": ":memory:", "collection": "docs.vecguard"}, "not ending in '.vecguard'"),
    ],
)
def test_sharing_options_are_checked_with_a_message_naming_the_key(
    plugin: str, options: dict[str, Any], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=message):
        build(plugin, options, tmp_path)
