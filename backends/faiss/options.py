"""The ``[store] faiss`` options, checked once into a frozen ``FaissOptions``.

Options (``[store]``):
    path           folder (none: in memory only)
    index          "auto" (exact Flat while small; once ``ivf_threshold`` vectors make an ANN
                   index worthwhile, IVF or HNSW32, whichever reaches the recall target at the
                   lower latency) or any FAISS factory string ("HNSW32", "IVF256,SQ8")
    auto_candidates  the ANN kinds "auto" builds and compares: ["IVF", "HNSW"] (default), or one
                   of them (["IVF"] builds one candidate instead of two: at 1M vectors IVF4000,Flat
                   built in 67 s and HNSW32 in 101 s, benchmarks/results/faiss_indexes.md)
    nprobe         IVF cells searched (default: tuned to ``target_recall`` when the index is built)
    target_recall  recall@10 against exact search that the tuned nprobe must reach (default 0.95)
    ef_search      HNSW search breadth (default: tuned to ``target_recall`` when the index is built)
    ivf_threshold  vectors at which "auto" switches from Flat to an ANN index (default 50000)
    query_sample   the newest served query vectors kept in the folder (queries.sqlite3; vectors,
                   never texts) to measure recall on and retune nprobe / ef_search to
                   ``target_recall`` (default 1000; 0: keep none, tune on query-like probes only)
    on_disk_payload  false (default): every point's id and payload are also held in memory,
                   as one compact JSON record each, built at the first search, so a
                   search reads its hits without touching SQLite (Qdrant's default too);
                   true: each search reads its hits from SQLite (less memory, slower)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vecguard.config import is_positive_int, resolve_path, take_options
from vecguard.errors import ConfigError


@dataclass(frozen=True)
class FaissOptions:
    """What a FaissStore was asked for, besides its folder."""

    index: str = "auto"
    nprobe: int | None = None
    target_recall: float = 0.95
    ef_search: int | None = None
    ivf_threshold: int = 50_000
    on_disk_payload: bool = False
    query_sample: int = 1000
    auto_candidates: Sequence[str] = ("IVF", "HNSW")


# The table's keys and defaults: FaissOptions' own, plus the folder; a TOML list for the candidates.
DEFAULTS: dict[str, Any] = {"path": None, **asdict(FaissOptions()), "auto_candidates": ["IVF", "HNSW"]}


def parse(options: Mapping[str, Any], base_dir: Path) -> tuple[Path | None, FaissOptions]:
    """The folder and options of a ``[store] faiss`` table; every mistake is a ConfigError naming the key."""
    opts = take_options("[store] faiss", options, DEFAULTS)
    if not isinstance(opts["index"], str) or not opts["index"]:
        raise ConfigError(f'[store] faiss index must be "auto" or a FAISS factory string, got {opts["index"]!r}')
    for key in ("nprobe", "ef_search", "ivf_threshold"):
        value = opts[key]
        if value is not None and not is_positive_int(value):
            raise ConfigError(f"[store] faiss {key} must be a whole number >= 1, got {value!r}")
    sample = opts["query_sample"]
    if not isinstance(sample, int) or isinstance(sample, bool) or sample < 0:
        raise ConfigError(
            f"[store] faiss query_sample must be a whole number >= 0 (served query vectors kept; 0: none), "
            f"got {sample!r}"
        )
    if not isinstance(opts["on_disk_payload"], bool):
        raise ConfigError(f"[store] faiss on_disk_payload must be true or false, got {opts['on_disk_payload']!r}")
    kinds = opts["auto_candidates"]
    if (
        not isinstance(kinds, list)
        or not kinds
        or len(set(kinds)) != len(kinds)
        or not all(kind in ("IVF", "HNSW") for kind in kinds)
    ):
        raise ConfigError(
            f'[store] faiss auto_candidates must list "IVF", "HNSW" or both, like ["IVF", "HNSW"], got {kinds!r}'
        )
    target = opts["target_recall"]
    if not isinstance(target, (int, float)) or isinstance(target, bool) or not 0 < target <= 1:
        raise ConfigError(
            "[store] faiss target_recall must be a number in (0, 1], like 0.95 (recall@10 against exact search), "
            f"got {target!r}"
        )
    return resolve_path(opts["path"], base_dir, "[store] faiss"), FaissOptions(
        index=opts["index"],
        nprobe=opts["nprobe"],
        target_recall=float(target),
        ef_search=opts["ef_search"],
        ivf_threshold=opts["ivf_threshold"],
        on_disk_payload=opts["on_disk_payload"],
        query_sample=sample,
        auto_candidates=tuple(kinds),
    )
