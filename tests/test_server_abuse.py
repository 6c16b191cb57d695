"""`vecguard serve` against hostile and heavy clients: writes beside searches, slow and oversized headers, huge or
deep filters, guessed types, writes without a token, and error bodies that must not show the server's insides."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import vecguard
from conftest import config, corpus
from test_server import AUTH, Server

LONG = " ".join(
    f"Section {i} of the maintenance manual explains how the pump seals are inspected and replaced." for i in range(60)
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("abused")
    cfg = config("faiss", folder / "index")
    with vecguard.open(cfg) as engine:
        engine.add(corpus())
    running = Server(cfg, folder, header_timeout=2, max_connections=200, max_request_bytes=16_000_000)
    running.wait_until(200)
    try:
        yield running
    finally:
        running.stop()


PROBE = """
import json, os, sys, time, httpx
url, stop = sys.argv[1], sys.argv[2]
probes = []
with httpx.Client(timeout=2) as client:
    while not os.path.exists(stop):
        started = time.monotonic()
        try:
            status = client.get(url + "/healthz").status_code
        except httpx.TimeoutException:
            status = 0
        probes.append((time.monotonic() - started, status))
        if len(probes) == 1:
            print("probing", flush=True)
        time.sleep(0.2)
print(json.dumps(probes))
"""


def _search(server: Server, query: str = "how do I get my money back", client: Any = httpx) -> int:
    return client.post(f"{server.url}/search", json={"query": query, "k": 3}, timeout=60).status_code


def test_searches_and_health_probes_go_on_while_a_long_write_encodes(server: Server, tmp_path: Path) -> None:
    """A write holds the collection only to store what it encoded: searches and /healthz answer meanwhile."""
    documents = [{"id": f"long-{i}", "text": f"{LONG} Manual {i}.", "metadata": {"kind": "manual"}} for i in range(20)]
    window: list[float] = []
    finished: list[tuple[float, float, int]] = []  # (started, ended, status) of the searches
    written: list[httpx.Response] = []
    queued_statuses: list[int] = []

    def write() -> None:
        window.append(time.monotonic())
        written.append(httpx.post(f"{server.url}/documents", json={"documents": documents}, headers=AUTH, timeout=300))
        window.append(time.monotonic())

    def search() -> None:
        while len(window) < 2:
            started = time.monotonic()
            status = _search(server)
            finished.append((started, time.monotonic(), status))

    pool = httpx.Client(limits=httpx.Limits(max_connections=100))  # one client: each new one loads the CA bundle

    def queue_searches() -> list[threading.Thread]:  # more than the thread pool holds, all at once
        threads = [
            threading.Thread(target=lambda: queued_statuses.append(_search(server, client=pool))) for _ in range(60)
        ]
        for thread in threads:
            thread.start()
        return threads

    # The probe runs in a process of its own, as a kubelet's would: in this one, 60 client threads answered at once
    # kept it from the GIL for seconds while the server had answered in milliseconds.
    stop = tmp_path / "stop-probing"
    prober = subprocess.Popen([sys.executable, "-c", PROBE, server.url, str(stop)], stdout=subprocess.PIPE, text=True)
    assert prober.stdout and prober.stdout.readline() == "probing\n"
    writer = threading.Thread(target=write)
    searcher = threading.Thread(target=search)
    writer.start()
    searcher.start()
    while not window:
        time.sleep(0.01)
    time.sleep(0.5)
    queued = queue_searches()
    for thread in (writer, searcher, *queued):
        thread.join()
    pool.close()
    stop.touch()
    probes = [(seconds, status) for seconds, status in json.loads(prober.communicate(timeout=60)[0])]
    # Asserted here, not in the threads: an assertion failing in a thread would only be a warning.
    assert len(written) == 1 and written[0].status_code == 200, written and written[0].text
    assert queued_statuses == [200] * 60, queued_statuses
    inside = [f for f in finished if window[0] < f[0] and f[1] < window[1]]
    assert len(inside) >= 3 and all(status == 200 for _, _, status in finished), (window, finished)
    assert probes and all(status == 200 for _, status in probes), probes
    httpx.request("DELETE", f"{server.url}/documents", json={"filter": {"kind": "manual"}}, headers=AUTH, timeout=60)


def test_connections_that_never_finish_their_headers_lock_nobody_out_and_are_closed(server: Server) -> None:
    slow = []
    for _ in range(300):  # more than max_connections (200): the slowest give way to new clients
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sock.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        slow.append(sock)
    try:
        assert _search(server) == 200
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
        time.sleep(3)  # past header_timeout (2 s): the server has hung up on every one of them
        for sock in slow:
            try:
                assert sock.recv(1024) == b""
            except ConnectionResetError:
                pass
    finally:
        for sock in slow:
            sock.close()


def test_headers_over_the_limit_are_refused(server: Server) -> None:
    response = httpx.post(f"{server.url}/search", json={"query": "x"}, headers={"X-Padding": "a" * 64_000})
    assert response.status_code == 431 and "max_header_bytes" in response.json()["detail"][0]["msg"]
    assert _search(server) == 200


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"query": "x", "filter": {"court": {"$nin": [f"c{i}" for i in range(500_000)]}}}, "more than 10000 values"),
        ({"query": "x", "filter": json.loads('{"$not": ' * 400 + '{"year": 1}' + "}" * 400)}, "deeper than 32 levels"),
        ({"query": "x", "k": "5"}, "valid integer"),
        ({"query": "x", "k": 5.0}, "valid integer"),
        ({"query": "x", "min_score": "0.5"}, "valid number"),
        ({"query": "x", "chunks": "true"}, "valid boolean"),
        ({"query": 7}, "valid string"),
    ],
)
def test_filters_are_bounded_and_types_are_not_guessed(server: Server, body: dict[str, Any], named: str) -> None:
    lines_before = len((server.folder / "serve.log").read_text().splitlines())
    started = time.monotonic()
    response = httpx.post(f"{server.url}/search", json=body, timeout=60)
    assert response.status_code == 422 and named in json.dumps(response.json()), response.text[:300]
    assert time.monotonic() - started < 10
    assert len((server.folder / "serve.log").read_text().splitlines()) - lines_before < 5


def _client(cfg: dict[str, Any]) -> Any:
    from fastapi.testclient import TestClient
    from vecguard.server import create_app

    return TestClient(create_app(cfg))


STARTING = ("starting", "opening", "warming")  # how /readyz reads while the service is still opening


def _opened(client: Any) -> Any:
    """/readyz once the service has finished opening, whichever way it went."""
    deadline = time.monotonic() + 120
    while (response := client.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
        if not str(response.json()["reason"]).startswith(STARTING):
            break
        time.sleep(0.1)
    return response


def _collection(tmp_path: Path, documents: int, **server: Any) -> dict[str, Any]:
    cfg = {**config("faiss", tmp_path / "index"), "server": server}
    with vecguard.open(cfg) as engine:
        engine.add(corpus()[:documents])
    return cfg


def test_writes_are_off_without_a_token_unless_the_config_opens_them(tmp_path: Path) -> None:
    cfg = _collection(tmp_path, 4)
    with _client(cfg) as client:
        assert _opened(client).status_code == 200
        erase = client.request("DELETE", "/documents", json={"filter": {}})
        add = client.post("/documents", json={"documents": [{"id": "x", "text": "y"}]})
        assert erase.status_code == add.status_code == 403 and "open_writes" in erase.json()["detail"][0]["msg"]
        assert client.get("/readyz").json()["documents"] == 4
    with _client({**cfg, "server": {"open_writes": True}}) as client:
        assert _opened(client).status_code == 200
        assert client.post("/documents", json={"documents": [{"id": "x", "text": "y"}]}).status_code == 200


def test_a_token_outside_ascii_works_as_clients_send_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECGUARD_TEST_TOKEN", "clé-ñandú-令牌")
    cfg = _collection(tmp_path, 2, write_token_env="VECGUARD_TEST_TOKEN")
    with _client(cfg) as client:
        assert _opened(client).status_code == 200
        body = {"documents": [{"id": "x", "text": "y"}]}
        assert (
            client.post(
                "/documents", json=body, headers={"Authorization": "Bearer clé-ñandú-令牌".encode()}
            ).status_code
            == 200
        )
        assert client.post("/documents", json=body, headers={"Authorization": b"Bearer cl\xe9"}).status_code == 401


def test_error_bodies_do_not_show_paths_or_internal_text(tmp_path: Path) -> None:
    import sqlite3

    cfg = _collection(tmp_path, 4)
    with _client(cfg) as client:
        assert _opened(client).status_code == 200
        db = sqlite3.connect(tmp_path / "index" / "points.sqlite3")  # damaged under the running server
        db.execute("UPDATE points SET payload = '{\"broken' WHERE id = 'doc-01#0'")
        db.commit()
        db.close()
        got = client.get("/documents/doc-01")
        assert got.status_code == 503 and "incident" in got.json()["detail"][0]["msg"]
        assert str(tmp_path) not in got.text and "points.sqlite3" not in got.text, got.text
    (tmp_path / "index" / "manifest.json").write_text("[]")
    with _client(cfg) as client:
        reason = _opened(client).json()["reason"]
        assert "could not be opened (CorruptCollectionError)" in reason and str(tmp_path) not in reason, reason
