"""The version guard: every collection records the vector space that built it.

The engine writes a manifest when it creates a collection and checks it once
at open, before any query:

- dimension, metric or normalisation differ: refused outright;
- chunker or keyword-tokenizer settings differ: refused (scores would change);
- same encoder fingerprint: open;
- different fingerprint: re-encode the stored probe sentences and compare;
  mean cosine >= min_mean_cosine and min >= min_cosine opens with a warning
  naming what changed; anything lower raises EmbeddingDriftError.

The manifest is canonical JSON with a ``schema_version``; its ``id`` is the
sha256 of everything in it that describes the space (counts and timestamps
excluded). Never pickle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import canonical_json, write_json_atomically
from .errors import CompatibilityError, CorruptCollectionError, DimensionError, EmbeddingDriftError, StorageError
from .protocols import Encoder, EncoderIdentity, FingerprintOmitsWeights

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FIX = "fix: rebuild it with the current encoder (`vecguard reindex --config {config}`) or pin the encoder that built it"

# Fixed, varied probe: short and long, mixed case, identifiers, numbers,
# code, non-English and non-Latin scripts. Changing this list changes every
# new manifest, so it is versioned with the schema.
PROBE_SENTENCES: tuple[str, ...] = (
    "hello",
    "The quick brown fox jumps over the lazy dog.",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "How do I reset my password if I no longer have access to my email account?",
    "Order ORD-2024-00017 was shipped on 2024-03-05 to warehouse B7.",
    "CVE-2022-24045 allows remote attackers to execute arbitrary code via a crafted request.",
    "Improper Neutralization of Input During Web Page Generation ('Cross-site Scripting')",
    "42 U.S.C. § 1983 provides a civil action for deprivation of rights.",
    "Article 21A: The State shall provide free and compulsory "
    "education to all children of the age of six to fourteen years.",
    "def add(a, b):\n    return a + b",
    "SELECT id, name FROM users WHERE created_at > '2020-01-01';",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "La economía mundial creció un 3,1 % el año pasado, según el informe.",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "ICD-10 code J45.909: unspecified asthma, uncomplicated; Directive 2013/34/EU on annual financial statements.",
    (
        "A buffer overflow occurs when a program writes more data to a buffer than it can hold, overwriting "
        "adjacent memory. Attackers can exploit this to crash the program, corrupt data, or execute arbitrary "
        "code, which is why bounds checking and memory-safe languages matter for security-critical software."
    ),
    "🙂 emoji and punctuation!!! ??? ...",
)


def library_versions(
    names: Iterable[str] = (
        "vecguard",
        "sentence-transformers",
        "transformers",
        "tokenizers",
        "torch",
        "numpy",
        "faiss-cpu",
        "rank-bm25",
    ),
) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


# ---------------------------------------------------------------- fingerprints


def cache_dir() -> Path:
    """Where vecguard keeps what it measured about this machine (file digests, encoder batch memory)."""
    return Path(os.environ.get("VECGUARD_CACHE_DIR") or Path.home() / ".cache" / "vecguard")


def hash_files(paths: Iterable[Path]) -> dict[str, str]:
    """sha256 of each file, cached by path and stat signature so a reopen does not rehash 90 MB."""
    cache_path = cache_dir() / "file-sha256.json"
    try:
        cache = json.loads(cache_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    result: dict[str, str] = {}
    changed = False
    for path in paths:
        path = Path(path).resolve()
        stat = path.stat()
        key = str(path)
        # ctime and inode too: copies that keep size and mtime (cp -p, rsync -a, tar) still change these.
        signature = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]
        entry = cache.get(key)
        if entry and entry.get("signature") == signature:
            result[key] = entry["sha256"]
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        result[key] = digest.hexdigest()
        cache[key] = {"signature": signature, "sha256": result[key]}
        changed = True
    if changed:
        try:
            write_json_atomically(cache_path, cache)
        except OSError as exc:  # a read-only home must not stop search
            log.debug("could not write fingerprint cache %s: %s", cache_path, exc)
    return result


def fingerprint(parts: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(parts).encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- manifest


def build_manifest(
    encoder: Encoder,
    *,
    metric: str,
    chunking: Mapping[str, Any],
    keyword: Mapping[str, Any],
    store_plugin: str,
) -> dict[str, Any]:
    """The manifest of a new, empty collection built with ``encoder``."""
    identity = encoder.identity()
    probe = encoder.encode_queries(list(PROBE_SENTENCES))
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "encoder": dataclasses.asdict(identity),
        "metric": metric,
        "chunking": dict(chunking),
        "keyword": dict(keyword),
        "store": {"plugin": store_plugin},
        "libraries": library_versions(),
        "probe": {
            "sentences_sha256": fingerprint(list(PROBE_SENTENCES)),
            "vectors": [[float(x) for x in row] for row in probe.astype(np.float32)],
        },
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "counts": {"documents": 0, "chunks": 0},
    }
    manifest["id"] = manifest_id(manifest)
    return manifest


MANIFEST_METADATA_KEY = "vecguard_manifest"
FINGERPRINT_METADATA_KEY = "vecguard_fingerprint"


def manifest_as_metadata(manifest: Mapping[str, Any]) -> dict[str, str]:
    """The manifest as flat collection metadata (databases that keep only scalars there)."""
    return {
        MANIFEST_METADATA_KEY: canonical_json(dict(manifest)),
        FINGERPRINT_METADATA_KEY: str(manifest.get("id", "")),
    }


def manifest_from_metadata(metadata: Mapping[str, Any] | None, where: str) -> dict[str, Any] | None:
    """Read back what ``manifest_as_metadata`` stored; None when the collection has no manifest."""
    text = (metadata or {}).get(MANIFEST_METADATA_KEY)
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise StorageError(f"{where} has an unreadable vecguard manifest ({exc}); rebuild the collection") from exc


def manifest_id(manifest: Mapping[str, Any]) -> str:
    space = {
        k: v
        for k, v in manifest.items()
        if k not in ("id", "counts", "state", "created_at", "libraries", "lineage", "measurements", "write_id")
    }
    return fingerprint(space)


# What the engine and the guard read from a manifest, and the type each must have.
_MANIFEST_FIELDS: dict[str, type] = {
    "encoder": dict,
    "metric": str,
    "chunking": dict,
    "keyword": dict,
    "probe": dict,
    "counts": dict,
}
_OPTIONAL_FIELDS: dict[str, type] = {"state": dict, "measurements": dict, "lineage": list, "id": str, "write_id": str}


def check_manifest(manifest: Any, where: str) -> dict[str, Any]:
    """The manifest, once its shape is what this vecguard reads; else CorruptCollectionError naming the key.

    A manifest of another schema_version is left to the guard, which refuses it by name.
    """
    fix = "restore it from a backup, or delete the collection and index again"
    if not isinstance(manifest, dict):
        raise CorruptCollectionError(f"{where}: the manifest is {type(manifest).__name__}, not an object; {fix}")
    version = manifest.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CorruptCollectionError(
            f"{where}: the manifest's schema_version should be a whole number, got {version!r:.60}; {fix}"
        )
    if version != SCHEMA_VERSION:
        return dict(manifest)
    for fields, required in ((_MANIFEST_FIELDS, True), (_OPTIONAL_FIELDS, False)):
        for key, kind in fields.items():
            if (required or key in manifest) and not isinstance(manifest.get(key), kind):
                raise CorruptCollectionError(
                    f"{where}: the manifest's {key!r} should be {'an object' if kind is dict else kind.__name__}, "
                    f"got {manifest.get(key)!r:.60}; {fix}"
                )
    for key in ("documents", "chunks"):
        value = manifest["counts"].get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise CorruptCollectionError(
                f"{where}: the manifest's counts.{key} should be a whole number, got {value!r:.60}; {fix}"
            )
    return dict(manifest)


SPACE_KEYS = ("schema_version", "encoder", "metric", "chunking", "keyword", "probe")


def space_differences(manifest: Mapping[str, Any], other: Mapping[str, Any]) -> list[str]:
    """What keeps points of one collection out of another: vector space, chunking or keyword settings.

    [] when the two were built the same way (the store they live in does not matter).
    """
    differences = []
    for key in SPACE_KEYS:
        mine, theirs = manifest.get(key), other.get(key)
        if mine == theirs:
            continue
        if key == "probe":
            differences.append("probe embeddings differ (the encoders produce different vectors)")
        elif isinstance(mine, Mapping) and isinstance(theirs, Mapping):
            differences.append(f"{key} {_diff(mine, theirs)}")
        else:
            differences.append(f"{key}: {mine!r} -> {theirs!r}")
    return differences


# ---------------------------------------------------------------- the check


@dataclass
class GuardReport:
    """Outcome of comparing a collection's manifest with the live encoder and settings.

    ``status``: "ok" (same space), "warn" (changed but the probe still agrees)
    or "refused". Cosines are over the probe sentences (None when not measured).
    """

    status: str
    reasons: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    mean_cosine: float | None = None
    min_cosine: float | None = None
    stored: dict[str, Any] = field(default_factory=dict)
    live: dict[str, Any] = field(default_factory=dict)
    elapsed_ms: float = 0.0
    error: type[CompatibilityError] | None = None

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["error"] = self.error.__name__ if self.error else None
        return data

    def message(self, config: str = "C") -> str:
        fix = FIX.format(config=config if not config.startswith("<") else "YOUR_CONFIG.toml")
        stored, live = _describe(self.stored), _describe(self.live)
        measured = ""
        if self.mean_cosine is not None:
            measured = f"; probe cosine mean {self.mean_cosine:.4f}, min {self.min_cosine:.4f}"
        if self.status == "refused":
            reasons = "; ".join(self.reasons)
            return f"collection refused: {reasons}{measured}. Built with {stored}; live encoder {live}. {fix}"
        if self.status == "warn":
            return f"encoder changed but the vector space did not: {'; '.join(self.changes)}{measured}"
        return "collection matches the live encoder"


def _describe(identity: Mapping[str, Any]) -> str:
    if not identity:
        return "?"
    return (
        f"{identity.get('name')} @ {identity.get('revision')} "
        f"(fingerprint {str(identity.get('fingerprint'))[:12]}, dim {identity.get('dimension')}, "
        f"normalized {identity.get('normalized')}, {identity.get('precision')})"
    )


def check_compatibility(
    manifest: Mapping[str, Any],
    encoder: Encoder,
    *,
    metric: str,
    chunking: Mapping[str, Any],
    keyword: Mapping[str, Any],
    min_mean_cosine: float = 0.99,
    min_cosine: float = 0.98,
) -> GuardReport:
    """Compare a stored manifest with the live encoder and settings (no side effects)."""
    started = time.perf_counter()
    live: EncoderIdentity = encoder.identity()
    live_dict = dataclasses.asdict(live)
    stored = dict(manifest.get("encoder") or {})
    report = GuardReport(status="ok", stored=stored, live=live_dict)

    def refuse(reason: str, error: type[CompatibilityError] = CompatibilityError) -> GuardReport:
        report.status = "refused"
        report.reasons.append(reason)
        report.error = error
        report.elapsed_ms = (time.perf_counter() - started) * 1000
        return report

    if manifest.get("schema_version") != SCHEMA_VERSION:
        return refuse(
            f"manifest schema_version {manifest.get('schema_version')!r} is not {SCHEMA_VERSION}, "
            f"which this vecguard reads; upgrade vecguard or rebuild the collection"
        )
    if stored.get("dimension") != live.dimension:
        return refuse(f"dimension {stored.get('dimension')} stored, {live.dimension} live", DimensionError)
    if manifest.get("metric") != metric:
        return refuse(f"metric {manifest.get('metric')!r} stored, {metric!r} live")
    if stored.get("normalized") != live.normalized:
        return refuse(f"normalized={stored.get('normalized')} stored, normalized={live.normalized} live")

    # The vector space first: an encoder that now truncates sooner also clamps the
    # chunker, and the cause to report then is the encoder, not the chunking.
    unpinned = isinstance(encoder, FingerprintOmitsWeights) and encoder.fingerprint_omits_weights
    if stored.get("fingerprint") != live.fingerprint or unpinned:
        _compare_probe(manifest, encoder, report, min_mean_cosine, min_cosine)
        if report.status == "refused":
            report.error = EmbeddingDriftError
            report.elapsed_ms = (time.perf_counter() - started) * 1000
            return report
    for what, stored_settings, live_settings in (
        ("chunking", manifest.get("chunking"), dict(chunking)),
        ("keyword tokenizer", manifest.get("keyword"), dict(keyword)),
    ):
        if stored_settings != live_settings:
            return refuse(f"{what} settings {_diff(stored_settings or {}, live_settings)}")
    report.elapsed_ms = (time.perf_counter() - started) * 1000
    return report


def _compare_probe(
    manifest: Mapping[str, Any],
    encoder: Encoder,
    report: GuardReport,
    min_mean_cosine: float,
    min_cosine: float,
) -> None:
    """Re-encode the probe sentences and compare with the stored ones; sets report.status."""
    live = encoder.identity()
    report.changes = [f"encoder {change}" for change in _diff_list(report.stored, report.live)]
    library_changes = _diff_list(manifest.get("libraries") or {}, library_versions())
    report.changes += [f"library {change}" for change in library_changes]
    probe = np.asarray((manifest.get("probe") or {}).get("vectors") or [], dtype=np.float32)
    if probe.shape != (len(PROBE_SENTENCES), live.dimension) or (manifest.get("probe") or {}).get(
        "sentences_sha256"
    ) != fingerprint(list(PROBE_SENTENCES)):
        report.status = "refused"
        report.reasons.append("the encoder fingerprint differs and the manifest's probe cannot be compared")
        return
    fresh = encoder.encode_queries(list(PROBE_SENTENCES)).astype(np.float32)
    cosines = _row_cosines(probe, fresh)
    report.mean_cosine = float(cosines.mean())
    report.min_cosine = float(cosines.min())
    if report.mean_cosine >= min_mean_cosine and report.min_cosine >= min_cosine:
        report.status = "warn"
    else:
        report.status = "refused"
        report.reasons.append(
            f"the encoder's vector space drifted (thresholds: mean >= {min_mean_cosine}, min >= {min_cosine})"
        )


def enforce(report: GuardReport, mode: str, config: str = "C") -> None:
    """Raise for a refused report (``mode="warn"`` only logs, except for a dimension change)."""
    if report.status == "ok":
        return
    message = report.message(config)
    if report.status == "warn":
        log.warning("vecguard guard: %s", message)
        return
    if mode == "warn" and report.error is not DimensionError:
        log.error("vecguard guard is in WARN mode and lets a refused collection open: %s", message)
        return
    raise (report.error or CompatibilityError)(message, reasons=report.reasons)


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(na * nb, 1e-12)


def _diff_list(stored: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    changes = []
    for key in sorted(set(stored) | set(live)):
        if stored.get(key) != live.get(key):
            before, after = stored.get(key), live.get(key)
            if key == "fingerprint":
                before, after = str(before)[:12], str(after)[:12]
            changes.append(f"{key}: {before!r} -> {after!r}")
    return changes


def _diff(stored: Mapping[str, Any], live: Mapping[str, Any]) -> str:
    return "changed (" + ", ".join(_diff_list(stored, live)) + ")"
