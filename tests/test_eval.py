"""`vecguard eval`: quality against judgments, and ANN recall against exact search on the same vectors."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import vecguard
from conftest import TOPICS, config, corpus, toml
from vecguard.evaluate import measure_recall, ndcg_at_k, recall_at_k, reciprocal_rank


def test_the_metrics_are_the_textbook_formulas() -> None:
    assert ndcg_at_k(["a", "b"], {"b": 1}, 10) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_k(["b", "a"], {"a": 1, "b": 2}, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["a", "b"], {"a": 1, "b": 2}, 10) == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))
    assert recall_at_k(["a", "x"], {"a": 1, "b": 1, "c": 0}, 10) == 0.5
    assert reciprocal_rank(["x", "y", "a"], {"a": 1}) == pytest.approx(1 / 3)
    assert ndcg_at_k(["x"], {"a": 1}, 10) == recall_at_k(["x"], {"a": 1}, 10) == reciprocal_rank(["x"], {"a": 1}) == 0.0


def vecguard_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "vecguard"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def test_eval_with_judgments_reports_each_mode(tmp_path: Path) -> None:
    cfg = config("faiss", tmp_path / "index")
    with vecguard.open(cfg) as engine:
        engine.add(corpus())
    (tmp_path / "c.toml").write_text(toml(cfg))
    queries = tmp_path / "queries.jsonl"
    queries.write_text(
        "".join(json.dumps({"id": f"q{i}", "text": title}) + "\n" for i, (title, _) in enumerate(TOPICS))
    )
    qrels = tmp_path / "qrels.jsonl"
    qrels.write_text(
        "".join(json.dumps({"query_id": f"q{i}", "doc_id": f"doc-{i:02d}"}) + "\n" for i in range(len(TOPICS)))
    )
    result = vecguard_cli(
        "eval", "--config", str(tmp_path / "c.toml"), "--queries", str(queries), "--qrels", str(qrels), "--json"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    quality = json.loads(result.stdout)["quality"]
    assert set(quality) == {"hybrid", "dense", "keyword"}
    for scores in quality.values():
        assert scores["queries"] == 20 and 0.0 <= scores["ndcg@10"] <= 1.0
    assert quality["hybrid"]["ndcg@10"] > 0.9 and quality["hybrid"]["recall@10"] == 1.0  # titles name their document


def test_exact_recall_is_one_for_flat_and_measured_lower_for_a_starved_ivf(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(40, 384)).astype(np.float32)
    vectors = centres[rng.integers(0, 40, 3000)] + 0.8 * rng.normal(size=(3000, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"p{i}#0" for i in range(3000)]
    payloads = [
        {"doc_id": f"p{i}", "chunk": 0, "chunks": 1, "start": 0, "end": 1, "text": "x", "metadata": {}}
        for i in range(3000)
    ]
    questions = [title for title, _ in TOPICS]
    recalls = {}
    for index, options in (("Flat", {}), ("IVF32,Flat", {"nprobe": 1})):
        cfg = {
            **config("faiss"),
            "store": {"plugin": "faiss", "path": str(tmp_path / index.replace(",", "-")), "index": index, **options},
        }
        with vecguard.open(cfg) as engine:
            engine.store.upsert(ids, vectors, payloads)
            recalls[index] = measure_recall(engine, questions, k=10)
    assert recalls["Flat"]["recall"] == 1.0 and recalls["Flat"]["exact_search"]
    assert recalls["IVF32,Flat"]["recall"] < 0.9 and not recalls["IVF32,Flat"]["exact_search"]
    assert recalls["Flat"]["points"] == 3000 and recalls["Flat"]["latency_p50_ms"] > 0


def test_eval_exact_keeps_the_measurement_in_the_manifest_without_changing_its_id(tmp_path: Path) -> None:
    cfg = config("faiss", tmp_path / "index")
    with vecguard.open(cfg) as engine:
        engine.add(corpus())
        manifest_id = engine.manifest["id"]
    (tmp_path / "c.toml").write_text(toml(cfg))
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"id": f"q{i}", "text": text}) + "\n" for i, (_, text) in enumerate(TOPICS)))
    first = vecguard_cli("eval", "--config", str(tmp_path / "c.toml"), "--queries", str(queries), "--exact")
    assert first.returncode == 0, first.stderr[-2000:]
    assert "recall@10 against exact search: 1.0000" in first.stdout
    second = vecguard_cli("eval", "--config", str(tmp_path / "c.toml"), "--queries", str(queries), "--exact", "--json")
    assert json.loads(second.stdout)["recall"]["previous"]["value"] == 1.0
    with vecguard.open(cfg) as engine:
        assert engine.manifest["measurements"]["recall"]["value"] == 1.0
        assert vecguard.guard.manifest_id(engine.manifest) == manifest_id == engine.manifest["id"]

    from fastapi.testclient import TestClient
    from vecguard.server import create_app

    with TestClient(create_app(cfg)) as client:  # the service exports the last measurement for the recall alert
        deadline = time.monotonic() + 120
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "vecguard_recall_at_k 1.0" in client.get("/metrics").text.splitlines()


@pytest.mark.parametrize(
    "lines, flags, message",
    [
        (['{"id": "q1", "text": "x"}'], [], "give --qrels R.jsonl"),
        (['{"id": "q1", "text": "x"}', "not json"], ["--exact"], r"queries.jsonl:2: not valid JSON"),
        (['{"id": "q1"}'], ["--exact"], r"queries.jsonl:1: 'text' must be a non-empty string"),
    ],
)
def test_bad_eval_input_is_one_line_naming_the_problem(
    tmp_path: Path, lines: list[str], flags: list[str], message: str
) -> None:
    (tmp_path / "c.toml").write_text(toml(config("faiss", tmp_path / "index")))
    (tmp_path / "queries.jsonl").write_text("\n".join(lines) + "\n")
    result = vecguard_cli(
        "eval", "--config", str(tmp_path / "c.toml"), "--queries", str(tmp_path / "queries.jsonl"), *flags
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and re.search(message, result.stderr), result.stderr


def test_eval_exact_with_optimize_retrains_an_index_below_its_target(tmp_path: Path) -> None:
    # Clustered vectors, then text queries unlike them: the IVF tuned on stored vectors misses its target on them.
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(40, 384)).astype(np.float32)
    vectors = centres[rng.integers(0, 40, 3000)] + 0.8 * rng.normal(size=(3000, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    payloads = [
        {"doc_id": f"p{i}", "chunk": 0, "chunks": 1, "start": 0, "end": 1, "text": "x", "metadata": {}}
        for i in range(3000)
    ]
    cfg = {
        **config("faiss"),
        "store": {
            "plugin": "faiss",
            "path": str(tmp_path / "index"),
            "index": "auto",
            "ivf_threshold": 1000,
            "target_recall": 0.9,
            "auto_candidates": ["IVF"],
        },
    }
    with vecguard.open(cfg) as engine:
        engine.store.upsert([f"p{i}#0" for i in range(3000)], vectors, payloads)
    (tmp_path / "c.toml").write_text(toml(cfg))
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"id": f"q{i}", "text": text}) + "\n" for i, (_, text) in enumerate(TOPICS)))

    advised = vecguard_cli("eval", "--config", str(tmp_path / "c.toml"), "--queries", str(queries), "--exact")
    assert advised.returncode == 0, advised.stderr[-2000:]
    recall = float(re.search(r"recall@10 against exact search: ([\d.]+)", advised.stdout).group(1))
    assert recall < 0.9 and "below the index's target_recall 0.9: rerun with --optimize" in advised.stdout

    retrained = vecguard_cli(
        "eval", "--config", str(tmp_path / "c.toml"), "--queries", str(queries), "--exact", "--optimize", "--json"
    )
    assert retrained.returncode == 0, retrained.stderr[-2000:]
    result = json.loads(retrained.stdout)
    assert result["optimized"]["before"] == pytest.approx(recall) and result["optimized"]["index"]["spec"].startswith(
        "IVF"
    )
    assert result["recall"]["target_recall"] == 0.9
