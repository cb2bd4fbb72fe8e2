"""The one shape of every native list answer (API.md: `{"items": [...], "next_cursor": ...}`).

`Page[XRead]` is what a list route declares as its answer, so that the OpenAPI document
describes its items. The routes still build the answer with `deps.page` (or render it
themselves, where exact numbers or speed ask for it): the model is the contract, and the
items it holds are already models, which pydantic takes as they are.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list, in the list's stable order."""

    items: list[T] = Field(description="This page's items, at most `limit` of them.")
    next_cursor: str | None = Field(
        description="Send it as `cursor` for the next page; null when nothing follows (after a full "
        "page it may lead to an empty one)."
    )
