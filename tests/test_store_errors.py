"""Library failures behind a store surface as vecguard's StorageError naming where, never as a library exception.

Real failures only: a Chroma server killed by its process group, a collection deleted by another client, a Qdrant
folder another client holds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ChromaServer
from vecguard import CollectionNotFoundError, ConfigError, InvalidArgumentError, Registry, StorageError
from vecguard.backends.memory import MemoryStore

VECTORS = np.eye(4, dtype=np.float32)


def _build(plugin: str, options: dict, tmp_path: Path):
    return Registry.discover().build("store", plugin, options, tmp_path)


def test_a_chroma_server_killed_mid_use_is_a_storage_error_naming_its_url(tmp_path: Path) -> None:
    server = ChromaServer(tmp_path).start()
    try:
        store = _build("chroma", {"host": server.host, "port": server.port}, tmp_path)
        store.upsert(["a", "b"], VECTORS[:2], [{"metadata": {"n": 1}}, {"metadata": {"n": 2}}])
        assert store.search(VECTORS[0], 1)[0][0] == "a"
    finally:
        server.kill()
    url = f"http://{server.host}:{server.port}"
    for call in (
        lambda: store.search(VECTORS[0], 1),
        lambda: store.search_with_payloads(VECTORS[0], 1, {"n": 1}),
        lambda: store.get(["a"]),
        lambda: store.count(),
        lambda: list(store.scan()),
        lambda: store.upsert(["c"], VECTORS[2:3], [{}]),
        lambda: store.delete(["a"]),
    ):
        with pytest.raises(StorageError, match=f"Chroma at {url} failed") as raised:
            call()
        assert raised.value.location == url
    store.close()


def test_a_chroma_collection_deleted_under_a_read_is_collection_not_found(tmp_path: Path) -> None:
    import chromadb

    store = _build("chroma", {"path": str(tmp_path / "chroma")}, tmp_path)
    store.upsert(["a"], VECTORS[:1], [{}])
    chromadb.PersistentClient(path=str(tmp_path / "chroma")).delete_collection("vecguard")
    with pytest.raises(CollectionNotFoundError, match="no longer holds the collection") as raised:
        store.count()
    assert raised.value.location == str(tmp_path / "chroma")
    store.close()


def test_a_qdrant_local_mode_folder_held_by_another_client_is_a_storage_error_naming_it(tmp_path: Path) -> None:
    first = _build("qdrant", {"path": "qdrant", "local_mode": True}, tmp_path)
    try:
        with pytest.raises(StorageError, match="already accessed by another instance") as raised:
            _build("qdrant", {"path": "qdrant", "local_mode": True}, tmp_path)
        assert raised.value.location == str(tmp_path / "qdrant")
    finally:
        first.close()


def test_an_embedded_qdrant_collection_open_in_another_process_is_refused_naming_it(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_EMBEDDED_QDRANT, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(StorageError) as raised:
            _build("qdrant", {"path": "qdrant"}, tmp_path)
        message = str(raised.value)
        assert f"pid {holder.pid} " in message and "is open in" in message and "[store] url" in message, message
        assert "\n" not in message
        assert raised.value.location == str(tmp_path / "qdrant" / "vecguard" / "open.lock")
    finally:
        holder.kill()
        holder.wait()
    reopened = _build("qdrant", {"path": "qdrant"}, tmp_path)  # the kernel released the dead holder's claim
    assert reopened.count() == 1
    reopened.close()


HOLD_EMBEDDED_QDRANT = """
import sys, time
from pathlib import Path
import numpy as np
from vecguard.backends.qdrant import _build
store = _build({"path": "qdrant"}, Path(sys.argv[1]))
store.upsert(["a"], np.eye(1, 4, dtype=np.float32), [{}])
print("open", flush=True)
time.sleep(600)
"""


def test_a_qdrant_client_local_mode_folder_is_not_mistaken_for_the_embedded_engine(tmp_path: Path) -> None:
    local = _build("qdrant", {"path": "qdrant", "local_mode": True}, tmp_path)
    local.upsert(["a"], VECTORS[:1], [{}])
    local.close()
    with pytest.raises(ConfigError, match="holds qdrant-client local mode's files.*local_mode = true"):
        _build("qdrant", {"path": "qdrant"}, tmp_path)


def test_caller_mistakes_are_invalid_argument_errors_not_storage_errors() -> None:
    with MemoryStore() as store:
        store.upsert(["a"], VECTORS[:1], [{}])
        for mistake in (
            lambda: store.search(VECTORS[0], True),
            lambda: store.upsert(["b"], np.full((1, 4), np.inf, dtype=np.float32), [{}]),
        ):
            with pytest.raises(InvalidArgumentError) as raised:
                mistake()
            assert not isinstance(raised.value, StorageError)
