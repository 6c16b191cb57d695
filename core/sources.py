"""Documents to index from a path: a JSONL file ({"id", "text", "metadata"} per line) or a folder of .txt/.md files.

Every bad line or file is a DocumentError naming the file (and line) and the fix; the documents before it are yielded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from .errors import DocumentError
from .protocols import Document


def read_source(source: Path) -> Iterator[Document]:
    """Documents from a JSONL file ({"id", "text", "metadata"} per line) or a folder of .txt/.md files."""
    from .ingest import validate_document

    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in (".txt", ".md"))
        if not files:
            raise DocumentError(f"{source}: no .txt or .md files in this folder")
        for path in files:
            relative = path.relative_to(source).as_posix()
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise DocumentError(f"{path}: not UTF-8 text ({exc}); convert it or remove it") from exc
            document = Document(relative, text, {"path": relative})
            validate_document(document, str(path))
            yield document
        return
    if not source.is_file():
        raise DocumentError(f"{source}: no such file or folder; give a JSONL file or a folder of .txt/.md files")
    # Read as bytes and decoded line by line: a bad byte is named by its line, and every line before it is indexed.
    with open(source, "rb") as lines:
        for number, raw in enumerate(lines, start=1):
            where = f"{source}:{number}"
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DocumentError(
                    f"{where}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                    f"convert the file to UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DocumentError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
            except RecursionError:
                raise DocumentError(f"{where}: the JSON nests too deeply; documents are flat objects") from None
            if not isinstance(record, dict):
                raise DocumentError(
                    f'{where}: each line must be an object like {{"id": ..., "text": ..., "metadata": {{...}}}}'
                )
            unknown = sorted(set(record) - {"id", "text", "metadata"})
            if unknown:
                raise DocumentError(f"{where}: unknown field {unknown[0]!r}; fields are id, text, metadata")
            metadata = record.get("metadata", {})
            document = Document(record.get("id"), record.get("text"), metadata if metadata is not None else {})
            validate_document(document, where)
            yield document


def count_lines(source: Path) -> int | None:
    """Non-blank lines of a JSONL file (a progress bar's total); None for a folder."""
    if not source.is_file():
        return None
    with open(source, "rb") as f:
        return sum(1 for line in f if line.strip())
