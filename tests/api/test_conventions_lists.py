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
    figures move with the clock), seat holders by their item."""
    if "id" in item:
        return item["id"]
    if "item" in item:  # a seat holder
        return item["item"]
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


# Lists of logs and reports: their items are no resource a client created, so the document is
# all it has to learn what each field holds.
LOGS_AND_REPORTS = ["/v1/events", "/v1/events/rejected", "/v1/webhook-endpoints/{endpoint_id}/deliveries",
                    "/v1/notifications", "/v1/denials", "/v1/customers/{customer_key}/upsell",
                    "/v1/reports/upsell", "/v1/reports/overdraft",
                    "/v1/customers/{customer_key}/seats/{feature_key}"]


@pytest.mark.parametrize("path", LOGS_AND_REPORTS)
def test_every_field_of_a_log_or_report_item_is_described(path):
    """Each field of the items, nested ones included, has a description."""
    [op] = [op for op in native.LISTS if op.path == path]
    assert _undescribed(native.answer_schema(op)["properties"]["items"]["items"], "items[]") == []


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return native.SPEC["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema  # type: ignore[no-any-return]


def _undescribed(schema: dict[str, Any], where: str) -> list[str]:
    """The fields under `schema` without a description, by their path."""
    schema = _resolve(schema)
    found = []
    for name, field in schema.get("properties", {}).items():
        if "description" not in field:
            found.append(f"{where}.{name}")
        for inner in [field, field.get("items", {}), *field.get("anyOf", [])]:
            found += _undescribed(inner, f"{where}.{name}")
    return found
