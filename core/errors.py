"""Every error vecguard raises on purpose.

    VecguardError
    ├── ConfigError            a config file or key is missing, unknown or invalid
    ├── PluginError            a part cannot be found or built
    │   ├── PluginNotFoundError    no plugin of that kind has that name
    │   └── MissingExtraError      the plugin needs an optional dependency
    ├── InvalidArgumentError   a call's argument is wrong (a batch, a k, a mode): the caller's mistake
    ├── DocumentError          an input document is malformed (.position: which one)
    ├── FilterError            a filter does not follow the portable filter language (.path: where in it)
    ├── StorageError           a store cannot read or write its data
    │   ├── CollectionNotFoundError  nothing is stored where the config points (a read never creates one)
    │   ├── CollectionBusyError      another process held the write lock past the timeout (names who)
    │   ├── CollectionReplacedError  the collection was replaced since this process opened it (reopen it)
    │   └── CorruptCollectionError   a collection's file or record is damaged or out of step (names which)
    └── CompatibilityError     the collection was built differently from what opens it
        ├── DimensionError         vector dimension differs
        └── EmbeddingDriftError    the encoder's vector space moved

Messages say what was expected, what was found and how to fix it. Where an error
names a location, it also carries it as data (``FilterError.path``,
``DocumentError.position``, ``StorageError.location``, ``CompatibilityError.reasons``), so a caller such as the
HTTP server points at it without reading the message. Exceptions of the
libraries behind a store are mapped onto this tree where the store calls them.
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


class InvalidArgumentError(VecguardError, ValueError):
    """An argument of a call is invalid: a batch of mismatched lengths, a NaN vector, a k of 0, an unknown mode.

    The caller's mistake, not the store's: retrying the same call fails the same way.
    """


class DocumentError(VecguardError):
    """An input document is malformed.

    ``position`` is the document's 0-based place in the input of the call that raised it, where known.
    """

    def __init__(self, message: str, *, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


class FilterError(VecguardError):
    """A filter does not follow the portable filter language.

    ``path`` is where in the filter the problem sits, as keys and list positions from its root
    (``("$and", 0, "year")``); empty when the whole filter is wrong.
    """

    def __init__(self, message: str, *, path: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.path = path


class StorageError(VecguardError):
    """A store could not read or write its data.

    ``location`` is the file, folder or URL the store was using, where known.
    """

    def __init__(self, message: str, *, location: str | None = None) -> None:
        super().__init__(message)
        self.location = location


class CollectionNotFoundError(StorageError):
    """Nothing is stored where the config points; opening to read (search, check) never creates a collection."""


class CollectionBusyError(StorageError):
    """Another process held the collection's write lock for longer than this writer would wait.

    ``holder`` describes it (pid, host, command, since when), as it wrote itself into the lock.
    """

    def __init__(self, message: str, *, location: str | None = None, holder: str | None = None) -> None:
        super().__init__(message, location=location)
        self.holder = holder


class CollectionReplacedError(StorageError):
    """The collection this process opened was replaced on disk by another (``vecguard reindex``, a restored
    backup): what it holds is no longer the collection. Open it again."""


class CorruptCollectionError(StorageError):
    """A file or record of the collection is damaged, of the wrong shape or out of step with the rest."""


class CompatibilityError(VecguardError):
    """The collection was built with settings that differ from the ones opening it.

    ``reasons`` says what changed, one line each and without paths (what a server may show its clients).
    """

    def __init__(self, message: str, *, reasons: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.reasons = list(reasons)


class DimensionError(CompatibilityError):
    """Vectors of one dimension met a collection or encoder of another."""


class EmbeddingDriftError(CompatibilityError):
    """The live encoder no longer produces the vector space the collection was built in."""
