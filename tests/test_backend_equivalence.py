"""One real corpus (CWE weaknesses) on every backend: switching store.plugin must not change the answers.

The exception is by design: a Qdrant collection that keeps the keyword signal inside Qdrant (keyword_vectors, the
default) scores BM25 with Qdrant's IDF and a fixed average chunk length, so its hybrid answers are close to the
others', not equal; with keyword_vectors = false it answers like every other backend.
"""

from __future__ import annotations

import random
import re
import sys

import pytest
import vecguard
from conftest import ROOT

sys.path.insert(0, str(ROOT))
from benchmarks.corpora import cwe_documents  # noqa: E402

DOCUMENTS = 120
BACKENDS = {"faiss": {"index": "Flat"}, "chroma": {}, "qdrant": {"keyword_vectors": False}}
KEYWORD_VECTORS = {"qdrant-keyword-vectors": {"plugin": "qdrant"}}


def _queries(documents: list[dict]) -> list[str]:
    rng = random.Random(4)
    sample = rng.sample(documents, 15)
    meaning = [re.split(r"(?<=\.)\s", d["text"].split("\n\n")[1])[0] for d in sample]
    identifiers = sorted({cve for d in documents for cve in re.findall(r"CVE-\d{4}-\d+", d["text"])})
    return meaning + rng.sample(identifiers, 15)


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[list[tuple[str, float]]]]:
    documents = [d for _, d in zip(range(DOCUMENTS), cwe_documents())]
    queries = _queries(documents)
    results = {}
    stores = {"memory": {}, **BACKENDS, **KEYWORD_VECTORS}
    for name, options in stores.items():
        path = tmp_path_factory.mktemp(name) / "index"
        store = {"plugin": name, **options, "path": str(path)}
        config = {"store": store, "chunking": {"tokens": 128, "overlap": 16}}
        with vecguard.open(config) as engine:
            engine.add(documents)
            results[name] = [[(h.id, h.score) for h in engine.search(q, k=10)] for q in queries]
            results[f"{name}/dense"] = [
                [(h.id, h.score) for h in engine.search(q, k=10, mode="dense")] for q in queries
            ]
    return results


@pytest.mark.parametrize("plugin", list(BACKENDS))
def test_hybrid_top_10_equals_the_exact_reference_on_30_real_queries(answers, plugin: str) -> None:
    reference, candidate = answers["memory"], answers[plugin]
    assert len(reference) == 30 and all(reference)
    for expected, found in zip(reference, candidate):
        assert [key for key, _ in found] == [key for key, _ in expected]
        assert [s for _, s in found] == pytest.approx([s for _, s in expected], abs=1e-6)


def test_qdrant_keeping_the_keyword_signal_answers_close_to_the_reference(answers) -> None:
    """Dense answers equal; hybrid answers close: each identifier query's document first, the top 10 mostly shared."""
    reference, candidate = answers["memory"], answers["qdrant-keyword-vectors"]
    for found, expected in zip(answers["qdrant-keyword-vectors/dense"], answers["memory/dense"]):
        assert [key for key, _ in found] == [key for key, _ in expected]
        assert [s for _, s in found] == pytest.approx([s for _, s in expected], abs=1e-6)
    overlaps = [len({k for k, _ in a} & {k for k, _ in b}) / 10 for a, b in zip(candidate, reference)]
    assert [found[0][0] for found in candidate[15:]] == [expected[0][0] for expected in reference[15:]]
    assert sum(overlaps) / len(overlaps) >= 0.8, overlaps
