"""Token-window chunking with the encoder's own tokenizer."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .protocols import Encoder, TokenizesInBatches

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chunk:
    """A window of a document: ``text == document_text[start:end]``."""

    index: int
    start: int
    end: int
    text: str


class TokenChunker:
    """Windows of ``tokens`` encoder tokens that overlap by ``overlap`` tokens.

    Window ``i`` starts at token ``i * (tokens - overlap)``. The first chunk
    starts at character 0 and the last ends at the end of the text, so the
    chunks cover the whole document and it can be rebuilt from them. A window
    never exceeds what the encoder reads in one pass (``encoder.max_tokens``):
    a longer setting is clamped, so no token is silently truncated away.
    """

    def __init__(self, encoder: Encoder, tokens: int, overlap: int) -> None:
        self._encoder = encoder
        self.configured_tokens = tokens
        self.tokens = min(tokens, encoder.max_tokens)
        self.overlap = min(overlap, self.tokens - 1)
        if self.tokens < tokens:
            log.info("chunk size %d tokens clamped to the encoder's %d content tokens", tokens, self.tokens)

    def settings(self) -> dict[str, Any]:
        return {
            "method": "token-window",
            "tokens": self.tokens,
            "overlap": self.overlap,
            "configured_tokens": self.configured_tokens,
        }

    def split(self, text: str) -> list[Chunk]:
        return self._windows(text, self._encoder.token_spans(text))

    def split_many(self, texts: list[str]) -> list[list[Chunk]]:
        """``split`` of each text, tokenised in one call when the encoder offers ``token_spans_batch``."""
        if isinstance(self._encoder, TokenizesInBatches):
            spans = self._encoder.token_spans_batch(texts)
        else:
            spans = [self._encoder.token_spans(text) for text in texts]
        return [self._windows(text, text_spans) for text, text_spans in zip(texts, spans)]

    def _windows(self, text: str, spans: list[tuple[int, int]]) -> list[Chunk]:
        if len(spans) <= self.tokens:
            return [Chunk(0, 0, len(text), text)]
        step = self.tokens - self.overlap
        chunks: list[Chunk] = []
        first = 0
        while True:
            last = min(first + self.tokens, len(spans)) - 1
            is_last = last == len(spans) - 1
            start = 0 if first == 0 else spans[first][0]
            end = len(text) if is_last else spans[last][1]
            chunks.append(Chunk(len(chunks), start, end, text[start:end]))
            if is_last:
                return chunks
            first += step


def join_chunks(chunks: list[tuple[int, int, str]]) -> str:
    """Rebuild a document from its (start, end, text) chunks, in order."""
    text = ""
    covered = 0
    for start, end, chunk_text in sorted(chunks):
        text += chunk_text[covered - start :] if covered > start else chunk_text
        covered = max(covered, end)
    return text
