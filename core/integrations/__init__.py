"""vecguard inside the frameworks applications are built on, each an optional extra imported only when used.

- ``vecguard.integrations.langchain``: ``VecguardVectorStore`` (``pip install 'vecguard[langchain]'``)
- ``vecguard.integrations.haystack``: ``VecguardDocumentStore`` and ``VecguardRetriever`` (``vecguard[haystack]``)
- ``vecguard.integrations.llama_index``: ``VecguardRetriever`` (``vecguard[llamaindex]``)

Each keeps what the framework's own stores lose: the collection's encoder and its version guard, identifier-aware
hybrid search, any backend chosen in config, and no pickle.
"""

from ..errors import MissingExtraError


def missing_extra(integration: str, extra: str, exc: ImportError) -> MissingExtraError:
    """What an integration raises when its framework is not installed: the package missing and the extra to install."""
    package = str(exc.name).split(".")[0]
    return MissingExtraError(
        f"vecguard.integrations.{integration} needs the {extra} extra ({package} is missing): "
        f"pip install 'vecguard[{extra}]'"
    )
