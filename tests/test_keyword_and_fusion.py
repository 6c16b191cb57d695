"""BM25 with identifiers, saved without pickle; weighted RRF exactly as specified."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from vecguard import ConfigError
from vecguard.plugins import bm25
from vecguard.plugins.bm25 import BM25Index, tokenize
from vecguard.plugins.dbsf import distribution_based_score_fusion
from vecguard.plugins.rrf import ReciprocalRankFusion, reciprocal_rank_fusion
from vecguard.protocols import SignalEvidence

IDENTIFIERS = {
    "ORD-2024-00017": "ord-2024-00017",
    "CVE-2022-24045": "cve-2022-24045",
    "2013/34/EU": "2013/34/eu",
    "J45.909": "j45.909",
    "42 U.S.C. § 1983": "u.s.c",
}


@pytest.mark.parametrize(("identifier", "whole"), IDENTIFIERS.items())
def test_identifiers_are_kept_whole_as_well_as_split(identifier: str, whole: str) -> None:
    tokens = tokenize(f"See {identifier}, then stop.")
    assert whole in tokens
    assert "see" in tokens and "stop" in tokens


def _index() -> BM25Index:
    index = BM25Index()
    texts = {f"d{i}": f"filler text number {i} about orders and codes" for i in range(12)}
    for i, identifier in enumerate(IDENTIFIERS):
        texts[f"d{i}"] += f" reference {identifier}"
    texts["near"] = "order ORD-2024-00018 and code J45.90 and 2013/34 and CVE-2022-2404"
    index.add(list(texts), list(texts.values()))
    return index


@pytest.mark.parametrize(("position", "identifier"), list(enumerate(IDENTIFIERS)))
def test_an_exact_identifier_is_found_first(position: int, identifier: str) -> None:
    index = _index()
    assert index.search(identifier, 3)[0][0] == f"d{position}"
    assert [key for key, _ in index.exact_matches(identifier, 3)] == [f"d{position}"]


def test_an_identifier_is_matched_even_where_bm25_gives_it_no_weight() -> None:
    index = BM25Index()
    index.add(["a", "b"], ["hello world about cookies", "Order ORD-2024-00017 shipped"])
    assert index.search("ORD-2024-00017", 5) == []  # idf log(1.5/1.5) = 0 in a two-document corpus
    assert index.exact_matches("where is ORD-2024-00017?", 5) == [("b", 0.0)]


def test_scores_are_positive_sorted_and_respect_allowed_ids() -> None:
    index = _index()
    hits = index.search("orders codes reference", 20)
    assert all(score > 0 for _, score in hits)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    assert {key for key, _ in index.search("orders codes", 20, allowed_ids=["d1", "d2"])} == {"d1", "d2"}
    assert index.search("the of and", 5) == []  # stopwords only


def test_delete_and_replace() -> None:
    index = _index()
    index.delete(["d0", "missing"])
    assert index.exact_matches("ORD-2024-00017", 3) == []
    index.add(["d1"], ["now about J45.909 only"])
    assert index.exact_matches("CVE-2022-24045", 3) == []
    assert {k for k, _ in index.exact_matches("J45.909", 3)} == {"d1", "d3"}


def test_save_and_load_round_trip_through_a_json_manifest_and_segment_files(tmp_path: Path) -> None:
    index = _index()
    index.save(tmp_path)
    manifest = json.loads((tmp_path / "bm25-segments.json").read_text())  # JSON and numpy arrays, never pickle
    assert manifest["settings"] == index.settings() and manifest["token"] is None
    assert [path.name for path in tmp_path.glob("*.seg")] == [manifest["segments"][0]["file"]]
    loaded = BM25Index()
    assert loaded.load(tmp_path)
    assert loaded.search("ORD-2024-00017 codes", 5) == index.search("ORD-2024-00017 codes", 5)
    assert loaded.exact_matches("J45.909", 5) == index.exact_matches("J45.909", 5)


def test_an_index_saved_with_other_settings_is_not_loaded(tmp_path: Path) -> None:
    _index().save(tmp_path)
    assert BM25Index(k1=1.2).load(tmp_path) is False
    assert BM25Index().load(tmp_path / "nowhere") is False


def test_bad_bm25_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="stopwords"):
        BM25Index(stopwords="french")
    with pytest.raises(ConfigError, match="k1"):
        BM25Index(k1=-1)


def test_weighted_rrf_is_the_specified_formula() -> None:
    ranked = {"dense": [("a", 0.9), ("b", 0.8), ("c", 0.1)], "keyword": [("c", 12.0), ("a", 3.0)]}
    fused = reciprocal_rank_fusion(ranked, {"dense": 2.0, "keyword": 0.5}, k=60)
    expected = {"a": 2 / 61 + 0.5 / 62, "b": 2 / 62, "c": 2 / 63 + 0.5 / 61}
    assert [hit.id for hit in fused] == sorted(expected, key=lambda key: -expected[key])
    for hit in fused:
        assert hit.score == pytest.approx(expected[hit.id], rel=1e-12)
    c = next(hit for hit in fused if hit.id == "c")
    assert (c.signals["dense"].rank, c.signals["keyword"].rank, c.signals["keyword"].score) == (3, 1, 12.0)


def test_rrf_k_is_configurable_and_ties_are_deterministic() -> None:
    ranked = {"dense": [("x", 1.0), ("y", 0.5)], "keyword": [("y", 2.0), ("x", 1.0)]}
    fused = ReciprocalRankFusion(k=1).fuse(ranked, {})
    assert [h.id for h in fused] == ["x", "y"]  # equal scores: best single rank, then id
    assert fused[0].score == pytest.approx(1 / 2 + 1 / 3)
    with pytest.raises(ConfigError):
        ReciprocalRankFusion(k=-1)


def test_dbsf_scales_each_signal_by_its_own_spread_and_sums() -> None:
    dense = [("a", 0.62), ("b", 0.60), ("c", 0.58), ("d", 0.20)]
    keyword = [("d", 30.0), ("a", 2.0), ("b", 1.0)]
    fused = distribution_based_score_fusion({"dense": dense, "keyword": keyword}, {"dense": 1.0, "keyword": 0.5})

    def scaled(hits: list, key: str) -> float:
        values = [score for _, score in hits] + [0.0] * (10 - len(hits))  # a short list is completed with zeros
        mean = sum(values) / len(values)
        sd = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
        return (dict(hits)[key] - (mean - 3 * sd)) / (6 * sd)

    expected = {
        key: scaled(dense, key) + (0.5 * scaled(keyword, key) if key in dict(keyword) else 0.0) for key in "abcd"
    }
    assert [hit.id for hit in fused] == sorted(expected, key=lambda key: -expected[key])
    assert {hit.id: hit.score for hit in fused} == pytest.approx(expected, rel=1e-12)
    d = next(hit for hit in fused if hit.id == "d")
    assert (d.signals["dense"].rank, d.signals["keyword"].rank, d.signals["keyword"].score) == (4, 1, 30.0)
    assert "keyword" not in next(hit for hit in fused if hit.id == "c").signals


def test_dbsf_scales_a_lone_hit_to_one_breaks_ties_by_rank_then_id_and_counts_an_id_once() -> None:
    flat = [(f"d{i}", 0.5) for i in range(12)]  # equal scores, long enough to need no zeros: spread 0, each 1
    fused = distribution_based_score_fusion({"dense": flat, "keyword": [("d3", 3.0), ("d3", 1.0)]}, {})
    assert [(h.id, h.score) for h in fused[:3]] == [("d3", pytest.approx(2.0)), ("d0", 1.0), ("d1", 1.0)]
    assert fused[0].signals["keyword"] == SignalEvidence(1, 3.0)


def test_dbsf_does_not_stretch_two_close_keyword_hits_over_a_clear_dense_lead() -> None:
    dense = [("right", 0.57), ("other", 0.40)] + [(f"d{i}", 0.3 - 0.02 * i) for i in range(10)]
    keyword = [("other", 2.10), ("right", 1.73)]  # BM25 barely prefers the other document
    assert distribution_based_score_fusion({"dense": dense, "keyword": keyword}, {})[0].id == "right"


def test_dbsf_is_the_default_fuser_a_config_setting_k_keeps_rrf_and_dbsf_refuses_k() -> None:
    import vecguard

    assert vecguard.load_config({}).tables["fusion"]["plugin"] == "dbsf"
    # [fusion] k = 60 without a plugin was written when RRF was the default: it keeps RRF.
    assert vecguard.load_config({"fusion": {"k": 60}}).tables["fusion"]["plugin"] == "rrf"
    with pytest.raises(ConfigError, match='set plugin = "rrf" to use k'):
        vecguard.open({"store": {"plugin": "memory"}, "fusion": {"plugin": "dbsf", "k": 60}})


def _cwe_passages(n: int) -> list[dict]:
    import itertools
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.corpora import cwe_passages

    return list(itertools.islice(cwe_passages(), n))


def _same_answers(fast: BM25Index, reference: BM25Index, queries: list[str]) -> None:
    for query in queries:
        for got, want in (
            (fast.search(query, 20), reference.search(query, 20)),
            (fast.exact_matches(query, 10), reference.exact_matches(query, 10)),
        ):
            assert [key for key, _ in got] == [key for key, _ in want], query
            assert [score for _, score in got] == pytest.approx([score for _, score in want], rel=1e-9), query


def test_postings_give_rank_bm25s_scores_through_adds_deletes_replacements_saves_and_loads(tmp_path: Path) -> None:
    passages = _cwe_passages(3000)
    queries = [p["text"].split(":")[0] for p in passages[:25]]  # CVE ids
    queries += [" ".join(p["text"].split()[:6]) for p in passages[-25:]]  # the words of sentences
    queries += ["the the the", "buffer overflow overflow", "a", "xyzzy-404 unknown"]
    fast, reference = BM25Index(), BM25Index(implementation="rank-bm25")
    for index in (fast, reference):
        index.add([p["id"] for p in passages[:2000]], [p["text"] for p in passages[:2000]])
    _same_answers(fast, reference, queries)
    fast.save_changes(tmp_path, [p["id"] for p in passages[:2000]], 1)  # nothing saved yet: saves everything
    loaded = BM25Index()
    assert loaded.load(tmp_path)
    _same_answers(loaded, reference, queries)
    changed = [p["id"] for p in passages[:2000:3]] + [p["id"] for p in passages[1:300:3]]
    changed += [p["id"] for p in passages[2000:]]
    for index in (fast, reference, loaded):  # delete a third, replace some texts, add the rest
        index.delete([p["id"] for p in passages[:2000:3]])
        index.add([p["id"] for p in passages[1:300:3]], [p["text"].upper() + " replaced" for p in passages[1:300:3]])
        index.add([p["id"] for p in passages[2000:]], [p["text"] for p in passages[2000:]])
    assert fast.count() == reference.count() == loaded.count() == 3000 - 667
    _same_answers(fast, reference, queries)
    _same_answers(loaded, reference, queries)  # a loaded index changed in memory
    loaded.save_changes(tmp_path, changed, 2)  # one segment of the changes on top of the first save
    reloaded = BM25Index()
    assert reloaded.load(tmp_path) and reloaded.saved_token(tmp_path) == 2
    _same_answers(reloaded, reference, queries)


def _tokenize_one_path(text: str, lowercase: bool, stopwords: frozenset[str]) -> list[str]:
    """The tokenizer without its plain-word shortcut: every token split, stripped and tested as an identifier."""
    tokens = []
    for raw in text.split():
        raw = raw.lower() if lowercase else raw
        pieces = bm25._WORD.findall(raw)
        tokens.extend(p for p in pieces if p not in stopwords)
        whole = raw.strip(bm25._EDGE_PUNCTUATION)
        if whole and bm25.is_identifier(whole, pieces) and whole not in pieces:
            tokens.append(whole)
    return tokens


def test_the_plain_word_shortcuts_give_the_tokens_and_identifier_terms_of_the_full_path() -> None:
    texts = [p["text"] for p in _cwe_passages(600)] + [
        "Ärger naïve straße ΣΊΣΥΦΟΣ 東京 x2- §21 21A. (CVE-2022-24045), «J45.909» U.S.C. a_b snake_case_id 2013/34/EU",
        "The THE the. And 42 U.S.C. § 1983 v1.2.3 ½ ² ٣ 3rd 1st-class e-mail re-use ORD-2024-00017; co-op",
    ]
    for lowercase in (True, False):
        stopwords = bm25.ENGLISH_STOPWORDS if lowercase else frozenset({"the"})
        for text in texts:
            tokens = tokenize(text, lowercase=lowercase, stopwords=stopwords)
            assert tokens == _tokenize_one_path(text, lowercase, stopwords), text
            assert bm25.identifier_tokens(tokens) == set(bm25.identifier_terms(" ".join(tokens), lowercase=False)), text


def test_postings_compact_after_most_documents_are_deleted() -> None:
    passages = _cwe_passages(2600)
    fast, reference = BM25Index(), BM25Index(implementation="rank-bm25")
    for index in (fast, reference):
        index.add([p["id"] for p in passages], [p["text"] for p in passages])
        index.delete([p["id"] for p in passages[:2000]])
    assert fast.slots == 600  # compacted: only live documents keep a slot
    _same_answers(fast, reference, [p["text"][:40] for p in passages[2000::40]])


def test_an_unknown_bm25_implementation_is_refused() -> None:
    with pytest.raises(ConfigError, match="implementation must be one of 'postings', 'rank-bm25'"):
        BM25Index(implementation="bm25s")


def test_the_bm25s_plugin_is_discovered_and_finds_identifiers_and_meaning_with_bm25s_scores(tmp_path: Path) -> None:
    import bm25s as bm25s_package
    from vecguard.registry import Registry

    index = Registry.discover().build("keyword", "bm25s", {"method": "robertson"}, tmp_path)
    texts = {f"d{i}": f"filler text number {i} about orders and codes" for i in range(12)}
    for i, identifier in enumerate(IDENTIFIERS):
        texts[f"d{i}"] += f" reference {identifier}"
    index.add(list(texts), list(texts.values()))
    for position, identifier in enumerate(IDENTIFIERS):
        assert index.search(identifier, 3)[0][0] == f"d{position}"
        assert [key for key, _ in index.exact_matches(identifier, 3)] == [f"d{position}"]
    reference = bm25s_package.BM25(method="robertson", k1=1.5, b=0.75)
    reference.index([index.tokenize(text) for text in texts.values()], show_progress=False)
    expected = reference.get_scores(index.tokenize("CVE-2022-24045 orders"))
    assert dict(index.search("CVE-2022-24045 orders", 20)) == pytest.approx(
        {key: float(score) for key, score in zip(texts, expected) if score > 0}
    )

    index.delete(["d1"])  # a change rebuilds the matrix at the next search
    assert "d1" not in dict(index.search("CVE-2022-24045", 20)) and index.count() == 11
    index.save(tmp_path)
    reloaded = Registry.discover().build("keyword", "bm25s", {"method": "robertson"}, tmp_path)
    assert reloaded.load(tmp_path) and reloaded.search("J45.909", 1) == index.search("J45.909", 1)
    other = Registry.discover().build("keyword", "bm25s", {"method": "lucene"}, tmp_path)
    assert other.load(tmp_path) is False  # saved with other settings: rebuilt from the stored texts
    assert index.settings()["plugin"] == "bm25s" and index.settings()["scorer"] == "bm25s robertson"


def test_an_engine_runs_hybrid_search_on_the_bm25s_plugin_and_a_bad_method_is_refused() -> None:
    import vecguard
    from conftest import IDENTIFIERS as CORPUS_IDENTIFIERS
    from conftest import config, corpus

    with vecguard.open(config("memory", keyword={"plugin": "bm25s"})) as engine:
        engine.add(corpus())
        assert engine.manifest["keyword"]["scorer"] == "bm25s lucene"
        for position, identifier in enumerate(CORPUS_IDENTIFIERS):  # document i carries identifier i
            assert engine.search(identifier, k=3)[0].id.split("#")[0] == f"doc-{position:02d}"
    with pytest.raises(ConfigError, match="bm25s method must be one of"):
        vecguard.open(config("memory", keyword={"plugin": "bm25s", "method": "okapi"}))
    with pytest.raises(ConfigError, match=r"\[keyword\] bm25s k1 must be a number >= 0"):
        vecguard.open(config("memory", keyword={"plugin": "bm25s", "k1": -1}))
