"""Every native read answers in the API's conventions (API.md), checked as an outside tester
would: each GET of the OpenAPI document, on a realistic catalogue, walked field by field."""

from __future__ import annotations

import re
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from schemathesis.specs.openapi.definitions import OPENAPI_31
from tests.api import native

PREFIXED_ID = re.compile(r"^[a-z]{2,4}_[0-9a-z]{16,}$")
TIMESTAMP_LIKE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d")
UTC_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|\+00:00)$")
DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")
# Objects that hold what the vendor sent, as it sent it: not ours to shape.
VERBATIM = {"metadata", "data", "config", "headers", "group_by", "filter_group_by", "meter_group_filter", "raw"}
# Fields that carry a client's identifier rather than one Allotment issued.
CLIENTS_IDS = {"/v1/events": {"id"}}


def problems_in(answer: Any, *, path: str) -> list[str]:
    """Where `answer` breaks the JSON conventions, one line per field."""
    found: list[str] = []
    clients_ids = CLIENTS_IDS.get(path, set())

    def walk(value: Any, where: str, key: str, parent: dict[str, Any] | None) -> None:
        if isinstance(value, dict):
            if key in VERBATIM:
                return
            for k, v in value.items():
                walk(v, f"{where}.{k}", k, value)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]", key, parent)
        elif isinstance(value, bool) or value is None:
            return
        elif (key == "id" or key.endswith(("_id", "_ids"))) and key not in clients_ids:
            if not (isinstance(value, str) and PREFIXED_ID.match(value)):
                found.append(f"{where}: id {value!r} is not an opaque id prefixed by its type")
        elif isinstance(value, str) and (TIMESTAMP_LIKE.match(value) or key.endswith("_at")):
            if not UTC_RFC3339.match(value):
                found.append(f"{where}: {value!r} is not an RFC 3339 time in UTC")
        elif "price" in key:
            if not (isinstance(value, str) and DECIMAL.match(value)):
                found.append(f"{where}: money {value!r} is not a decimal string")
            if parent is None or "currency" not in parent:
                found.append(f"{where}: money without a `currency` beside it")
        elif isinstance(value, str) and DECIMAL.match(value) and key not in ("hint", "key", "name"):
            found.append(f"{where}: {value!r} is a number written as a string (quantities are JSON numbers)")

    walk(answer, "$", "", None)
    return found


@pytest.mark.parametrize("op", native.GETS, ids=str)
async def test_every_read_answers_in_the_json_conventions(world, op):
    """Ids prefixed by type, times RFC 3339 in UTC, money a decimal string with its currency,
    quantities JSON numbers: in every field of every read, lists' items included."""
    resp = await world.tenant.client.get(world.catalogue.url(op.path))
    assert resp.status_code == 200, resp.text
    assert problems_in(resp.json(), path=op.path) == []


async def test_the_served_document_is_valid_openapi_3_1(anon):
    """`/openapi.json` validates against the OpenAPI 3.1 schema, and each of its schemas is
    valid JSON Schema."""
    spec = (await anon.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.1.")
    assert [str(e) for e in jsonschema_rs.validator_for(OPENAPI_31).iter_errors(spec)] == []
    for schema in spec["components"]["schemas"].values():
        jsonschema_rs.meta.validate(schema)


@pytest.mark.parametrize("op", native.GETS, ids=str)
async def test_every_read_answer_matches_its_documented_schema(world, op):
    """The answer is what the OpenAPI document says the operation answers."""
    resp = await world.tenant.client.get(world.catalogue.url(op.path))
    assert resp.status_code == 200, resp.text
    schemathesis.openapi.from_dict(native.SPEC)[op.path][op.method].validate_response(resp)


@pytest.mark.parametrize("op", native.GETS, ids=str)
async def test_a_read_that_answers_items_is_a_paged_list(world, op):
    """An answer with `items` pages like every list: it takes `limit` and `cursor`."""
    resp = await world.tenant.client.get(world.catalogue.url(op.path))
    if isinstance(resp.json(), dict) and "items" in resp.json():
        assert {"limit", "cursor"} <= op.query_parameters, op.query_parameters
    assert not isinstance(resp.json(), list), "a list is an object with items and next_cursor"


# Upper-case since before the convention, in OpenMeter's spelling, and in the README's examples:
# answering them lower-case would break /v1 clients that compare them (no longer additive).
UPPER_CASE_SINCE_BEFORE = {"Aggregation", "Interval", "WindowSize"}


def _enums(schema: Any, seen: set[str]) -> list[Any]:
    """Every enum and const value reachable from `schema`."""
    if isinstance(schema, list):
        return [v for item in schema for v in _enums(item, seen)]
    if not isinstance(schema, dict):
        return []
    ref = schema.get("$ref")
    if ref is not None:
        if ref in seen or ref.rsplit("/", 1)[1] in UPPER_CASE_SINCE_BEFORE:
            return []
        seen.add(ref)
        return _enums(native.SPEC["components"]["schemas"][ref.rsplit("/", 1)[1]], seen)
    values = list(schema.get("enum", [])) + ([schema["const"]] if "const" in schema else [])
    return values + [v for k, sub in schema.items() if k not in ("enum", "const", "examples", "default")
                     for v in _enums(sub, seen)]


@pytest.mark.parametrize("op", native.OPERATIONS, ids=str)
async def test_enums_in_answers_are_lower_case_strings(op):
    """Every value an answer's enum may take is a lower-case string."""
    answers = [r.get("content", {}).get("application/json", {}).get("schema")
               for code, r in op.spec["responses"].items() if code.startswith("2")]
    values = _enums(answers, set())
    assert [v for v in values if not (isinstance(v, str) and v == v.lower())] == []


def test_meter_and_period_enums_keep_the_metering_spelling():
    """The exception to lower-case enums: aggregations, usage periods and window sizes are spelled
    as metering names them (SUM, DAY, MONTH: OpenMeter's spelling, which the meter contract and
    the README use); they are exactly these values, so no other upper-case enum slips in."""
    enums = {name: native.SPEC["components"]["schemas"][name]["enum"] for name in sorted(UPPER_CASE_SINCE_BEFORE)}
    assert enums == {
        "Aggregation": ["SUM", "COUNT", "MIN", "MAX", "AVG", "UNIQUE_COUNT", "LATEST"],
        "Interval": enums["Interval"],
        "WindowSize": ["MINUTE", "HOUR", "DAY", "MONTH"],
    }
    assert all(v == v.upper() for v in enums["Interval"]) and {"DAY", "WEEK", "MONTH", "YEAR"} <= set(enums["Interval"])


def test_problems_in_finds_each_kind_of_break():
    """The walker itself: a sequence id, a naive time, a float price, a quantity as a string."""
    answer = {"id": 7, "created_at": "2026-01-01T00:00:00", "price": 1.5, "usage": "12",
              "metadata": {"usage": "12"}, "ok_at": "2026-01-01T00:00:00Z"}
    assert len(problems_in(answer, path="/v1/x")) == 5
