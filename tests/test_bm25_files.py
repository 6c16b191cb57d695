"""The bm25 plugin's files: incremental saves replayed last write wins, merges, loads by another process, damage named,
and a save killed at any step leaving the previous save loadable."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import sys
from pathlib import Path

import pytest
from vecguard.errors import StorageError
from vecguard.plugins.bm25 import BM25Index
from vecguard.plugins.bm25 import merge as merge_policy
from vecguard.plugins.bm25 import segment as segment_file
from vecguard.plugins.bm25.files import MANIFEST
from vecguard.protocols import SavesIncrementally

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.corpora import cwe_passages  # noqa: E402


@pytest.fixture
def small_merges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Merges at a few chunks instead of a thousand, so a test of hundreds of chunks goes through several levels,
    each merge in slices of a few postings and documents, as at a million chunks."""
    monkeypatch.setattr(merge_policy, "FLOOR", 8)
    monkeypatch.setattr(merge_policy, "FANOUT", 3)
    monkeypatch.setattr(merge_policy, "POSTINGS_AT_ONCE", 50)
    monkeypatch.setattr(merge_policy, "DOCS_AT_ONCE", 7)


def _passages(n: int) -> list[dict]:
    return list(itertools.islice(cwe_passages(), n))


def _queries(passages: list[dict]) -> list[str]:
    return (
        [p["text"].split(":")[0] for p in passages[:15]]  # CVE ids
        + [" ".join(p["text"].split()[:6]) for p in passages[-15:]]
        + ["buffer overflow overflow", "the the", "xyzzy-404 unknown"]
    )


def _answers(index: BM25Index, queries: list[str]) -> list:
    return [(index.search(q, 20), index.exact_matches(q, 10)) for q in queries]


def _assert_same_answers(got: BM25Index, want: BM25Index, queries: list[str]) -> None:
    for query, (got_search, got_exact), (want_search, want_exact) in zip(
        queries, _answers(got, queries), _answers(want, queries)
    ):
        for found, expected in ((got_search, want_search), (got_exact, want_exact)):
            assert [key for key, _ in found] == [key for key, _ in expected], query
            assert [s for _, s in found] == pytest.approx([s for _, s in expected], rel=1e-9), query


def _segment_files(directory: Path) -> set[str]:
    return {path.name for path in directory.glob("*.seg")}


def _manifest(directory: Path) -> dict:
    return json.loads((directory / MANIFEST).read_text())


def test_the_index_saves_incrementally_and_an_id_given_twice_keeps_its_last_text() -> None:
    index = BM25Index()
    assert isinstance(index, SavesIncrementally)
    index.add(["a", "a", "b", "c", "d"], ["first words", "second words", "other", "more text", "yet more"])
    index.delete(["b", "b"])
    assert index.count() == 3 and index.ids() == {"a", "c", "d"}
    assert [key for key, _ in index.search("second", 5)] == ["a"] and index.search("first", 5) == []


def test_saved_changes_load_with_rank_bm25s_scores_through_deletes_replacements_and_merges(
    tmp_path: Path, small_merges: None
) -> None:
    passages = _passages(900)
    queries = _queries(passages)
    writer, reference = BM25Index(), BM25Index(implementation="rank-bm25")
    rng = random.Random(5)
    merged_files_seen = set()
    for token in range(1, 61):
        changed = []
        for _ in range(rng.choice([1, 2, 5, 20, 60])):
            passage = rng.choice(passages)
            changed.append(passage["id"])
            if rng.random() < 0.25:
                for index in (writer, reference):
                    index.delete([passage["id"]])
            else:
                text = passage["text"] if rng.random() < 0.7 else passage["text"].upper() + " replaced"
                for index in (writer, reference):
                    index.add([passage["id"]], [text])
        writer.save_changes(tmp_path, changed, token)
        merged_files_seen |= _segment_files(tmp_path)
        if token % 15 == 0:
            for implementation in ("postings", "rank-bm25"):
                loaded = BM25Index(implementation=implementation)
                assert loaded.load(tmp_path)
                assert loaded.count() == reference.count() and loaded.ids() == reference.ids()
                _assert_same_answers(loaded, reference, queries)
            assert writer.saved_token(tmp_path) == token
    _assert_same_answers(writer, reference, queries)
    manifest = _manifest(tmp_path)
    assert len(merged_files_seen) > 60  # merges wrote files beyond one a save...
    assert len(manifest["segments"]) < 12  # ...and keep them few
    assert _segment_files(tmp_path) == {entry["file"] for entry in manifest["segments"]}  # merged-away files removed


def test_a_process_that_loaded_earlier_catches_up_and_saves_on_top_of_another_processes_saves(tmp_path: Path) -> None:
    passages = _passages(300)
    queries = _queries(passages)
    first, reference = BM25Index(), BM25Index(implementation="rank-bm25")
    for index in (first, reference):
        index.add([p["id"] for p in passages[:200]], [p["text"] for p in passages[:200]])
    first.save(tmp_path)
    second = BM25Index()
    assert second.load(tmp_path)

    # The first process replaces, deletes and adds; it saves those ids.
    changed = [p["id"] for p in passages[:10]] + [p["id"] for p in passages[200:240]]
    for index in (first, reference):
        index.delete([p["id"] for p in passages[:5]])
        index.add([p["id"] for p in passages[5:10]], ["replaced " + p["text"][::-1] for p in passages[5:10]])
        index.add([p["id"] for p in passages[200:240]], [p["text"] for p in passages[200:240]])
    first.save_changes(tmp_path, changed, 1)

    # The second never reloads: it catches up with the same calls, then changes other ids and saves those only.
    second.delete([p["id"] for p in passages[:5]])
    second.add([p["id"] for p in passages[5:10]], ["replaced " + p["text"][::-1] for p in passages[5:10]])
    second.add([p["id"] for p in passages[200:240]], [p["text"] for p in passages[200:240]])
    for index in (second, reference):
        index.delete([passages[6]["id"], passages[210]["id"]])
        index.add([p["id"] for p in passages[240:]], [p["text"] for p in passages[240:]])
    second.save_changes(tmp_path, [passages[6]["id"], passages[210]["id"]] + [p["id"] for p in passages[240:]], 2)

    third = BM25Index()
    assert third.load(tmp_path) and third.saved_token(tmp_path) == 2
    assert third.ids() == reference.ids()
    _assert_same_answers(third, reference, queries)
    _assert_same_answers(second, reference, queries)


def test_small_saves_write_small_files_and_leave_the_large_one_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(merge_policy, "FLOOR", 64)  # 2,000 chunks are then two levels above a save of one
    passages = _passages(2020)
    index = BM25Index()
    index.add([p["id"] for p in passages[:2000]], [p["text"] for p in passages[:2000]])
    index.save(tmp_path)
    (large,) = tmp_path.glob("*.seg")
    written = large.stat()
    for token, passage in enumerate(passages[2000:2020], 1):
        index.add([passage["id"]], [passage["text"]])
        index.save_changes(tmp_path, [passage["id"]], token)
    assert large.stat().st_mtime_ns == written.st_mtime_ns  # not rewritten, not merged
    small = [path.stat().st_size for path in tmp_path.glob("*.seg") if path != large]
    assert 1 < len(small) < 20 and max(small) < 64 * 1024 < written.st_size  # the small ones merged among themselves
    assert _loaded(tmp_path).count() == 2020


def test_save_replaces_everything_and_records_no_token_until_save_changes(tmp_path: Path) -> None:
    passages = _passages(60)
    index = BM25Index()
    index.add([p["id"] for p in passages[:30]], [p["text"] for p in passages[:30]])
    for token in (1, 2, 3):
        index.add([passages[30 + token]["id"]], [passages[30 + token]["text"]])
        index.save_changes(tmp_path, [passages[30 + token]["id"]], token)
    assert index.saved_token(tmp_path) == 3 and len(_segment_files(tmp_path)) == 3  # the first one saved everything
    index.save(tmp_path)
    assert index.saved_token(tmp_path) is None and len(_segment_files(tmp_path)) == 1
    index.save_changes(tmp_path, [], 7)  # records the token, writes nothing else
    assert index.saved_token(tmp_path) == 7 and len(_segment_files(tmp_path)) == 1
    assert BM25Index(k1=1.2).saved_token(tmp_path) is None  # saved with other settings: nothing for it
    assert BM25Index().saved_token(tmp_path / "nowhere") is None


def test_a_complete_save_of_a_loaded_and_changed_index_holds_exactly_its_live_chunks(tmp_path: Path) -> None:
    passages = _passages(400)
    queries = _queries(passages)
    reference = BM25Index(implementation="rank-bm25")
    first = BM25Index()
    for index in (first, reference):
        index.add([p["id"] for p in passages[:250]], [p["text"] for p in passages[:250]])
    first.save(tmp_path / "first")
    changed = BM25Index()
    assert changed.load(tmp_path / "first")
    for index in (changed, reference):  # saved chunks deleted and replaced, chunks added, some of those deleted
        index.delete([p["id"] for p in passages[:250:4]])
        index.add([p["id"] for p in passages[1:250:4]], [p["text"][::-1] for p in passages[1:250:4]])
        index.add([p["id"] for p in passages[250:]], [p["text"] for p in passages[250:]])
        index.delete([p["id"] for p in passages[250::3]] + [p["id"] for p in passages[1:100:4]])
    changed.save(tmp_path / "second")
    assert len(_segment_files(tmp_path / "second")) == 1
    for index in (changed, _loaded(tmp_path / "second")):  # the saver now reads that file too
        assert index.count() == reference.count() and index.ids() == reference.ids()
        _assert_same_answers(index, reference, queries)


def test_an_earlier_versions_bm25_json_loads_as_nothing_saved_and_the_next_save_removes_it(tmp_path: Path) -> None:
    (tmp_path / "bm25.json").write_text(json.dumps({"settings": BM25Index().settings(), "tokens": {"a": ["x"]}}))
    index = BM25Index()
    assert index.load(tmp_path) is False  # the engine rebuilds it from the stored texts, once
    index.add(["a"], ["x"])
    index.save(tmp_path)
    assert not (tmp_path / "bm25.json").exists() and BM25Index().load(tmp_path)


def _saved(tmp_path: Path) -> BM25Index:
    index = BM25Index()
    passages = _passages(100)
    index.add([p["id"] for p in passages], [p["text"] for p in passages])
    index.save(tmp_path)
    return index


def _flip_a_byte_of(path: Path, array: str) -> None:
    header, length = segment_file._header(path)
    data = bytearray(path.read_bytes())
    data[segment_file._data_start(length) + header["arrays"][array]["offset"]] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("harm", "named"),
    [
        (lambda d, seg: (d / MANIFEST).write_text('{"settings": 1, "segments": []}'), MANIFEST),
        (lambda d, seg: (d / MANIFEST).write_text("{"), MANIFEST),
        (lambda d, seg: seg.write_bytes(seg.read_bytes()[: seg.stat().st_size // 2]), ".seg"),
        (lambda d, seg: seg.write_bytes(b"not a segment"), ".seg"),
        (lambda d, seg: _flip_a_byte_of(seg, "term_hi"), ".seg"),  # an array a load reads whole: checked
        (lambda d, seg: seg.unlink(), ".seg"),
    ],
    ids=["manifest of the wrong shape", "manifest not JSON", "segment cut short", "not a segment", "bit flip", "gone"],
)
def test_a_damaged_file_raises_a_storage_error_naming_it(tmp_path: Path, harm, named: str) -> None:
    _saved(tmp_path)
    segment = next(tmp_path.glob("*.seg"))
    harm(tmp_path, segment)
    with pytest.raises(StorageError, match=named.replace(".", r"\.")):
        BM25Index().load(tmp_path)


def test_a_damaged_save_is_replaced_by_a_complete_one_at_the_next_save_changes(tmp_path: Path) -> None:
    index = _saved(tmp_path)
    (tmp_path / MANIFEST).write_text("{")
    index.save_changes(tmp_path, [], 4)
    loaded = BM25Index()
    assert loaded.load(tmp_path) and loaded.count() == index.count() and loaded.saved_token(tmp_path) == 4


def _kill_at(call: int, save) -> bool:
    """Run ``save`` in a child process killed (SIGKILL) just before its ``call``-th fsync or rename; whether it was."""
    pid = os.fork()
    if pid == 0:  # the child: no cleanup handler runs after a SIGKILL, as after a power cut or an OOM kill
        try:
            calls = itertools.count(1)

            def killing(real):
                def wrapper(*args, **kwargs):
                    if next(calls) == call:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return real(*args, **kwargs)

                return wrapper

            os.fsync, os.replace = killing(os.fsync), killing(os.replace)
            save()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks a child to kill it")
def test_a_save_killed_at_any_step_leaves_the_previous_save_loadable_with_its_token(
    tmp_path: Path, small_merges: None
) -> None:
    passages = _passages(120)
    queries = _queries(passages)
    writer = BM25Index()
    for token in range(1, 6):  # a few saves, so the next one merges
        batch = passages[10 * token : 10 * token + 10]
        writer.add([p["id"] for p in batch], [p["text"] for p in batch])
        writer.save_changes(tmp_path, [p["id"] for p in batch], token)
    before = _answers(writer, queries)
    changed = [p["id"] for p in passages[60:75]] + [passages[12]["id"]]
    writer.add([p["id"] for p in passages[60:75]], [p["text"] for p in passages[60:75]])
    writer.delete([passages[12]["id"]])
    after = _answers(writer, queries)

    steps = 0
    for call in itertools.count(1):
        directory = tmp_path / f"kill-{call}"
        _copy(tmp_path, directory)
        if not _kill_at(call, lambda d=directory: writer.save_changes(d, changed, 6)):
            break  # the save ran to the end: every step has been killed once
        steps += 1
        loaded = BM25Index()
        assert loaded.load(directory), call
        token = loaded.saved_token(directory)
        assert token in (5, 6), call  # killed before the manifest's rename: the previous save; after: this one
        assert _answers(loaded, queries) == (before if token == 5 else after), call
        writer.save_changes(directory, changed, 6)  # the next save goes through and removes what the kill left
        assert {p.name for p in directory.iterdir()} == {MANIFEST} | {
            e["file"] for e in _manifest(directory)["segments"]
        }
        assert _answers(_loaded(directory), queries) == after
    assert steps >= 6  # segment file, merged file, folder, manifest temp file, rename, folder


def _loaded(directory: Path) -> BM25Index:
    index = BM25Index()
    assert index.load(directory)
    return index


def _copy(source: Path, target: Path) -> None:
    target.mkdir()
    for path in source.iterdir():
        if path.is_file():
            (target / path.name).write_bytes(path.read_bytes())
