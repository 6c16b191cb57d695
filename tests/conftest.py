"""Shared scenario: a small corpus with metadata and identifiers, real parts only."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent

TOPICS = [
    ("Password reset", "How to reset a forgotten password using the account recovery email link."),
    ("Refund policy", "Customers may return unused items within thirty days for a full refund to the original card."),
    ("Shipping delays", "Storms closed the northern warehouse, so parcels to the coast arrive a week late."),
    (
        "Buffer overflow",
        "Writing past the end of a fixed-size buffer corrupts adjacent memory and can run attacker code.",
    ),
    ("SQL injection", "Building database queries by concatenating user input lets attackers read or change tables."),
    ("Cross-site scripting", "Reflecting untrusted input into a web page lets scripts run in other users' browsers."),
    ("Photosynthesis", "Plants turn sunlight, water and carbon dioxide into sugar and release oxygen."),
    ("Volcanoes", "Magma rising through the crust erupts as lava, ash and volcanic gases."),
    ("Jazz history", "Jazz grew in New Orleans from blues and ragtime, with improvisation at its heart."),
    ("Bread baking", "Knead the dough, let the yeast rise it overnight, then bake in a very hot oven."),
    ("Marathon training", "Build weekly mileage slowly and rest well before a long distance race."),
    ("Tax filing", "File the annual income tax return before the deadline to avoid a late penalty."),
    ("Court appeal", "A party who loses at trial may appeal to a higher court on points of law."),
    ("Coffee brewing", "Grind the beans fresh and pour water just off the boil over the grounds."),
    ("Solar panels", "Photovoltaic cells on the roof convert daylight into electricity for the house."),
    ("Vaccines", "A vaccine trains the immune system to recognise a virus before an infection."),
    ("Chess openings", "The Sicilian Defence answers the king's pawn with a pawn to c5."),
    ("Sleep hygiene", "A dark, cool bedroom and a regular bedtime help adults sleep through the night."),
    ("Rust ownership", "Each value in Rust has one owner, and memory is freed when the owner goes out of scope."),
    ("Tides", "The pull of the moon raises the oceans twice a day along the shore."),
]
IDENTIFIERS = ["ORD-2024-00017", "CVE-2022-24045", "2013/34/EU", "J45.909", "42 U.S.C. § 1983"]


def corpus() -> list[dict[str, Any]]:
    """20 documents; five carry an identifier; metadata has ints, strings and bools."""
    documents = []
    for i, (title, text) in enumerate(TOPICS):
        body = f"{title}. {text}"
        if i < len(IDENTIFIERS):
            body += f" Reference {IDENTIFIERS[i]} applies to this case."
        metadata: dict[str, Any] = {"year": 2015 + i % 10, "topic": title.lower(), "public": i % 2 == 0}
        if i % 3 == 0:
            metadata["court"] = ["UK", "EU", "US"][i % 9 // 3]
        documents.append({"id": f"doc-{i:02d}", "text": body, "metadata": metadata})
    return documents


def config(store: str, path: Path | None = None, **tables: dict[str, Any]) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "encoder": {"plugin": "sentence-transformers", "model": "bundled"},
        "store": {"plugin": store},
        "chunking": {"tokens": 64, "overlap": 8, "batch_documents": 8},
    }
    if path is not None:
        cfg["store"]["path"] = str(path)
    for name, table in tables.items():
        cfg.setdefault(name, {}).update(table)
    return cfg


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every test and every fixture, however long it lives, keeps the encoder's caches in this session's tmp folder
    and never reaches a model hub."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VECGUARD_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "vecguard-cache"))
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield


def run_python(code: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Any:
    """Run code in a fresh interpreter (a real restart), return the finished process."""
    import subprocess

    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=300
    )


def copy_model(pristine: Path, folder: Path) -> Path:
    """A copy of a model folder whose weights are a hard link (copied where links fail)."""

    def link_weights(src: str, dst: str) -> None:
        if Path(src).name == "model.safetensors":
            try:
                os.link(src, dst)
                return
            except OSError:
                pass
        shutil.copy2(src, dst)

    shutil.copytree(pristine, folder, copy_function=link_weights)
    return folder


def perturbed_model(pristine: Path, folder: Path) -> Path:
    """Another model of the same dimension and files: every float weight of ``pristine`` perturbed, seed fixed."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    copy_model(pristine, folder)
    weights = load_file(str(pristine / "model.safetensors"))
    rng = np.random.default_rng(20240305)
    for key in sorted(weights):
        if weights[key].dtype.kind == "f":
            weights[key] = weights[key] + rng.normal(0.0, 0.02, weights[key].shape).astype(weights[key].dtype)
    (folder / "model.safetensors").unlink()  # a hard link: never write through it
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="session")
def swapped_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model swap nobody notices: the bundled model's folder with perturbed weights, same dimension (384)."""
    from vecguard.plugins.sentence_transformers import bundled_model_path

    return perturbed_model(Path(bundled_model_path()), tmp_path_factory.mktemp("swapped-model") / "model")


def toml(cfg: dict[str, Any]) -> str:
    """A config dict (tables of strings, numbers, bools) as TOML text, for tests that drive the CLI."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        return repr(v)

    return "".join(
        f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in table.items()) for name, table in cfg.items()
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ChromaServer:
    """A real Chroma server from the chromadb wheel on a loopback port; can be killed and started again on its data."""

    def __init__(self, data: Path) -> None:
        self.executable = shutil.which("chroma", path=str(Path(sys.executable).parent)) or shutil.which("chroma")
        if self.executable is None:
            pytest.fail("the chroma command (from the chromadb wheel) is not installed: pip install 'vecguard[chroma]'")
        self.data = data
        self.host, self.port = "127.0.0.1", free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> ChromaServer:
        log = open(self.data / "server.log", "a")
        env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
        self.process = subprocess.Popen(
            [self.executable, "run", "--path", str(self.data / "db"), "--host", self.host, "--port", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.host}:{self.port}/api/v2/heartbeat", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"Chroma server did not start: {(self.data / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL, like a crashed server."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """One Chroma server for the session, stopped by its own pid."""
    server = ChromaServer(tmp_path_factory.mktemp("chroma-server")).start()
    try:
        yield server.host, server.port
    finally:
        server.stop()


TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMITS = {
    "max_request_bytes": 200_000,
    "max_k": 50,
    "max_query_chars": 500,
    "max_documents": 20,
    "write_token_env": "VECGUARD_TEST_WRITE_TOKEN",
}


class Server:
    def __init__(self, cfg: dict[str, Any], folder: Path, **server: Any) -> None:
        self.port = free_port()
        cfg = {**cfg, "server": {**LIMITS, "port": self.port, **server}}
        (folder / "serve.toml").write_text(toml(cfg))
        self.log = open(folder / "serve.log", "w")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", LIMITS["write_token_env"]: TOKEN}
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "vecguard"), "serve", "--config", str(folder / "serve.toml")],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.folder = folder

    def wait_until(self, wanted: int, timeout: float = 120) -> list[int]:
        """Poll /readyz until it answers ``wanted``; the statuses seen, in order (0: connection refused)."""
        statuses: list[int] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                status = httpx.get(f"{self.url}/readyz", timeout=5).status_code
            except httpx.TransportError:
                status = 0
            if not statuses or statuses[-1] != status:
                statuses.append(status)
            if status == wanted:
                return statuses
            time.sleep(0.05)
        pytest.fail(f"/readyz never answered {wanted}: {statuses}\n{(self.folder / 'serve.log').read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()
