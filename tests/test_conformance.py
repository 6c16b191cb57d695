"""vecguard.testing's conformance suite against every backend we ship (and a Qdrant server when QDRANT_URL is set)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from vecguard.testing import SharesCollectionConformance, VectorStoreConformance


class TestMemory(VectorStoreConformance):
    plugin = "memory"

    @pytest.fixture
    def store_options(self, tmp_path: Path) -> dict[str, Any]:
        return {"path": str(tmp_path / "memory")}


class TestFaissFlat(VectorStoreConformance):
    plugin = "faiss"

    @pytest.fixture
    def store_options(self, tmp_path: Path) -> dict[str, Any]:
        return {"path": str(tmp_path / "faiss"), "index": "Flat"}


class TestFaissPayloadsOnDisk(VectorStoreConformance):
    """Hits read from SQLite instead of the in-memory records."""

    plugin = "faiss"

    @pytest.fixture
    def store_options(self, tmp_path: Path) -> dict[str, Any]:
        return {"path": str(tmp_path / "faiss"), "index": "Flat", "on_disk_payload": True}


class TestFaissIVF(VectorStoreConformance):
    """One cell, so results are exact: deletes and replacements must keep FAISS ids and ours in step."""

    plugin = "faiss"

    @pytest.fixture
    def store_options(self, tmp_path: Path) -> dict[str, Any]:
        return {"path": str(tmp_path / "faiss"), "index": "IVF1,Flat", "nprobe": 1}


class TestFaissHNSW(VectorStoreConformance):
    plugin = "faiss"
    exact = False

    @pytest.fixture
    def store_options(self, tmp_path: Path) -> dict[str, Any]:
        return {"path": str(tmp_path / "faiss"), "index": "HNSW32", "ef_search": 256}


class TestChromaEmbedded(VectorStoreConformance, SharesCollectionConformance):
    plugin = "chroma"

    @pytest.fixture
    def store_options(self, tmp_path: Path) -> dict[str, Any]:
        return {"path": str(tmp_path / "chroma")}


class TestChromaServer(VectorStoreConformance, SharesCollectionConformance):
    plugin = "chroma"
    across_processes = True

    @pytest.fixture
    def store_options(self, chroma_server: tuple[str, int]) -> dict[str, Any]:
        host, port = chroma_server
        return {"host": host, "port": port, "collection": f"conformance-{uuid.uuid4().hex[:12]}"}


class TestQdrantEmbedded(VectorStoreConformance):
    plugin = "qdrant"

    @pytest.fixture
    def store_options(self, tmp_path: Path) -> dict[str, Any]:
        return {"path": str(tmp_path / "qdrant")}


class TestQdrantLocalMode(VectorStoreConformance, SharesCollectionConformance):
    plugin = "qdrant"

    @pytest.fixture
    def store_options(self, tmp_path: Path) -> dict[str, Any]:
        return {"path": str(tmp_path / "qdrant"), "local_mode": True}


class TestQdrantMemory(VectorStoreConformance, SharesCollectionConformance):
    plugin = "qdrant"
    persistent = False

    @pytest.fixture
    def store_options(self) -> dict[str, Any]:
        return {"path": ":memory:"}


@pytest.mark.skipif(not os.environ.get("QDRANT_URL"), reason="set QDRANT_URL to run the suite against a Qdrant server")
class TestQdrantServer(VectorStoreConformance, SharesCollectionConformance):
    plugin = "qdrant"
    across_processes = True

    @pytest.fixture
    def store_options(self) -> Iterator[dict[str, Any]]:
        options = {
            "url": os.environ["QDRANT_URL"],
            "api_key": os.environ.get("QDRANT_API_KEY"),
            "collection": f"conformance-{uuid.uuid4().hex[:12]}",
            "exact": True,
        }
        yield options
        from qdrant_client import QdrantClient

        client = QdrantClient(url=options["url"], api_key=options["api_key"])
        client.delete_collection(options["collection"])
        client.delete_collection(options["collection"] + ".vecguard")  # its lock and change records
