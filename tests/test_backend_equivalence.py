"""One real corpus (CWE weaknesses) on every backend: switching store.plugin must not change the answers."""

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
BACKENDS = {"faiss": {"index": "Flat"}, "chroma": {}, "qdrant": {}}


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
    for plugin, options in {"memory": {}, **BACKENDS}.items():
        path = tmp_path_factory.mktemp(plugin) / "index"
        config = {"store": {"plugin": plugin, "path": str(path), **options}, "chunking": {"tokens": 128, "overlap": 16}}
        with vecguard.open(config) as engine:
            engine.add(documents)
            results[plugin] = [[(h.id, h.score) for h in engine.search(q, k=10)] for q in queries]
    return results


@pytest.mark.parametrize("plugin", list(BACKENDS))
def test_hybrid_top_10_equals_the_exact_reference_on_30_real_queries(answers, plugin: str) -> None:
    reference, candidate = answers["memory"], answers[plugin]
    assert len(reference) == 30 and all(reference)
    for expected, found in zip(reference, candidate):
        assert [key for key, _ in found] == [key for key, _ in expected]
        assert [s for _, s in found] == pytest.approx([s for _, s in expected], abs=1e-6)
