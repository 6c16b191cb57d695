"""Rebuild a collection from its stored texts with the current encoder.

Built aside in a sibling folder, then swapped in by renames, so old and new
vectors never share a collection and a failed rebuild leaves the old one as it was.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config, load_config
from .engine import Engine
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
    store = config.section("store")
    if store.get("path") is None:
        raise ConfigError(f"{config.source}: reindex rebuilds a saved collection; [store] has no path, so there is nothing to rebuild")
    keyword_path = config.section("keyword").get("path")
    live = Path(config.base_dir, store["path"])
    aside = live.with_name(live.name + ".reindexing")
    retired = live.with_name(live.name + ".retired")
    for leftover in (aside, retired):
        shutil.rmtree(leftover, ignore_errors=True)

    tables = config.section("store"), config.section("keyword")
    tables[0]["path"] = str(aside)
    if keyword_path is not None:
        tables[1]["path"] = str(Path(config.base_dir, keyword_path).with_name(Path(keyword_path).name + ".reindexing"))
    aside_config = Config({**config.tables, "store": tables[0], "keyword": tables[1]}, config.base_dir, config.source)

    started = time.perf_counter()
    with Engine(config, check_guard=False) as old:
        old_id = old.manifest.get("id")
        with Engine(aside_config) as new:
            new.add(old.documents(), progress=progress)
            documents, chunks, new_id = new.count(), new.count_chunks(), new.manifest.get("id")

    live.rename(retired)
    aside.rename(live)
    shutil.rmtree(retired, ignore_errors=True)
    if keyword_path is not None:
        keyword_live = Path(config.base_dir, keyword_path)
        shutil.rmtree(keyword_live, ignore_errors=True)
        Path(tables[1]["path"]).rename(keyword_live)
    return ReindexReport(documents, chunks, time.perf_counter() - started, old_id, new_id)
