"""vecguard: hybrid semantic search that refuses a drifted embedding space.

import vecguard
with vecguard.open("vecguard.toml") as engine:
    engine.add([{"id": "a", "text": "...", "metadata": {"year": 2024}}])
    hits = engine.search("query", k=5, filter={"year": {"$gte": 2020}}, min_score=0.3)
"""

from .config import Config, load_config
from .engine import Engine, open
from .errors import (
    CollectionBusyError,
    CollectionNotFoundError,
    CollectionReplacedError,
    CompatibilityError,
    ConfigError,
    CorruptCollectionError,
    DimensionError,
    DocumentError,
    EmbeddingDriftError,
    FilterError,
    InvalidArgumentError,
    MissingExtraError,
    PluginError,
    PluginNotFoundError,
    StorageError,
    VecguardError,
)
from .guard import GuardReport
from .migration import MigrationReport, migrate
from .protocols import (
    DeclaresBatchSize,
    DeclaresExactSearch,
    Document,
    Encoder,
    EncoderIdentity,
    FingerprintOmitsWeights,
    FusedHit,
    Fuser,
    Hit,
    HoldsKeywords,
    KeywordIndex,
    KeywordVectors,
    MaintainsIndex,
    MeasuresCoverage,
    SavesIncrementally,
    SearchesWithPayloads,
    SharesCollection,
    SignalEvidence,
    TokenizesInBatches,
    TunesOnQueries,
    VectorStore,
)
from .registry import Part, Registry, hookimpl, hookspec
from .threads import prefer_passive_waiting

# Before anything loads torch's or FAISS's OpenMP runtime (none of the modules above does): core/threads.py.
prefer_passive_waiting()

__all__ = [
    "CollectionBusyError",
    "CollectionNotFoundError",
    "CollectionReplacedError",
    "CompatibilityError",
    "Config",
    "ConfigError",
    "CorruptCollectionError",
    "DeclaresBatchSize",
    "DeclaresExactSearch",
    "DimensionError",
    "Document",
    "DocumentError",
    "EmbeddingDriftError",
    "Encoder",
    "EncoderIdentity",
    "Engine",
    "FilterError",
    "FingerprintOmitsWeights",
    "FusedHit",
    "Fuser",
    "GuardReport",
    "Hit",
    "HoldsKeywords",
    "InvalidArgumentError",
    "KeywordIndex",
    "KeywordVectors",
    "MaintainsIndex",
    "MeasuresCoverage",
    "SavesIncrementally",
    "SharesCollection",
    "MigrationReport",
    "MissingExtraError",
    "Part",
    "PluginError",
    "PluginNotFoundError",
    "Registry",
    "SearchesWithPayloads",
    "SignalEvidence",
    "StorageError",
    "TokenizesInBatches",
    "TunesOnQueries",
    "VecguardError",
    "VectorStore",
    "hookimpl",
    "hookspec",
    "load_config",
    "migrate",
    "open",
]
