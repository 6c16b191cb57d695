"""Discovery through entry points: our parts, a third party's, a broken one, clear errors."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from conftest import run_python
from vecguard import MissingExtraError, Part, PluginNotFoundError, Registry

BUILT_INS = {
    ("store", "faiss"),
    ("store", "chroma"),
    ("store", "qdrant"),
    ("store", "memory"),
    ("encoder", "sentence-transformers"),
    ("keyword", "bm25"),
    ("fuser", "rrf"),
    ("fuser", "dbsf"),
}


def _install_on_path(root: Path, distribution: str, module: str, source: str, entry_points: str) -> None:
    """A real installed distribution as importlib.metadata sees it: a module plus its dist-info."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = (
        root / f"{distribution.replace('-', '_')}-1.0.dist-info"
    )  # the folder name is how importlib tells dists apart
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[vecguard]\n" + entry_points)


def test_built_in_parts_come_through_our_own_entry_points() -> None:
    registry = Registry.discover()
    assert BUILT_INS <= set(registry.parts)
    assert {registry.parts[key].distribution for key in BUILT_INS} == {"vecguard"}
    assert registry.broken == []


def test_a_third_party_plugin_is_discovered_and_a_broken_one_is_reported_not_fatal(tmp_path: Path) -> None:
    _install_on_path(
        tmp_path,
        "toy-fuser",
        "toy_fuser",
        """
        from vecguard import FusedHit, Part, SignalEvidence, hookimpl

        class KeywordOnly:
            def fuse(self, ranked, weights):
                return [FusedHit(key, score, {"keyword": SignalEvidence(rank, score)})
                        for rank, (key, score) in enumerate(ranked.get("keyword", []), start=1)]

        @hookimpl
        def vecguard_parts():
            return [Part("fuser", "keyword-only", lambda options, base: KeywordOnly(), description="toy")]
    """,
        "keyword-only = toy_fuser\n",
    )
    _install_on_path(
        tmp_path, "toy-broken", "toy_broken", "raise ImportError('needs libfoo')\n", "broken = toy_broken\n"
    )
    code = textwrap.dedent("""
        import json, sys, vecguard
        from vecguard.cli import main
        registry = vecguard.Registry.discover()
        part = registry.parts[("fuser", "keyword-only")]
        cfg = {"store": {"plugin": "memory"}, "fusion": {"plugin": "keyword-only"}}
        with vecguard.open(cfg, registry=registry) as engine:
            apples = [{"id": f"d{i}", "text": f"note {i} about apples"} for i in range(6)]
            engine.add([*apples, {"id": "x", "text": "pears ORD-1"}])
            hits = engine.search("pears", k=3)
        print(json.dumps({"distribution": part.distribution, "hits": [h.id for h in hits],
                          "broken": [[b.entry_point, b.distribution, b.error] for b in registry.broken]}))
        sys.stdout.flush()
        main(["plugins"])
    """)
    result = run_python(code, env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    first, *table = result.stdout.strip().splitlines()
    answer = json.loads(first)
    assert answer["distribution"] == "toy-fuser"
    assert answer["hits"] == ["x"]
    assert answer["broken"] == [["broken = toy_broken", "toy-broken", "ImportError: needs libfoo"]]
    listing = "\n".join(table)
    assert "keyword-only" in listing and "toy-fuser" in listing
    assert "BROKEN" in listing and "needs libfoo" in listing and "faiss" in listing


def test_an_unknown_plugin_name_lists_the_names_found(tmp_path: Path) -> None:
    with pytest.raises(
        PluginNotFoundError, match=r"no store plugin named 'qdrnt'; found: chroma, faiss, memory, qdrant"
    ):
        Registry.discover().build("store", "qdrnt", {}, tmp_path)


def test_a_missing_extra_says_which_install_fixes_it(tmp_path: Path) -> None:
    def needs_missing_library(options, base_dir):
        import vecguard_surely_missing_library  # noqa: F401

    registry = Registry()
    registry.add(Part("store", "elsewhere", needs_missing_library, extra="elsewhere"))
    with pytest.raises(MissingExtraError, match=r"pip install 'vecguard\[elsewhere\]'"):
        registry.build("store", "elsewhere", {}, tmp_path)


def test_importing_vecguard_and_its_plugins_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys, vecguard, vecguard.cli\n"
        "vecguard.Registry.discover()\n"
        "print(sorted(m for m in ('torch', 'faiss', 'sentence_transformers', "
        "'chromadb', 'qdrant_client') if m in sys.modules))\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
