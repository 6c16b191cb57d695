"""Rebuild a collection from its stored texts with the current encoder.

Built aside in a sibling folder (``<name>.reindexing``), then swapped in by
renames under a journal (`vecguard.swap`), so old and new vectors never share
a collection, a failed rebuild leaves the old one as it was, and a crash
between the renames is finished by the next open or the next run.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import swap
from .config import Config, load_config, resolve_path
from .engine import Engine, store_folder
from .errors import ConfigError


@dataclass(frozen=True)
class ReindexReport:
    documents: int
    chunks: int
    seconds: float
    old_manifest_id: str | None
    new_manifest_id: str | None


def reindex(config: str | Path | dict[str, Any] | Config, *, progress: Any = None) -> ReindexReport:
    config = load_config(config)
    live = store_folder(config)
    if live is None:
        raise ConfigError(
            f"{config.source}: reindex rebuilds a saved collection; [store] has no path, so there is nothing to rebuild"
        )
    keyword_live = resolve_path(config.section("keyword").get("path"), config.base_dir, "[keyword]")
    # A run killed between its renames left a complete new collection aside: it goes live before anything is cleared.
    swap.finish_interrupted(live)
    replacements = [swap.Replacement(live, _aside(live))]
    if keyword_live is not None:
        replacements.append(swap.Replacement(keyword_live, _aside(keyword_live)))
    for replacement in replacements:  # what a run that failed before its swap left behind
        shutil.rmtree(replacement.new, ignore_errors=True)

    tables = config.section("store"), config.section("keyword")
    tables[0]["path"] = str(replacements[0].new)
    if keyword_live is not None:
        tables[1]["path"] = str(replacements[1].new)
    aside_config = Config({**config.tables, "store": tables[0], "keyword": tables[1]}, config.base_dir, config.source)

    started = time.perf_counter()
    with Engine(config, check_guard=False, create=False) as old:
        old_id = old.manifest.get("id")
        # Held until the swap: another process's write waits (then fails, naming this run) rather than going into
        # the collection being retired; it sees the new one once it is live (CollectionReplacedError: reopen).
        with old.collection.locked():
            with Engine(aside_config) as new:
                new.add(old.documents(), progress=progress)
                documents, chunks, new_id = new.count(), new.count_chunks(), new.manifest.get("id")
            swap.replace(replacements)
    return ReindexReport(documents, chunks, time.perf_counter() - started, old_id, new_id)


def _aside(live: Path) -> Path:
    return live.with_name(live.name + ".reindexing")
