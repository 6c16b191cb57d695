"""Every error vecguard raises on purpose.

    VecguardError
    ├── ConfigError            a config file or key is missing, unknown or invalid
    ├── PluginError            a part cannot be found or built
    │   ├── PluginNotFoundError    no plugin of that kind has that name
    │   └── MissingExtraError      the plugin needs an optional dependency
    ├── DocumentError          an input document is malformed (names the line or id)
    ├── FilterError            a filter does not follow the portable filter language
    ├── StorageError           a store cannot read or write its data
    │   ├── CollectionNotFoundError  nothing is stored where the config points (a read never creates one)
    │   └── CorruptCollectionError   a collection's file or record is damaged or out of step (names which)
    └── CompatibilityError     the collection was built differently from what opens it
        ├── DimensionError         vector dimension differs
        └── EmbeddingDriftError    the encoder's vector space moved

Messages say what was expected, what was found and how to fix it.
"""

from __future__ import annotations


class VecguardError(Exception):
    """Root of every error vecguard raises on purpose."""


class ConfigError(VecguardError):
    """A config file or key is missing, unknown or has an invalid value."""


class PluginError(VecguardError):
    """A plugin could not be found, loaded or built."""


class PluginNotFoundError(PluginError):
    """No plugin of the requested kind has the requested name."""


class MissingExtraError(PluginError):
    """A plugin needs an optional dependency that is not installed."""


class DocumentError(VecguardError):
    """An input document is malformed."""


class FilterError(VecguardError):
    """A filter does not follow the portable filter language."""


class StorageError(VecguardError):
    """A store could not read or write its data."""


class CollectionNotFoundError(StorageError):
    """Nothing is stored where the config points; opening to read (search, check) never creates a collection."""


class CorruptCollectionError(StorageError):
    """A file or record of the collection is damaged, of the wrong shape or out of step with the rest."""


class CompatibilityError(VecguardError):
    """The collection was built with settings that differ from the ones opening it."""


class DimensionError(CompatibilityError):
    """Vectors of one dimension met a collection or encoder of another."""


class EmbeddingDriftError(CompatibilityError):
    """The live encoder no longer produces the vector space the collection was built in."""
