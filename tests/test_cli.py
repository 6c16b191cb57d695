"""The command line: index, search, info, plugins; bad input is one line and exit status 2."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import corpus

VECGUARD = [sys.executable, "-m", "vecguard.cli"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VECGUARD, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "vecguard.toml").write_text(
        '[store]\nplugin = "faiss"\npath = "index"\n[chunking]\ntokens = 64\noverlap = 8\nbatch_documents = 4\n'
    )
    with open(tmp_path / "docs.jsonl", "w") as out:
        for document in corpus():
            out.write(json.dumps(document) + "\n")
    return tmp_path


def test_index_then_search_as_a_table_and_as_json(workdir: Path) -> None:
    indexed = run("index", "--config", "vecguard.toml", "docs.jsonl", "-q", cwd=workdir)
    assert indexed.returncode == 0, indexed.stderr
    assert "indexed 20 documents" in indexed.stdout
    assert float(re.search(r"([\d.]+) docs/s", indexed.stdout).group(1)) > 0

    table = run("search", "--config", "vecguard.toml", "ORD-2024-00017", "-k", "3", cwd=workdir)
    assert table.returncode == 0, table.stderr
    first_row = table.stdout.splitlines()[1].split()
    assert first_row[:2] == ["1", "doc-00"]

    as_json = run(
        "search", "-c", "vecguard.toml", "volcanic ash", "--json", "--filter", '{"year": {"$gte": 2015}}', cwd=workdir
    )
    hits = json.loads(as_json.stdout)
    assert hits[0]["id"] == "doc-07" and hits[0]["signals"]["dense"]["rank"] == 1

    info = json.loads(run("info", "-c", "vecguard.toml", cwd=workdir).stdout)
    assert info["documents"] == 20 and info["encoder"]["dimension"] == 384 and info["metric"] == "cosine"


def test_a_folder_of_text_files_can_be_indexed(workdir: Path) -> None:
    folder = workdir / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("Kettles boil water for tea.")
    (folder / "sub" / "b.md").write_text("# Gardening\nTomatoes need sun and water.")
    (folder / "ignored.bin").write_bytes(b"\x00\x01")
    assert run("index", "-c", "vecguard.toml", "notes", "-q", cwd=workdir).returncode == 0
    hits = json.loads(run("search", "-c", "vecguard.toml", "growing tomatoes", "--json", "-k", "1", cwd=workdir).stdout)
    assert hits[0]["id"] == "sub/b.md" and hits[0]["metadata"] == {"path": "sub/b.md"}


def test_a_malformed_line_is_named_and_the_good_lines_before_it_are_kept(workdir: Path) -> None:
    lines = (workdir / "docs.jsonl").read_text().splitlines()
    lines.insert(9, '{"id": "broken", "text": ')
    (workdir / "bad.jsonl").write_text("\n".join(lines) + "\n")
    result = run("index", "-c", "vecguard.toml", "bad.jsonl", "-q", cwd=workdir)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line, no traceback
    assert "bad.jsonl:10" in result.stderr and "not valid JSON" in result.stderr
    info = json.loads(run("info", "-c", "vecguard.toml", cwd=workdir).stdout)
    assert info["documents"] == 9


@pytest.mark.parametrize(
    ("args", "files", "message"),
    [
        (["index", "-c", "vecguard.toml", "nowhere.jsonl"], {}, "nowhere.jsonl: no such file"),
        (
            ["index", "-c", "vecguard.toml", "d.jsonl"],
            {"d.jsonl": '{"id": "a", "text": ""}\n'},
            "d.jsonl:1 (id 'a'): 'text'",
        ),
        (
            ["index", "-c", "vecguard.toml", "d.jsonl"],
            {"d.jsonl": '{"id": "a", "body": "x"}\n'},
            "unknown field 'body'",
        ),
        (["index", "-c", "vecguard.toml", "d.jsonl"], {"d.jsonl": '["a"]\n'}, "d.jsonl:1: each line must be an object"),
        (["search", "-c", "missing.toml", "q"], {}, "missing.toml' does not exist"),
        (
            ["search", "-c", "other.toml", "q"],
            {"other.toml": '[store]\nplugin = "qdrnt"\n'},
            "no store plugin named 'qdrnt'; found: chroma, faiss, memory, qdrant",
        ),
        (["search", "-c", "other.toml", "q"], {"other.toml": '[stroe]\nplugin = "faiss"\n'}, "unknown section [stroe]"),
        (
            ["search", "-c", "other.toml", "q"],
            {"other.toml": '[store]\nplugin = "faiss"\nnprob = 3\n'},
            "unknown option 'nprob'",
        ),
        (
            ["search", "-c", "other.toml", "q"],
            {"other.toml": "[chunking]\ntokens = 32\noverlap = 32\n"},
            "overlap must be",
        ),
        (["search", "-c", "vecguard.toml", "q", "--filter", '{"year": {"$gt": [1]}}'], {}, r"filter.year.$gt"),
        (["search", "-c", "vecguard.toml", "q", "--filter", "{year"], {}, "--filter is not valid JSON"),
    ],
)
def test_bad_input_is_one_line_naming_the_culprit_and_exit_status_2(
    workdir: Path, args: list[str], files: dict, message: str
) -> None:
    for name, content in files.items():
        (workdir / name).write_text(content)
    result = run(*args, cwd=workdir)
    assert result.returncode == 2, result.stdout
    error = result.stderr.strip()
    assert len(error.splitlines()) == 1, error
    assert message in error


def test_plugins_lists_the_built_ins_with_their_distribution(workdir: Path) -> None:
    listing = json.loads(run("plugins", "--json", cwd=workdir).stdout)
    found = {(p["kind"], p["name"], p["distribution"]) for p in listing["parts"]}
    assert {
        ("store", "faiss", "vecguard"),
        ("store", "chroma", "vecguard"),
        ("store", "qdrant", "vecguard"),
        ("store", "memory", "vecguard"),
        ("encoder", "sentence-transformers", "vecguard"),
        ("keyword", "bm25", "vecguard"),
        ("fuser", "rrf", "vecguard"),
        ("fuser", "dbsf", "vecguard"),
    } <= found
