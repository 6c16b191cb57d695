"""Token windows: the overlap arithmetic, full coverage, exact rebuild, clamping to the model."""

from __future__ import annotations

from pathlib import Path

import pytest
from vecguard.chunking import TokenChunker, join_chunks


class WhitespaceTokens:
    """A tokenizer whose tokens are visible (words), so windows can be checked by hand."""

    max_tokens = 10

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        spans, start = [], None
        for i, ch in enumerate(text + " "):
            if ch.isspace() and start is not None:
                spans.append((start, i))
                start = None
            elif not ch.isspace() and start is None:
                start = i
        return spans


TEXT = "  " + " ".join(f"w{i}" for i in range(23)) + "  "


def test_windows_start_every_tokens_minus_overlap_tokens() -> None:
    chunks = TokenChunker(WhitespaceTokens(), tokens=6, overlap=2).split(TEXT)
    words = [c.text.split() for c in chunks]
    assert words[0] == ["w0", "w1", "w2", "w3", "w4", "w5"]
    assert words[1][:2] == ["w4", "w5"]  # two tokens of overlap
    assert [w[0] for w in words] == ["w0", "w4", "w8", "w12", "w16", "w20"]
    assert words[-1][-1] == "w22"
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_chunks_cover_the_whole_text_and_rebuild_it() -> None:
    chunks = TokenChunker(WhitespaceTokens(), tokens=5, overlap=1).split(TEXT)
    assert chunks[0].start == 0 and chunks[-1].end == len(TEXT)
    assert all(TEXT[c.start : c.end] == c.text for c in chunks)
    assert join_chunks([(c.start, c.end, c.text) for c in chunks]) == TEXT


def test_a_short_text_is_one_chunk() -> None:
    chunks = TokenChunker(WhitespaceTokens(), tokens=6, overlap=2).split("one two three")
    assert [(c.start, c.end, c.text) for c in chunks] == [(0, 13, "one two three")]


def test_a_window_larger_than_the_model_reads_is_clamped() -> None:
    chunker = TokenChunker(WhitespaceTokens(), tokens=256, overlap=32)
    assert chunker.tokens == 10
    assert chunker.settings()["configured_tokens"] == 256
    assert all(len(c.text.split()) <= 10 for c in chunker.split(TEXT))


@pytest.mark.parametrize("overlap", [0, 3])
def test_no_token_is_lost_between_windows(overlap: int) -> None:
    chunks = TokenChunker(WhitespaceTokens(), tokens=4, overlap=overlap).split(TEXT)
    seen = {w for c in chunks for w in c.text.split()}
    assert seen == {f"w{i}" for i in range(23)}


def test_splitting_a_batch_in_one_tokenizer_call_equals_splitting_each_text() -> None:
    from conftest import corpus
    from vecguard.registry import Registry

    encoder = Registry.discover().build("encoder", "sentence-transformers", {"batch_size": 8}, Path("."))
    texts = [d["text"] * 6 for d in corpus()] + ["", "naïve café — 東京 " * 200, "CVE-2022-24045"]
    chunker = TokenChunker(encoder, tokens=64, overlap=8)
    batched = chunker.split_many(texts)
    assert batched == [chunker.split(text) for text in texts]
    assert sum(len(chunks) for chunks in batched) > 3 * len(texts)  # long enough to need many windows
