"""One TOML file chooses every part; code that uses the engine never changes.

    [encoder]   plugin = "sentence-transformers"   (plus the plugin's own keys)
    [store]     plugin = "faiss", path = "data/index", lock_timeout = 30 (seconds a writer waits for another), ...
    [keyword]   plugin = "bm25", ...
    [fusion]    plugin = "dbsf" (or "rrf" with k = 60), depth = 100, weights = {dense = 1.0, keyword = 1.0}
    [chunking]  tokens = 256, overlap = 32, batch_documents = "auto" (64, or the encoder's batch if larger)
    [guard]     mode = "enforce", min_mean_cosine = 0.99, min_cosine = 0.98
    [server]    host, port, max_request_bytes, max_k, max_query_chars, max_documents,
                write_token_env (the environment variable holding the bearer token for writes),
                open_writes (true lets writes in without a token), header_timeout, max_header_bytes, max_connections

Relative paths are resolved against the folder of the config file.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULTS: dict[str, dict[str, Any]] = {
    "encoder": {"plugin": "sentence-transformers"},
    "store": {"plugin": "faiss", "lock_timeout": 30},
    "keyword": {"plugin": "bm25"},
    "fusion": {"plugin": "dbsf", "depth": 100, "weights": {"dense": 1.0, "keyword": 1.0}},
    "chunking": {"tokens": 256, "overlap": 32, "batch_documents": "auto"},
    "guard": {"mode": "enforce", "min_mean_cosine": 0.99, "min_cosine": 0.98},
    "server": {
        "host": "127.0.0.1",
        "port": 8000,
        "max_request_bytes": 16 * 1024 * 1024,
        "max_k": 100,
        "max_query_chars": 4096,
        "max_documents": 1000,
        "write_token_env": "",
        "open_writes": False,
        "header_timeout": 10,
        "max_header_bytes": 16 * 1024,
        "max_connections": 1024,
    },
}
SIGNALS = ("dense", "keyword")
ENGINE_KEYS = {"store": ("lock_timeout",)}  # keys the engine reads in a plugin's section, never passed to the plugin
GUARD_MODES = ("enforce", "warn")


@dataclass(frozen=True)
class Config:
    """A validated configuration; ``section(name)`` returns a copy of one table."""

    tables: dict[str, dict[str, Any]]
    base_dir: Path
    source: str

    def section(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.tables[name])

    def plugin_options(self, kind_section: str, engine_keys: Iterable[str] = ()) -> tuple[str, dict[str, Any]]:
        """(plugin name, the keys meant for the plugin) of a section: without ``engine_keys``, nor the keys the
        engine always reads there (``[store] lock_timeout``)."""
        table = self.section(kind_section)
        name = table.pop("plugin")
        for key in (*engine_keys, *ENGINE_KEYS.get(kind_section, ())):
            table.pop(key, None)
        return name, table

    @property
    def fusion_depth(self) -> int:
        return self.tables["fusion"]["depth"]

    @property
    def fusion_weights(self) -> dict[str, float]:
        return dict(self.tables["fusion"]["weights"])


def load_config(source: str | Path | Mapping[str, Any] | Config) -> Config:
    """Read a TOML file path or a dict into a validated Config."""
    if isinstance(source, Config):
        return source
    if isinstance(source, Mapping):
        return _validated(dict(source), Path.cwd(), "<dict>")
    path = Path(source)
    if not path.is_file():
        raise ConfigError(
            f"config file {str(path)!r} does not exist; pass the path of a TOML file (see README, 'Config')"
        )
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text: {exc}") from exc
    return _validated(raw, path.resolve().parent, str(path))


def _validated(raw: dict[str, Any], base_dir: Path, source: str) -> Config:
    tables = _merged_tables(raw, source)
    _check_store(source, tables["store"])
    _check_chunking(source, tables["chunking"])
    _check_fusion(source, tables["fusion"])
    _check_guard(source, tables["guard"])
    _check_server(source, tables["server"])
    return Config(tables=tables, base_dir=base_dir, source=source)


def _merged_tables(raw: dict[str, Any], source: str) -> dict[str, dict[str, Any]]:
    """Every section's defaults with the given keys over them; an unknown section or a missing plugin name raises."""
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise ConfigError(
            f"{source}: unknown section [{unknown[0]}]; sections are {', '.join('[' + s + ']' for s in DEFAULTS)}"
        )
    tables: dict[str, dict[str, Any]] = {}
    for name, defaults in DEFAULTS.items():
        given = raw.get(name, {})
        if not isinstance(given, dict):
            raise ConfigError(f"{source}: [{name}] must be a table, got {given!r}")
        table = copy.deepcopy(defaults)
        table.update(copy.deepcopy(given))
        tables[name] = table
        if "plugin" in defaults and (not isinstance(table["plugin"], str) or not table["plugin"]):
            raise ConfigError(
                f"{source}: [{name}] plugin must be a plugin name (see `vecguard plugins`), got {table['plugin']!r}"
            )

    fusion_given = raw.get("fusion", {})
    if "k" in fusion_given and "plugin" not in fusion_given:
        tables["fusion"]["plugin"] = (
            "rrf"  # k is RRF's constant: such a config was written for RRF, the earlier default
        )
    return tables


def _check_store(source: str, store: dict[str, Any]) -> None:
    timeout = store["lock_timeout"]
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 <= timeout <= 86400:
        raise ConfigError(
            f"{source}: [store] lock_timeout must be the seconds a writer waits for another, from 0 to 86400, "
            f"got {timeout!r}"
        )


def _check_chunking(source: str, chunking: dict[str, Any]) -> None:
    _check_keys(source, "chunking", chunking, DEFAULTS["chunking"])
    _require_positive_int(source, "chunking", "tokens", chunking["tokens"])
    documents = chunking["batch_documents"]
    if documents != "auto" and not is_positive_int(documents):
        raise ConfigError(
            f'{source}: [chunking] batch_documents must be "auto" or a whole number >= 1, got {documents!r}'
        )
    overlap = chunking["overlap"]
    if not isinstance(overlap, int) or isinstance(overlap, bool) or not 0 <= overlap < chunking["tokens"]:
        raise ConfigError(
            f"{source}: [chunking] overlap must be a whole number from 0 "
            f"to tokens - 1 ({chunking['tokens'] - 1}), got {overlap!r}"
        )


def _check_fusion(source: str, fusion: dict[str, Any]) -> None:
    """Checks depth and weights, and fills in a weight of 1.0 for a signal not given (the table is changed)."""
    _require_positive_int(source, "fusion", "depth", fusion["depth"])
    weights = fusion["weights"]
    if not isinstance(weights, dict) or set(weights) - set(SIGNALS):
        raise ConfigError(
            f"{source}: [fusion] weights must be a table with keys among {', '.join(SIGNALS)}, got {weights!r}"
        )
    for signal, weight in weights.items():
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
            raise ConfigError(f"{source}: [fusion] weights.{signal} must be a number >= 0, got {weight!r}")
    fusion["weights"] = {s: float(weights.get(s, 1.0)) for s in SIGNALS}


def _check_guard(source: str, guard: dict[str, Any]) -> None:
    _check_keys(source, "guard", guard, DEFAULTS["guard"])
    if guard["mode"] not in GUARD_MODES:
        raise ConfigError(f"{source}: [guard] mode must be one of {', '.join(GUARD_MODES)}, got {guard['mode']!r}")
    for key in ("min_mean_cosine", "min_cosine"):
        value = guard[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not -1.0 <= value <= 1.0:
            raise ConfigError(f"{source}: [guard] {key} must be a cosine between -1 and 1, got {value!r}")


def _check_server(source: str, server: dict[str, Any]) -> None:
    _check_keys(source, "server", server, DEFAULTS["server"])
    for key in (
        "port",
        "max_request_bytes",
        "max_k",
        "max_query_chars",
        "max_documents",
        "max_header_bytes",
        "max_connections",
    ):
        _require_positive_int(source, "server", key, server[key])
    timeout = server["header_timeout"]
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout <= 3600:
        raise ConfigError(
            f"{source}: [server] header_timeout must be seconds, more than 0 and at most 3600, got {timeout!r}"
        )
    if not isinstance(server["open_writes"], bool):
        raise ConfigError(f"{source}: [server] open_writes must be true or false, got {server['open_writes']!r}")
    if server["port"] > 65535:
        raise ConfigError(f"{source}: [server] port must be from 1 to 65535, got {server['port']!r}")
    for key in ("host", "write_token_env"):
        if not isinstance(server[key], str):
            raise ConfigError(f"{source}: [server] {key} must be a string, got {server[key]!r}")


def _check_keys(source: str, section: str, table: Mapping[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {unknown[0]!r} in [{section}]; known keys: {', '.join(sorted(allowed))}"
        )


def is_positive_int(value: Any) -> bool:
    """A whole number >= 1 (True is not one), as counts in a config must be."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _require_positive_int(source: str, section: str, key: str, value: Any) -> None:
    if not is_positive_int(value):
        raise ConfigError(f"{source}: [{section}] {key} must be a whole number >= 1, got {value!r}")


def take_options(part: str, options: Mapping[str, Any], allowed: Mapping[str, Any]) -> dict[str, Any]:
    """Merge a plugin's options over its defaults; an unknown key is a ConfigError naming the part."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{part}: unknown option {unknown[0]!r}; known options: {', '.join(sorted(allowed)) or 'none'}"
        )
    merged = dict(allowed)
    merged.update(options)
    return merged


def resolve_path(value: Any, base_dir: Path, part: str, key: str = "path") -> Path | None:
    if value is None:
        return None
    if not isinstance(value, (str, Path)) or not str(value):
        raise ConfigError(f"{part}: {key} must be a folder path, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base_dir / path)
