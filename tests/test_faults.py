"""Faults, damaged files and a hostile command line: a collection never looks healthy when it is not, and the
command says what is wrong in one line with the exit status the README gives.

Real processes are killed at named points (VECGUARD_KILL_AT), real files are damaged byte by byte, a real
write limit stands in for a full disk. `vecguard check` must fail (exit 1) naming the file or record for every
damage; opening must refuse it in one line or repair it and answer exactly as the intact collection does.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import config, corpus, free_port, toml
from vecguard.cli import main

VECGUARD = [sys.executable, "-m", "vecguard.cli"]
QUERIES = ["ORD-2024-00017", "attacker code past the end of a buffer", "how plants make sugar from sunlight"]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The command in this process (the same entry point as the console script): exit status, stdout, stderr."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vecguard: "), err
    return lines[0]


def answers(capsys: pytest.CaptureFixture[str], cfg: Path) -> list[list[str]]:
    found = []
    for query in QUERIES:
        code, out, err = cli(capsys, "search", "-c", str(cfg), query, "--json", "-k", "5")
        assert code == 0, err
        found.append([hit["id"] for hit in json.loads(out)])
    return found


def write_config(folder: Path, index: Path, **tables: dict[str, Any]) -> Path:
    cfg = config("faiss", index, **tables)
    (folder / "vecguard.toml").write_text(toml(cfg))
    return folder / "vecguard.toml"


def write_jsonl(path: Path, documents: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in documents))
    return path


@pytest.fixture(scope="module")
def intact(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One collection of the shared corpus, its answers, and another collection of the same size."""
    base = tmp_path_factory.mktemp("intact")
    documents = write_jsonl(base / "docs.jsonl", corpus())
    cfg = write_config(base, base / "index")
    assert main(["index", "-c", str(cfg), str(documents), "-q"]) == 0
    other = base / "other"
    other.mkdir()
    shuffled = corpus()[::-1]  # the same chunks in another order: the same size, other row numbers
    assert (
        main(
            [
                "index",
                "-c",
                str(write_config(other, other / "index")),
                str(write_jsonl(other / "d.jsonl", shuffled)),
                "-q",
            ]
        )
        == 0
    )
    return {"base": base, "index": base / "index", "other": other / "index", "documents": documents}


@pytest.fixture
def copy(intact: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    shutil.copytree(intact["index"], tmp_path / "index")
    cfg = write_config(tmp_path, tmp_path / "index")
    if "expected" not in intact:
        intact["expected"] = answers(capsys, cfg)
    return {"index": tmp_path / "index", "config": cfg, "expected": intact["expected"], "other": intact["other"]}


def _sql(index: Path, statement: str) -> None:
    db = sqlite3.connect(index / "points.sqlite3")
    db.execute(statement)
    db.commit()
    db.close()


def _overwrite_a_page(index: Path) -> None:
    path = index / "points.sqlite3"
    pages = path.stat().st_size // 4096
    with open(path, "r+b") as f:
        f.seek((pages // 2) * 4096)
        f.write(random.Random(3).randbytes(4096))


def _flip_vector_bytes(index: Path) -> None:
    path = index / "index.faiss"
    data = bytearray(path.read_bytes())
    for offset in range(len(data) - 4000, len(data) - 100, 97):  # inside the stored vectors: it still parses
        data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def _foreign_index(index: Path, other: Path) -> None:
    for name in ("index.faiss", "index.json"):
        shutil.copy(other / name, index / name)


DAMAGE: dict[str, tuple[Callable[..., None], str]] = {
    "points.sqlite3 deleted": (lambda index, other: (index / "points.sqlite3").unlink(), "points.sqlite3 is missing"),
    "points.sqlite3 emptied": (
        lambda index, other: (index / "points.sqlite3").write_bytes(b""),
        "holds no points table",
    ),
    "a page of points.sqlite3 overwritten": (
        lambda index, other: _overwrite_a_page(index),
        "points.sqlite3 is damaged",
    ),
    "a payload that is not JSON": (
        lambda index, other: _sql(index, "UPDATE points SET payload = '{\"doc_id\": ' WHERE id = 'doc-03#0'"),
        "'doc-03#0'",
    ),
    "a payload that is a list": (
        lambda index, other: _sql(index, "UPDATE points SET payload = '[1, 2]' WHERE id = 'doc-03#0'"),
        "'doc-03#0'",
    ),
    "a payload without its fields": (
        lambda index, other: _sql(index, "UPDATE points SET payload = '{\"metadata\": {}}' WHERE id = 'doc-03#0'"),
        "'doc-03#0'",
    ),
    "index.faiss damaged": (lambda index, other: _flip_vector_bytes(index), "does not match the checksum"),
    "index.faiss and index.json of another collection": (_foreign_index, "belongs to another collection"),
    "manifest.json of the wrong shape": (lambda index, other: (index / "manifest.json").write_text("[]"), "manifest"),
    "manifest.json with counts of the wrong shape": (
        lambda index, other: (index / "manifest.json").write_text(
            json.dumps({**json.loads((index / "manifest.json").read_text()), "counts": "many"})
        ),
        "counts",
    ),
    "index.json of the wrong shape": (
        lambda index, other: (index / "index.json").write_text("[]"),
        "index.json is unreadable",
    ),
    "bm25-segments.json of the wrong shape": (
        lambda index, other: (index / "keyword" / "bm25-segments.json").write_text('{"settings": 1, "segments": []}'),
        "bm25",
    ),
    "a bm25 segment file cut short": (
        lambda index, other: [path.write_bytes(path.read_bytes()[:100]) for path in (index / "keyword").glob("*.seg")],
        "bm25",
    ),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_collection_fails_check_and_is_refused_or_repaired_never_answered_from(
    copy: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    damage: str,
) -> None:
    harm, named = DAMAGE[damage]
    harm(copy["index"], copy["other"])
    code, out, err = cli(capsys, "check", "-c", str(copy["config"]))
    assert code == 1, out + err
    assert named in out, out
    code, out, err = cli(capsys, "search", "-c", str(copy["config"]), QUERIES[1], "--json", "-k", "5")
    if code == 0:  # repaired (derived data rebuilt from the stored truth): the answers are the intact ones
        assert answers(capsys, copy["config"]) == copy["expected"]
    else:
        assert code == 2 and named in one_line(err), err


def test_a_keyword_index_saved_before_other_writes_catches_up_and_one_older_than_the_change_feed_is_rebuilt(
    copy: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    earlier = tmp_path / "keyword-before"
    shutil.copytree(copy["index"] / "keyword", earlier)
    replaced = dict(corpus()[5], text="Zephyrine barley loaves rise overnight in a cold cellar.")
    assert (
        cli(capsys, "index", "-c", str(copy["config"]), str(write_jsonl(tmp_path / "r.jsonl", [replaced])), "-q")[0]
        == 0
    )

    def restore_earlier() -> None:  # same number of chunks, the old text of doc-05
        shutil.rmtree(copy["index"] / "keyword")
        shutil.copytree(earlier, copy["index"] / "keyword")

    def finds_the_new_text() -> bool:
        code, out, err = cli(capsys, "search", "-c", str(copy["config"]), "zephyrine", "--mode", "keyword", "--json")
        return code == 0 and [hit["id"] for hit in json.loads(out)] == ["doc-05"]

    restore_earlier()  # what a process that saved before the write holds: the change feed names doc-05's chunks
    code, out, _ = cli(capsys, "check", "-c", str(copy["config"]))
    assert code == 0, out
    assert finds_the_new_text()

    restore_earlier()
    _sql(
        copy["index"],
        "UPDATE meta SET value = (SELECT value FROM meta WHERE key = 'generation') WHERE key = 'changes_from'",
    )
    code, out, _ = cli(capsys, "check", "-c", str(copy["config"]))
    assert code == 1 and "before the oldest change the store still lists" in out, out
    assert finds_the_new_text()
    assert cli(capsys, "check", "-c", str(copy["config"]))[0] == 0  # the rebuild was saved


def test_a_mistyped_path_is_refused_by_reads_and_nothing_is_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path, tmp_path / "indx")
    for command in (
        ["search", "-c", str(cfg), "anything"],
        ["info", "-c", str(cfg)],
        ["optimize", "-c", str(cfg)],
        [
            "eval",
            "-c",
            str(cfg),
            "--queries",
            str(write_jsonl(tmp_path / "q.jsonl", [{"id": "q", "text": "x"}])),
            "--exact",
        ],
    ):
        code, _, err = cli(capsys, *command)
        assert code == 2 and "there is no collection at" in one_line(err) and str(tmp_path / "indx") in err, (
            command,
            err,
        )
    code, out, _ = cli(capsys, "check", "-c", str(cfg))
    assert code == 1 and out.startswith("FAILED") and "there is no collection at" in out
    assert not (tmp_path / "indx").exists()


def test_a_reindex_killed_between_its_renames_is_finished_by_the_next_open_and_by_a_rerun(
    copy: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    for finish in ("search", "reindex"):
        killed = subprocess.run(
            [*VECGUARD, "reindex", "-c", str(copy["config"]), "-q"],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "VECGUARD_KILL_AT": "reindex.swap"},
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert not copy["index"].exists()  # killed with the old collection parked and the new one aside
        if finish == "search":
            assert answers(capsys, copy["config"]) == copy["expected"]
        else:
            code, out, err = cli(capsys, "reindex", "-c", str(copy["config"]), "-q")
            assert code == 0 and out.startswith("reindexed 20 documents"), out + err
        parked = [p.name for p in copy["index"].parent.iterdir() if p.name.startswith("index.")]
        assert parked == [] and cli(capsys, "check", "-c", str(copy["config"]))[0] == 0, parked


def test_a_migration_killed_while_verifying_is_finished_by_the_same_command(
    copy: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = tmp_path / "target.toml"
    target.write_text(toml(config("faiss", tmp_path / "copy")))
    command = ["migrate", "--from", str(copy["config"]), "--to", str(target), "-q", "--verify-queries", "5"]
    killed = subprocess.run(
        [*VECGUARD, *command],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "VECGUARD_KILL_AT": "migrate.verify"},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    code, _, err = cli(capsys, "search", "-c", str(target), "anything")
    assert code == 2 and "unfinished migration" in one_line(err)  # a copy not yet verified never answers
    code, out, err = cli(capsys, "migrate", *command[1:])
    assert code == 0 and "FAIL" not in out and "PASS queries" in out, out + err
    assert answers(capsys, target) == copy["expected"]


def test_a_full_disk_stops_indexing_in_one_line_and_the_rerun_ends_like_a_clean_run(
    copy: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = write_config(tmp_path, tmp_path / "fresh")
    documents = write_jsonl(tmp_path / "d.jsonl", corpus())

    def small_disk() -> None:  # every file this process writes stops growing at 96 KiB, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (96 * 1024, 96 * 1024))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    full = subprocess.run(
        [*VECGUARD, "index", "-c", str(cfg), str(documents), "-q"],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=small_disk,
        env={**os.environ, "VECGUARD_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert full.returncode == 2, full.stdout + full.stderr
    assert "everything committed before" in one_line(full.stderr)
    code, out, err = cli(capsys, "index", "-c", str(cfg), str(documents), "-q")
    assert code == 0 and "20 in the collection" in out, out + err
    assert answers(capsys, cfg) == copy["expected"] and cli(capsys, "check", "-c", str(cfg))[0] == 0


def test_bad_bytes_and_lone_surrogates_are_named_by_line_after_the_lines_before_them_are_kept(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = write_config(tmp_path, tmp_path / "index")
    good = [json.dumps(d).encode() + b"\n" for d in corpus()[:3]]
    cases = {
        b'{"id": "x", "text": "caf\xe9"}\n': ("bad.jsonl:4: not UTF-8 text (byte 0xe9", 3),
        b'{"id": "x", "text": "half \\ud800 a pair"}\n': (
            "'text' holds '\\ud800' at position 5, which is not valid Unicode",
            3,
        ),
        b'{"id": "\\udcff", "text": "t"}\n': ("'id' holds '\\udcff'", 3),
        b'{"id": "y", "text": "t", "metadata": {"k": "\\ud83d"}}\n': ("metadata 'k' holds", 3),
    }
    for line, (message, kept) in cases.items():
        shutil.rmtree(tmp_path / "index", ignore_errors=True)
        (tmp_path / "bad.jsonl").write_bytes(b"".join(good) + line + good[0])
        code, _, err = cli(capsys, "index", "-c", str(cfg), str(tmp_path / "bad.jsonl"), "-q")
        assert code == 2 and message in one_line(err), err
        code, out, _ = cli(capsys, "info", "-c", str(cfg))
        assert json.loads(out)["documents"] == kept
    code, _, err = cli(capsys, "search", "-c", str(cfg), "caf\udce9")  # argv bytes that were not UTF-8
    assert code == 2 and "not valid Unicode" in one_line(err)


@pytest.mark.parametrize(
    ("args", "files", "message"),
    [
        (
            ["index", "-c", "c.toml", "d.jsonl"],
            {"c.toml": '[store]\npath = "afile"\n', "afile": "x"},
            "cannot open the collection at",
        ),
        (
            ["index", "-c", "c.toml", "d.jsonl"],
            {"c.toml": '[encoder]\nmodel = "m"\n[store]\npath = "i"\n', "m/config.json": "{}"},
            "[encoder] cannot load the model in",
        ),
        (
            ["index", "-c", "c.toml", "d.jsonl"],
            {"c.toml": '[encoder]\ndevice = "gpu"\n[store]\npath = "i"\n'},
            "device 'gpu' is not",
        ),
        (
            ["index", "-c", "c.toml", "d.jsonl"],
            {"c.toml": '[encoder]\ndevice = "cuda:7"\n[store]\npath = "i"\n'},
            "device 'cuda:7'",
        ),
        (
            ["search", "-c", "c.toml", "q", "--filter", '{"a": ' * 5000 + "1" + "}" * 5000],
            {"c.toml": ""},
            "--filter nests too deeply",
        ),
        (
            ["search", "-c", "c.toml", "q", "--filter", '{"$not": ' * 40 + '{"a": 1}' + "}" * 40],
            {"c.toml": ""},
            "deeper than 32 levels",
        ),
        (["search", "-c", "c.toml", "q", "--filter", '{"a": "\\ud800"}'], {"c.toml": ""}, "not valid Unicode"),
        (["search", "-c", "c.toml"], {"c.toml": ""}, "the following arguments are required: query"),
    ],
)
def test_bad_environment_and_arguments_are_one_line_with_exit_status_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    files: dict[str, str],
    message: str,
) -> None:
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    write_jsonl(tmp_path / "d.jsonl", corpus()[:2])
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        capsys.readouterr()
        try:
            code = main(args)
        except SystemExit as exit:  # argparse's own mistakes leave through exit, with our one line
            code = exit.code
        err = capsys.readouterr().err
    finally:
        os.chdir(cwd)
    assert code == 2 and message in one_line(err), err


@pytest.mark.parametrize(
    ("args", "server", "message"),
    [
        (["--port", "70000"], "", "70000 is not a TCP port"),
        (["--host", "0.0.0.0"], "open_writes = true\n", "open_writes = true and no write token"),
    ],
)
def test_serve_refuses_what_it_cannot_do_safely_before_it_binds(
    tmp_path: Path, args: list[str], server: str, message: str
) -> None:
    (tmp_path / "c.toml").write_text(f"[server]\n{server}port = {free_port()}\n")
    try:  # in a process of its own: a server that started anyway must not hang the suite
        done = subprocess.run(
            [*VECGUARD, "serve", "-c", str(tmp_path / "c.toml"), *args], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"vecguard serve {' '.join(args)} started serving")
    assert done.returncode == 2 and message in one_line(done.stderr)


def test_output_closed_early_ends_quietly_without_a_traceback(tmp_path: Path) -> None:
    process = subprocess.Popen([*VECGUARD, "plugins"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # like `| head` that has read enough
    _, err = process.communicate(timeout=120)
    assert process.returncode == 141 and err == b"", err


def test_an_internal_error_has_its_own_status_and_points_to_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import vecguard.cli

    def broken(args: Any) -> int:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(vecguard.cli, "cmd_plugins", broken)
    code, _, err = cli(capsys, "plugins")
    assert code == 3 and "internal error (ZeroDivisionError: a bug); rerun with --debug" in one_line(err)
    code, _, err = cli(capsys, "--debug", "plugins")
    assert code == 3 and "Traceback" in err and err.strip().splitlines()[-1].startswith("vecguard: internal error")
