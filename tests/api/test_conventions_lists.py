"""Every native list pages the same way (API.md): `{"items", "next_cursor"}`, `limit` from 1 to
1000 (50 by default), and a cursor that walks the list in a stable order."""

from __future__ import annotations

from typing import Any

import pytest
from tests.api import native
from tests.api.test_bad_input import assert_problem


def _limit(op: native.Operation) -> dict[str, object]:
    [parameter] = [p for p in op.spec.get("parameters", []) if p["in"] == "query" and p["name"] == "limit"]
    return parameter["schema"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("op", native.LISTS, ids=str)
async def test_a_list_documents_limit_50_by_default_and_at_most_1000(op):
    """The document says what the server does: 50 unless asked, 1 to 1000."""
    assert {"limit", "cursor"} <= op.query_parameters
    assert (_limit(op).get("default"), _limit(op).get("minimum"), _limit(op).get("maximum")) == (50, 1, 1000)


@pytest.mark.parametrize("op", native.LISTS, ids=str)
@pytest.mark.parametrize("limit", [0, 1001])
async def test_a_limit_out_of_range_is_refused_naming_limit(world, op, limit):
    """0 or 1001 is a 422 problem naming `limit`, never a silently clamped page."""
    resp = await world.tenant.client.get(world.catalogue.url(op.path), params={"limit": limit})
    assert_problem(resp, 422, "limit")


@pytest.mark.parametrize("op", native.LISTS, ids=str)
async def test_a_list_walked_one_item_a_page_gives_its_first_items_in_order(world, op):
    """Two pages of one item are the list's first two items, each once, in the list's order."""
    c, url = world.tenant.client, world.catalogue.url(op.path)
    whole = (await c.get(url)).json()
    assert set(whole) == {"items", "next_cursor"} and len(whole["items"]) >= 2, whole
    first = (await c.get(url, params={"limit": 1})).json()
    assert len(first["items"]) == 1 and first["next_cursor"], first
    second = (await c.get(url, params={"limit": 1, "cursor": first["next_cursor"]})).json()
    assert [_identity(i) for i in first["items"] + second["items"]] == [_identity(i) for i in whole["items"][:2]]


def _identity(item: dict[str, object]) -> object:
    """What names an item; reports without ids are named by what they are about (their
    figures move with the clock)."""
    if "id" in item:
        return item["id"]
    return tuple(item.get(k) for k in ("customer", "feature", "entitlement_id", "received_at", "raw"))


def test_every_list_documents_the_schema_of_its_items():
    """Without it, conformance of list answers to the document checks nothing, and generated
    clients get a bare object."""
    untyped = [str(op) for op in native.LISTS
               if "items" not in native.answer_schema(op).get("properties", {})]
    assert untyped == []


@pytest.mark.parametrize("op", native.LISTS, ids=str)
def test_a_list_documents_its_items_as_objects_and_its_cursor_as_a_string_or_null(op):
    """A generated client gets typed items with their fields, and a cursor that may be absent."""
    properties = native.answer_schema(op)["properties"]
    assert _resolve(properties["items"]["items"]).get("properties"), properties["items"]
    assert {s.get("type") for s in properties["next_cursor"]["anyOf"]} == {"string", "null"}


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return native.SPEC["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema  # type: ignore[no-any-return]

