"""vecguard.testing's conformance suite against every backend we ship (and a Qdrant server when QDRANT_URL is set)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vecguard.testing import VectorStoreConformance


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


class TestFaissHNSW(VectorStoreConformance):
    plugin = "faiss"
    exact = False

    @pytest.fixture
    def store_options(self, tmp_path: Path) -> dict[str, Any]:
        return {"path": str(tmp_path / "faiss"), "index": "HNSW32", "ef_search": 256}


class TestChromaEmbedded(VectorStoreConformance):
    plugin = "chroma"

    @pytest.fixture
    def store_options(self, tmp_path: Path) -> dict[str, Any]:
        return {"path": str(tmp_path / "chroma")}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A real Chroma server from the chromadb wheel, on a free loopback port, stopped by its own pid."""
    executable = shutil.which("chroma", path=str(Path(sys.executable).parent)) or shutil.which("chroma")
    if executable is None:
        pytest.fail("the chroma command (from the chromadb wheel) is not installed: pip install 'vecguard[chroma]'")
    port = _free_port()
    data = tmp_path_factory.mktemp("chroma-server")
    log = open(data / "server.log", "w")
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
    process = subprocess.Popen(
        [executable, "run", "--path", str(data / "db"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"Chroma server did not start: {(data / 'server.log').read_text()[-2000:]}")
        time.sleep(0.2)
    try:
        yield "127.0.0.1", port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


class TestChromaServer(VectorStoreConformance):
    plugin = "chroma"

    @pytest.fixture
    def store_options(self, chroma_server: tuple[str, int]) -> dict[str, Any]:
        host, port = chroma_server
        return {"host": host, "port": port, "collection": f"conformance-{uuid.uuid4().hex[:12]}"}


class TestQdrantLocal(VectorStoreConformance):
    plugin = "qdrant"

    @pytest.fixture
    def store_options(self, tmp_path: Path) -> dict[str, Any]:
        return {"path": str(tmp_path / "qdrant")}


class TestQdrantMemory(VectorStoreConformance):
    plugin = "qdrant"
    persistent = False

    @pytest.fixture
    def store_options(self) -> dict[str, Any]:
        return {"path": ":memory:"}


@pytest.mark.skipif(not os.environ.get("QDRANT_URL"), reason="set QDRANT_URL to run the suite against a Qdrant server")
class TestQdrantServer(VectorStoreConformance):
    plugin = "qdrant"

    @pytest.fixture
    def store_options(self) -> Iterator[dict[str, Any]]:
        options = {"url": os.environ["QDRANT_URL"], "api_key": os.environ.get("QDRANT_API_KEY"),
                   "collection": f"conformance-{uuid.uuid4().hex[:12]}", "exact": True}
        yield options
        from qdrant_client import QdrantClient

        QdrantClient(url=options["url"], api_key=options["api_key"]).delete_collection(options["collection"])
