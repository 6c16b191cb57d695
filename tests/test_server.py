"""`vecguard serve`: a real uvicorn server on a loopback port, driven over HTTP with httpx."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import vecguard
import yaml
from conftest import AUTH, ROOT, TOKEN, Server, config, corpus

QUERIES = [
    ("ORD-2024-00017", {}),
    ("how do I get my money back", {}),
    ("memory corruption by attackers", {"k": 3}),
    ("plants and sunlight", {"mode": "dense"}),
    ("court appeal", {"mode": "keyword"}),
    ("security bug", {"filter": {"year": {"$gte": 2017}}}),
    ("sleep", {"min_score": 0.2, "k": 5}),
]


def hits(response: httpx.Response) -> list[tuple[str, float, dict]]:
    assert response.status_code == 200, response.text
    return [(h["id"], h["score"], h["signals"]) for h in response.json()["hits"]]


def library_hits(found: list[vecguard.Hit]) -> list[tuple[str, float, dict]]:
    return [(h.id, h.score, {n: {"rank": e.rank, "score": e.score} for n, e in h.signals.items()}) for h in found]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict]]:
    folder = tmp_path_factory.mktemp("served")
    cfg = config("faiss", folder / "index")
    with vecguard.open(cfg) as engine:
        engine.add(corpus())
        expected = {(q, repr(sorted(kw.items()))): library_hits(engine.search(q, **kw)) for q, kw in QUERIES}
    server = Server(cfg, folder)
    statuses = server.wait_until(200)
    try:
        yield server, {"statuses": statuses, "expected": expected}
    finally:
        server.stop()


def test_the_port_answers_503_until_the_collection_is_open_guarded_and_warm_then_200(served) -> None:
    server, facts = served
    statuses = [s for s in facts["statuses"] if s]
    assert statuses[0] == 503 and statuses[-1] == 200, facts["statuses"]
    ready = httpx.get(f"{server.url}/readyz").json()
    assert ready["ready"] and ready["documents"] == 20 and ready["manifest_id"]
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "alive"}
    assert "/search" in httpx.get(f"{server.url}/openapi.json").json()["paths"]


def test_search_over_http_equals_the_library_call(served) -> None:
    server, facts = served
    for query, kwargs in QUERIES:
        found = hits(httpx.post(f"{server.url}/search", json={"query": query, **kwargs}))
        expected = facts["expected"][(query, repr(sorted(kwargs.items())))]
        assert [h[0] for h in found] == [h[0] for h in expected], query
        assert [h[1] for h in found] == pytest.approx([h[1] for h in expected], abs=1e-6)
        assert [h[2].keys() for h in found] == [h[2].keys() for h in expected]


def test_search_reports_the_engine_time_in_server_timing(served) -> None:
    server, _ = served
    started = time.perf_counter()
    response = httpx.post(f"{server.url}/search", json={"query": "cookie without the HttpOnly flag"})
    round_trip_ms = (time.perf_counter() - started) * 1000
    name, _, duration = response.headers["server-timing"].partition(";dur=")
    assert name == "search"
    assert 0 < float(duration) < round_trip_ms


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        base, _, label_text = key.partition("{")
        if base == name and ",".join(sorted(label_text.rstrip("}").split(","))) == wanted:
            return float(value)
    return 0.0


def test_metrics_are_exposed_and_move_with_traffic(served) -> None:
    server, _ = served
    before = httpx.get(f"{server.url}/metrics").text
    for _ in range(3):
        hits(httpx.post(f"{server.url}/search", json={"query": "volcano eruption"}))
    hits(httpx.post(f"{server.url}/search", json={"query": "volcano eruption", "min_score": 0.99}))
    after = httpx.get(f"{server.url}/metrics").text
    assert (
        metric(after, "vecguard_queries_total", mode="hybrid") - metric(before, "vecguard_queries_total", mode="hybrid")
        == 4
    )
    assert (
        metric(after, "vecguard_empty_results_total", mode="hybrid")
        - metric(before, "vecguard_empty_results_total", mode="hybrid")
        == 1
    )
    for stage in ("encode", "dense", "keyword", "fuse", "total"):
        moved = metric(after, "vecguard_query_duration_seconds_count", stage=stage, mode="hybrid") - metric(
            before, "vecguard_query_duration_seconds_count", stage=stage, mode="hybrid"
        )
        assert moved == 4, stage
    assert (
        metric(after, "vecguard_top1_cosine_count", mode="hybrid")
        - metric(before, "vecguard_top1_cosine_count", mode="hybrid")
        == 4
    )
    assert metric(after, "vecguard_documents") == 20 and metric(after, "vecguard_ready") == 1
    assert metric(after, "vecguard_index_bytes") > 10_000


def test_add_get_search_and_delete_round_trip_with_the_write_token(served) -> None:
    server, _ = served
    document = {
        "id": "new-1",
        "text": "Invoice INV-77-3141 was paid twice by mistake.",
        "metadata": {"year": 2030, "kind": "x"},
    }
    added = httpx.post(f"{server.url}/documents", json={"documents": [document]}, headers=AUTH)
    assert added.status_code == 200 and added.json()["documents"] == 21, added.text
    assert httpx.get(f"{server.url}/documents/new-1").json() == document
    assert hits(httpx.post(f"{server.url}/search", json={"query": "INV-77-3141", "k": 1}))[0][0] == "new-1"
    deleted = httpx.request("DELETE", f"{server.url}/documents", json={"filter": {"kind": "x"}}, headers=AUTH)
    assert deleted.json() == {"deleted": 1, "documents": 20}
    assert httpx.get(f"{server.url}/documents/new-1").status_code == 404
    httpx.post(f"{server.url}/documents", json={"documents": [document]}, headers=AUTH)
    assert (
        httpx.request("DELETE", f"{server.url}/documents", json={"ids": ["new-1", "nope"]}, headers=AUTH).json()[
            "deleted"
        ]
        == 1
    )


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}])
def test_writes_need_the_bearer_token_and_reads_do_not(served, headers: dict) -> None:
    server, _ = served
    for method, body in (("POST", {"documents": [{"id": "x", "text": "y"}]}), ("DELETE", {"ids": ["doc-00"]})):
        response = httpx.request(method, f"{server.url}/documents", json=body, headers=headers)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert response.json()["detail"][0]["loc"] == ["header", "authorization"]
    assert httpx.get(f"{server.url}/documents/doc-00").status_code == 200
    assert httpx.get(f"{server.url}/readyz").json()["documents"] == 20


LONG_QUERY = "word " * 101
BAD = [
    ("POST", "/search", b'{"query": "x",', None, 422, ["body"]),
    ("POST", "/search", {"k": 3}, None, 422, ["body", "query"]),
    ("POST", "/search", {"query": ""}, None, 422, ["body", "query"]),
    ("POST", "/search", {"query": "   "}, None, 422, []),
    ("POST", "/search", {"query": LONG_QUERY}, None, 422, ["body", "query"]),
    ("POST", "/search", {"query": "x", "k": 0}, None, 422, ["body", "k"]),
    ("POST", "/search", {"query": "x", "k": 51}, None, 422, ["body", "k"]),
    ("POST", "/search", {"query": "x", "k": "ten"}, None, 422, ["body", "k"]),
    ("POST", "/search", {"query": "x", "mode": "fuzzy"}, None, 422, ["body", "mode"]),
    ("POST", "/search", {"query": "x", "filter": {"year": {"$regex": "20.*"}}}, None, 422, ["body", "filter", "year"]),
    ("POST", "/search", {"query": "x", "filter": {"$or": []}}, None, 422, ["body", "filter", "$or"]),
    ("POST", "/search", {"query": "x", "min_score": 3}, None, 422, ["body", "min_score"]),
    ("POST", "/search", {"query": "x", "mode": "keyword", "min_score": 0.3}, None, 422, ["body", "min_score"]),
    ("POST", "/search", {"query": "x", "limit": 3}, None, 422, ["body", "limit"]),
    ("POST", "/search", ["x"], None, 422, ["body"]),
    ("POST", "/search", {"query": "x" * 250_000}, None, 413, ["body"]),
    ("POST", "/documents", {"documents": []}, AUTH, 422, ["body", "documents"]),
    ("POST", "/documents", {"documents": [{"id": "a", "text": ""}]}, AUTH, 422, ["body", "documents", 0, "text"]),
    (
        "POST",
        "/documents",
        {"documents": [{"id": "a", "text": "t", "metadata": {"tags": ["x"]}}]},
        AUTH,
        422,
        ["body", "documents", 0, "metadata", "tags"],
    ),
    (
        "POST",
        "/documents",
        {"documents": [{"id": "a", "text": "t", "metadata": {"$x": 1}}]},
        AUTH,
        422,
        ["body", "documents", 0],
    ),
    (
        "POST",
        "/documents",
        {"documents": [{"id": "a", "text": "t"}, {"id": "a", "text": "u"}]},
        AUTH,
        422,
        ["body", "documents"],
    ),
    (
        "POST",
        "/documents",
        {"documents": [{"id": f"d{i}", "text": "t"} for i in range(21)]},
        AUTH,
        422,
        ["body", "documents"],
    ),
    ("POST", "/documents", {"documents": [{"id": 5, "text": "t"}]}, AUTH, 422, ["body", "documents", 0, "id"]),
    ("DELETE", "/documents", {"ids": ["a"], "filter": {"year": 1}}, AUTH, 422, ["body"]),
    ("DELETE", "/documents", {}, AUTH, 422, ["body"]),
    ("DELETE", "/documents", {"filter": {"year": {"$near": 1}}}, AUTH, 422, ["body", "filter", "year"]),
    ("GET", "/documents/not-there", None, None, 404, ["path", "doc_id"]),
]


@pytest.mark.parametrize("method, path, body, headers, status, loc", BAD)
def test_every_bad_input_is_a_4xx_naming_the_field_and_changes_nothing(
    served, method, path, body, headers, status, loc
) -> None:
    server, _ = served
    kwargs: dict[str, Any] = {"headers": {**(headers or {}), "content-type": "application/json"}}
    if isinstance(body, bytes):
        kwargs["content"] = body
    elif body is not None:
        kwargs["json"] = body
    response = httpx.request(method, f"{server.url}{path}", **kwargs)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail[0]["msg"]
    assert any(list(d["loc"])[: len(loc)] == loc for d in detail), detail
    assert httpx.get(f"{server.url}/readyz").json()["documents"] == 20


@pytest.mark.parametrize(
    ("method", "body", "loc"),
    [
        (
            "POST",
            {"query": "x", "filter": {"$and": [{"year": 2020}, {"year": {"$gt": True}}]}},
            ["$and", 1, "year", "$gt"],
        ),
        ("POST", {"query": "x", "filter": {"court": {"$in": ["UK", None]}}}, ["court", "$in", 1]),
        ("DELETE", {"filter": {"$not": {"$or": [{"year": 1}, {"kind": {}}]}}}, ["$not", "$or", 1, "kind"]),
    ],
)
def test_a_filter_error_points_at_the_part_of_the_filter_that_is_wrong(served, method, body, loc) -> None:
    server, _ = served
    path = "/search" if method == "POST" else "/documents"
    response = httpx.request(method, f"{server.url}{path}", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "filter", *loc]


def test_a_document_error_points_at_the_document(served) -> None:
    server, _ = served
    documents = [{"id": "fine", "text": "t"}, {"id": "bad", "text": "t", "metadata": {"$x": 1}}]
    response = httpx.post(f"{server.url}/documents", json={"documents": documents}, headers=AUTH)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "documents", 1]
    assert "documents[1]" in response.json()["detail"][0]["msg"]
    assert httpx.get(f"{server.url}/documents/fine").status_code == 404


def test_a_chunked_body_over_the_limit_is_refused_without_content_length(served) -> None:
    server, _ = served

    def body() -> Iterator[bytes]:
        yield b'{"query": "'
        for _ in range(30):
            yield b"x" * 10_000
        yield b'"}'

    response = httpx.post(f"{server.url}/search", content=body(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and "max_request_bytes" in response.json()["detail"][0]["msg"]


def test_eight_concurrent_clients_get_the_library_answers_and_no_errors(served) -> None:
    server, facts = served
    errors: list[str] = []
    served_count = [0] * 8
    stop = time.monotonic() + 6

    def client(number: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as session:
            i = number
            while time.monotonic() < stop:
                query, kwargs = QUERIES[i % len(QUERIES)]
                response = session.post("/search", json={"query": query, **kwargs})
                expected = facts["expected"][(query, repr(sorted(kwargs.items())))]
                if response.status_code != 200:
                    errors.append(f"{response.status_code} {response.text[:200]}")
                elif [h["id"] for h in response.json()["hits"]] != [h[0] for h in expected]:
                    errors.append(f"different answer for {query!r}")
                served_count[number] += 1
                i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:5]
    assert all(count > 0 for count in served_count) and sum(served_count) >= 40, served_count


def test_a_collection_the_guard_refuses_never_becomes_ready(tmp_path: Path) -> None:
    built = config("faiss", tmp_path / "index")
    with vecguard.open(built) as engine:
        engine.add(corpus()[:3])
    drifted = config("faiss", tmp_path / "index", chunking={"tokens": 32, "overlap": 4})  # not what built it
    server = Server(drifted, tmp_path)
    try:
        server.wait_until(503)
        deadline = time.monotonic() + 120
        while not httpx.get(f"{server.url}/readyz").json()["refused"] and time.monotonic() < deadline:
            time.sleep(0.2)
        ready = httpx.get(f"{server.url}/readyz")
        assert ready.status_code == 503 and ready.json()["refused"]
        assert "version guard refused the collection" in ready.json()["reason"] and "chunking" in ready.json()["reason"]
        search = httpx.post(f"{server.url}/search", json={"query": "x"})
        assert search.status_code == 503 and "guard refused" in search.json()["detail"][0]["msg"]
        text = httpx.get(f"{server.url}/metrics").text
        assert metric(text, "vecguard_guard_refusals_total") == 1 and metric(text, "vecguard_ready") == 0
    finally:
        server.stop()


class _StoreBatchMistake(vecguard.StorageError, vecguard.InvalidArgumentError):
    """A store's caller mistake that still reads as a StorageError to older ``except`` clauses."""


@pytest.mark.parametrize(
    ("error", "status", "says"),
    [
        (vecguard.InvalidArgumentError("k must be at least 1, got 0; ask for one hit or more"), 422, "k must be"),
        (_StoreBatchMistake("ids[1] repeats 'a'; give each id once"), 422, "repeats 'a'"),
        (vecguard.CorruptCollectionError("/srv/index/points.sqlite3: row 7 is damaged"), 503, "incident"),
    ],
)
def test_a_caller_mistake_is_a_422_and_only_a_storage_failure_a_503(tmp_path: Path, error, status, says) -> None:
    from fastapi.testclient import TestClient
    from vecguard.server import create_app

    app = create_app(config("faiss", tmp_path / "index"))

    @app.get("/raises")
    def raises() -> None:  # stands in for a store call that fails this way
        raise error

    response = TestClient(app).get("/raises")  # outside `with`: no lifespan, so no collection is opened
    assert response.status_code == status and says in response.json()["detail"][0]["msg"], response.text
    assert "/srv" not in response.text


def test_one_span_per_request_with_a_child_span_per_stage(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from vecguard.server import create_app

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    cfg = config("faiss", tmp_path / "index")
    with vecguard.open(cfg) as engine:
        engine.add(corpus()[:5])
    with TestClient(create_app(cfg)) as client:
        deadline = time.monotonic() + 120
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        exporter.clear()
        assert client.post("/search", json={"query": "password reset"}).status_code == 200
    spans = exporter.get_finished_spans()
    roots = [s for s in spans if s.parent is None]
    assert [s.name for s in roots] == ["POST /search"]  # one trace per request
    parents = {s.context.span_id: s.parent.span_id if s.parent else None for s in spans}

    def root_of(span_id: int) -> int:
        while parents[span_id] is not None:
            span_id = parents[span_id]
        return span_id

    stages = [
        s.name
        for s in spans
        if s.name.startswith("vecguard.") and root_of(s.context.span_id) == roots[0].context.span_id
    ]
    assert stages == ["vecguard.encode", "vecguard.dense", "vecguard.keyword", "vecguard.fuse"]
    assert roots[0].attributes["http.response.status_code"] == 200


ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"


def test_alert_rules_are_valid_and_name_only_metrics_the_server_exports(served) -> None:
    server, _ = served
    rules = yaml.safe_load(ALERTS.read_text())
    exported = {
        line.split()[2] for line in httpx.get(f"{server.url}/metrics").text.splitlines() if line.startswith("# TYPE")
    }
    exported |= {f"{name}_{suffix}" for name in exported for suffix in ("bucket", "count", "sum", "total")}
    recorded = {rule["record"] for group in rules["groups"] for rule in group["rules"] if "record" in rule}
    alerts = {}
    for group in rules["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"record", "alert", "expr", "for", "labels", "annotations"}, rule
            assert ("record" in rule) != ("alert" in rule) and rule["expr"].strip()
            if "alert" in rule:
                alerts[rule["alert"]] = rule
                assert rule["labels"]["severity"] in ("page", "warn") and rule["annotations"]["summary"]
                if "for" in rule:
                    assert re.fullmatch(r"\d+[smh]", rule["for"])
            for name in re.findall(r"\b(vecguard[:_][a-z0-9_:]+)", rule["expr"]):
                assert name in exported or name in recorded, f"{name} in {rule.get('alert') or rule.get('record')}"
    assert set(alerts) >= {
        "VecguardRecallDrop",
        "VecguardLatencyP99High",
        "VecguardIndexSizeChange",
        "VecguardTop1CosineShift",
        "VecguardGuardRefusal",
    }


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) is not installed")
def test_promtool_accepts_the_alert_rules() -> None:
    result = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
