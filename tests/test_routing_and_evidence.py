"""Hybrid search weighs each signal's evidence for the query: citations by name and number, many-document
citations, and a keyword match on one common word of a question (issue 22). Real encoder, real stores."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import vecguard
from conftest import config
from vecguard import routing
from vecguard.plugins.bm25 import BM25Index
from vecguard.plugins.dbsf import distribution_based_score_fusion
from vecguard.plugins.rrf import reciprocal_rank_fusion

# Several acts that all have an Article 39, and articles that cite Article 39 of their own act.
ACTS = [
    {"id": "gdpr-39", "text": "GDPR Article 39: Tasks of the data protection officer. The officer shall inform and "
     "advise the controller and monitor compliance with this Regulation."},
    {"id": "gdpr-38", "text": "GDPR Article 38: Position of the data protection officer. The officer shall perform "
     "the tasks referred to in Article 39 and report to the highest management level."},
    {"id": "gdpr-37", "text": "GDPR Article 37: Designation of the data protection officer by the controller and "
     "the processor."},
    {"id": "dora-39", "text": "DORA Article 39: Inspections. The Lead Overseer may conduct onsite inspections of "
     "ICT third-party service providers."},
    {"id": "nis2-39", "text": "NIS2 Directive Article 39: Committee procedure. The Commission shall be assisted by "
     "a committee."},
    {"id": "ai-39", "text": "AI Act Article 39: Conformity assessment bodies of third countries may carry out the "
     "activities of notified bodies."},
    {"id": "ai-40", "text": "AI Act Article 40: Harmonised standards. High-risk AI systems in conformity with "
     "harmonised standards are presumed to meet the requirements."},
]  # fmt: skip

# chatterbot-corpus 1.3.3 (BSD-3-Clause), english/food.yml: each conversation's answer.
FOOD = [
    "My brain does not require any beverages.",
    "I am not capable of doing so.",
    "Electricity is food for robots.",
    "My processor requires very little power.",
    "I do not detect any anomalies in my power supply.",
    "Actually I eat only electricity.",
    "Probably pizza, i hear its good!",
    "Hard to tell, i have never tried anything but electricity",
    "sometimes when i'm on a good power supply i feel tipsy",
    "if i could drink i probably would",
    "not much just a little electricity",
    "that's a difficult one, maybe a bionic robot",
    "your asking the wrong guy, however i always wanted to try a burger!",
    "I'm a computer. I can't.",
    "I'm a computer, I can't eat or drink.",
    "No, I'm just a piece of software.",
    "I use electricity to function, if that counts.",
]

BACKENDS = ["faiss", "qdrant"]  # the keyword signal in BM25 files, and inside the store


def _built(store: str, path: Path, documents: list[dict]) -> dict:
    cfg = config(store, path)
    with vecguard.open(cfg) as engine:
        engine.add(documents)
    return cfg


@pytest.mark.parametrize("store", BACKENDS)
def test_a_citation_by_name_and_number_finds_that_act_s_article_first(store: str, tmp_path: Path) -> None:
    with vecguard.open(_built(store, tmp_path / "acts", ACTS)) as engine:
        first = engine.search("GDPR Article 39", k=3)[0]
        assert first.id == "gdpr-39" and "verbatim" in first.signals, first
        # Out of order there is no verbatim holder; the chunks holding every term of the citation still lead.
        top = engine.search("Article 39 of the GDPR", k=3)
        assert {hit.id for hit in top[:2]} == {"gdpr-39", "gdpr-38"}, top
        assert all("identifier" in hit.signals for hit in top[:2])
        # A bare number is not a citation: nothing is routed.
        assert not any({"verbatim", "identifier"} & hit.signals.keys() for hit in engine.search("39", k=5))


@pytest.mark.parametrize("store", BACKENDS)
def test_a_citation_whose_rarest_term_is_common_routes_nothing(store: str, tmp_path: Path) -> None:
    """Both keyword signals apply one rule: "GDPR 5" is held together by two chunks, but each of its terms by more
    than the bar (10 of 50 chunks here), so neither term names anything."""
    documents = [{"id": f"g{i}", "text": f"the gdpr sets rule number {i} for controllers"} for i in range(20)]
    documents += [{"id": f"f{i}", "text": f"form 5 asks about item {i} of the budget"} for i in range(20)]
    documents += [{"id": f"both{i}", "text": f"gdpr form 5 note {i}"} for i in range(2)]
    documents += [{"id": f"other{i}", "text": f"unrelated filler sentence {i}"} for i in range(8)]
    with vecguard.open(_built(store, tmp_path / "common", documents)) as engine:
        assert engine.keyword.exact_matches("GDPR 5", 10) == []
        assert [key for key, _ in engine.keyword.exact_matches("gdpr note 1", 10)] == ["both1#0"]


def test_a_number_beside_a_stopword_is_not_a_citation() -> None:
    index = BM25Index()
    texts = {f"d{i}": f"paragraph {i} of the rules" for i in range(40)}
    index.add(list(texts), list(texts.values()))
    assert index.exact_matches("the 39", 5) == []
    assert [key for key, _ in index.exact_matches("paragraph 39", 5)] == ["d39"]


def test_a_document_found_by_its_citation_shows_the_chunk_that_holds_it(tmp_path: Path) -> None:
    opening = "The data protection officer advises the controller on processing and monitors compliance. " * 6
    closing = "Under GDPR Article 39 the officer also cooperates with the supervisory authority."
    handbook = {"id": "handbook", "text": opening + closing}
    with vecguard.open(_built("faiss", tmp_path / "handbook", ACTS + [handbook])) as engine:
        (hit,) = [hit for hit in engine.search("GDPR Article 39", k=10) if hit.id == "handbook"]
        assert "verbatim" in hit.signals and hit.chunk > 0
        assert "GDPR Article 39" in hit.text


def test_a_cited_act_with_many_citing_chunks_routes_every_one_of_them() -> None:
    """More holders than an identifier may have (1% of the chunks), fewer than a citation may (5%)."""
    index = BM25Index()
    texts = {f"filler-{i}": f"member states shall report on measure {i} to the commission" for i in range(300)}
    citing = {f"cites-{i}": f"Directive 2013/34/EU is amended as follows in point {i}" for i in range(12)}
    texts |= citing | {"other": "Directive 2013/35/EU on electromagnetic fields is not the accounting one"}
    index.add(list(texts), list(texts.values()))
    assert {key for key, _ in index.exact_matches("Directive 2013/34/EU", 50)} == set(citing)
    # The whole identifier alone is held by more than 1%: it routes nothing by itself.
    assert index.exact_matches("2013/34/EU", 50) == []


def test_verbatim_compares_words_in_order_and_whole() -> None:
    texts = [
        ("title", "Article 21: Protection of life"),
        ("lettered", "Article 21A: Right to education"),
        ("cited", "as guaranteed by article 21 (1) of the Constitution"),
        ("split", "Article 2 1 and more"),
    ]
    assert routing.verbatim("Article 21", texts) == ["title", "cited"]
    assert routing.verbatim("data protection officer", [("a", "the data protection officer")]) == []
    long_sentence = "a buffer overflow in version 2 allows remote attackers to run code through a crafted file"
    assert routing.verbatim(long_sentence, [("a", long_sentence)]) == []


def test_coverage_is_the_share_of_the_query_s_idf_a_chunk_holds() -> None:
    index = BM25Index()
    texts = {"do": "I do not detect any anomalies", "drink": "if i could drink i probably would"}
    texts |= {f"other-{i}": f"electricity is food number {i}" for i in range(8)}
    index.add(list(texts), list(texts.values()))
    live = index.count()

    def idf(df: int) -> float:
        return max(0.0, math.log(live - df + 0.5) - math.log(df + 0.5))

    # "like" and "wine" are held by no chunk: each weighs as much as a term can.
    total = idf(1) + 2 * idf(0)
    shares = index.coverage("i like wine, do you?", ["do", "drink", "absent"])
    assert shares == pytest.approx([idf(1) / total, 0.0, 0.0])
    # "electricity" is held by most chunks: it weighs nothing, so there is nothing to weigh the hits by.
    assert index.coverage("electricity", ["other-1", "do"]) == [1.0, 1.0]


def test_the_store_s_keyword_signal_measures_coverage_as_the_bm25_files_do(tmp_path: Path) -> None:
    documents = [{"id": f"food-{i}", "text": text} for i, text in enumerate(FOOD)]
    index = BM25Index()
    index.add([f"{d['id']}#0" for d in documents], [d["text"] for d in documents])
    with vecguard.open(_built("qdrant", tmp_path / "food", documents)) as engine:
        ids = [f"food-{i}#0" for i in (4, 9, 13, 2)]
        for query in ("i like wine, do you?", "can a robot get drunk?", "electricity"):
            assert engine.keyword.coverage(query, ids) == pytest.approx(index.coverage(query, ids)), query


def test_shares_scale_each_hit_s_part_in_both_fusers() -> None:
    ranked = {"dense": [("a", 0.9), ("b", 0.8)], "keyword": [("b", 5.0), ("a", 1.0)]}
    whole = {hit.id: hit.score for hit in distribution_based_score_fusion(ranked, {})}
    dense_only = {hit.id: hit.score for hit in distribution_based_score_fusion({"dense": ranked["dense"]}, {})}
    halved = {hit.id: hit.score for hit in distribution_based_score_fusion(ranked, {}, {"keyword": {"b": 0.5}})}
    assert halved["a"] == pytest.approx(whole["a"])
    assert halved["b"] == pytest.approx(dense_only["b"] + 0.5 * (whole["b"] - dense_only["b"]))
    rrf = {hit.id: hit.score for hit in reciprocal_rank_fusion(ranked, {}, 60, {"keyword": {"b": 0.0}})}
    assert rrf["b"] == pytest.approx(1 / 62) and rrf["a"] == pytest.approx(1 / 61 + 1 / 62)


@pytest.mark.parametrize("store", BACKENDS)
def test_one_common_word_of_a_question_does_not_outrank_what_dense_search_clearly_prefers(
    store: str, tmp_path: Path
) -> None:
    """Its only keyword match is "do", in a wrong answer; dense search ranks the right one first."""
    documents = [{"id": f"food-{i}", "text": text} for i, text in enumerate(FOOD)]
    with vecguard.open(_built(store, tmp_path / "food", documents)) as engine:
        query = "i like wine, do you?"
        assert engine.search(query, k=1, mode="keyword")[0].id == "food-4"  # "I do not detect any anomalies ..."
        assert engine.search(query, k=1, mode="dense")[0].id == "food-9"  # "if i could drink i probably would"
        assert engine.search(query, k=1)[0].id == "food-9"
