"""The HTTP API's request models and response bodies.

Models are strict: "5" is not a k and "yes" not a bool; a JSON number is still a float where one is wanted.
The bounds of a search and of a write come from ``[server]``, so those two models are built per app by
``request_models``; FastAPI reads them from the handlers' signatures (see ``routes.add_routes``).
"""

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Scalar = str | int | float | bool
STRICT = ConfigDict(extra="forbid", strict=True)


class DocumentIn(BaseModel):
    model_config = STRICT
    id: str = Field(min_length=1)
    text: str = Field(min_length=1)
    metadata: dict[str, Scalar] = Field(default_factory=dict)


class DeleteRequest(BaseModel):
    model_config = STRICT
    ids: list[str] | None = Field(None, min_length=1)
    filter: dict[str, Any] | None = None


@dataclass(frozen=True)
class RequestModels:
    """The request models whose bounds come from one app's ``[server]`` table."""

    search: type[BaseModel]
    add: type[BaseModel]


def request_models(limits: dict[str, Any]) -> RequestModels:
    """The search and add models for ``[server]`` limits (max_query_chars, max_k, max_documents)."""

    class SearchRequest(BaseModel):
        model_config = STRICT
        query: str = Field(min_length=1, max_length=limits["max_query_chars"])
        k: int = Field(10, ge=1, le=limits["max_k"])
        mode: Literal["hybrid", "dense", "keyword"] = "hybrid"
        filter: dict[str, Any] | None = None
        min_score: float | None = Field(None, ge=-1.0, le=1.0)
        chunks: bool = False

    class AddRequest(BaseModel):
        model_config = STRICT
        documents: list[DocumentIn] = Field(min_length=1, max_length=limits["max_documents"])

    return RequestModels(search=SearchRequest, add=AddRequest)


def hit_body(hit: Any) -> dict[str, Any]:
    """One search hit as the JSON ``POST /search`` answers with."""
    return {
        "id": hit.id,
        "score": hit.score,
        "text": hit.text,
        "metadata": hit.metadata,
        "chunk": hit.chunk,
        "start": hit.start,
        "end": hit.end,
        "signals": {name: {"rank": e.rank, "score": e.score} for name, e in hit.signals.items()},
    }
