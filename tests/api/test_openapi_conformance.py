"""The OpenAPI document states the rules the server checks: what it documents as valid is
taken, and what the server refuses the document calls invalid, so that a client generated from
it (or a tester such as schemathesis) never sends a request it believes valid and gets a 422."""

from __future__ import annotations

import base64
from typing import Any

import jsonschema_rs
import pytest
from tests.api.test_bad_input import assert_problem


async def _spec(anon: Any) -> dict[str, Any]:
    return (await anon.get("/openapi.json")).json()  # type: ignore[no-any-return]


def _valid(spec: dict[str, Any], schema: dict[str, Any], value: object) -> bool:
    """Whether `value` is valid against `schema`, a part of `spec` (its $refs resolved in it)."""
    return jsonschema_rs.validator_for({**schema, "components": spec["components"]}).is_valid(value)


def _parameter(spec: dict[str, Any], method: str, path: str, name: str) -> dict[str, Any]:
    parameters = spec["paths"][path][method]["parameters"]
    return next(p["schema"] for p in parameters if p["name"] == name)  # type: ignore[no-any-return]


async def test_an_idempotency_key_the_server_refuses_is_outside_the_document(anon, tenant):
    """Every documented `Idempotency-Key` header says it holds 1 to 255 characters."""
    spec = await _spec(anon)
    headers = [(path, p["schema"]) for path, operations in spec["paths"].items()
               for operation in operations.values() for p in operation.get("parameters", [])
               if p["in"] == "header" and p["name"] == "Idempotency-Key"]
    assert len(headers) > 10
    for path, schema in headers:
        assert _valid(spec, schema, "retry-1") and _valid(spec, schema, "k" * 255), path
        assert not _valid(spec, schema, "") and not _valid(spec, schema, "k" * 256), path
    resp = await tenant.client.post("/v1/customers", json={"key": "c1", "name": "C"}, headers={"Idempotency-Key": ""})
    assert_problem(resp, 422, "Idempotency-Key")


async def test_a_denied_reservation_answers_a_status_the_document_lists(anon):
    """A hold that is denied answers 200 with the decision and no reservation: documented."""
    responses = (await _spec(anon))["paths"]["/v1/reservations"]["post"]["responses"]
    assert {"200", "201"} <= set(responses)
    assert responses["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/HeldRead"}


@pytest.mark.parametrize(("path", "schema", "body"), [
    ("/v1/customers/c1", "CustomerUpdate", {"metadata": None}),
    ("/v1/customers/c1", "CustomerUpdate", {"subject_keys": None}),
    ("/v1/customers/c1", "CustomerUpdate", {"name": None}),
])
async def test_a_null_the_server_refuses_on_update_is_outside_the_document(anon, tenant, path, schema, body):
    """A field an update may leave out but not clear is not documented as nullable."""
    spec = await _spec(anon)
    ref = {"$ref": f"#/components/schemas/{schema}"}
    assert not _valid(spec, ref, body)
    assert _valid(spec, ref, {})
    await tenant.client.post("/v1/customers", json={"key": "c1", "name": "C"})
    assert_problem(await tenant.client.patch(path, json=body), 422, next(iter(body)))


async def test_every_update_field_refusing_null_is_documented_without_null(anon):
    """Of each update body, only the fields that null clears may be null."""
    schemas = (await _spec(anon))["components"]["schemas"]
    for name, clearable in [("WebhookEndpointUpdate", {"description"}), ("MeterUpdate", {"description"}),
                            ("FeatureUpdate", {"unit", "meter", "meter_group_filter"}),
                            ("CustomerUpdate", {"description", "email", "currency", "billing_address"})]:
        nullable = {field for field, prop in schemas[name]["properties"].items() if '"null"' in repr(prop).replace("'", '"')}
        assert nullable == clearable, name


@pytest.mark.parametrize("flag", ["enabled", "rules_only"])
async def test_a_webhook_endpoint_flag_takes_only_true_or_false(tenant, flag):
    """`0` or `"false"` is not a flag (the schema says boolean): refused, naming the field."""
    for value in (0, "false"):
        resp = await tenant.client.post("/v1/webhook-endpoints", json={"url": "https://example.com/h", flag: value})
        assert_problem(resp, 422, flag)


async def test_webhook_endpoint_values_the_server_refuses_are_outside_the_document(anon, tenant):
    """URL, secret, event types and headers are documented as the server checks them."""
    spec = await _spec(anon)
    schema = {"$ref": "#/components/schemas/WebhookEndpointCreate"}
    secret = "whsec_" + base64.b64encode(bytes(range(32))).decode()
    good = {"url": "https://hooks.example.com:8443/in?x=1", "secret": secret,
            "event_types": ["grant.expiring"], "headers": {"X-Team": "billing"}}
    assert _valid(spec, schema, good)
    assert (await tenant.client.post("/v1/webhook-endpoints", json=good)).status_code == 201
    for field, value, named in [("url", "0", "url"), ("url", "ftp://example.com", "url"),
                                ("secret", "whsec_c2hvcnQ=", "secret"), ("secret", "not-a-secret", "secret"),
                                ("event_types", ["nope"], "event_types[0]"), ("headers", {"Host": "x"}, "headers"),
                                ("headers", {"X-A": "one\ntwo"}, "headers"), ("headers", {"bad name": "x"}, "headers")]:
        bad = {**good, field: value}
        assert not _valid(spec, schema, bad), (field, value)
        assert_problem(await tenant.client.post("/v1/webhook-endpoints", json=bad), 422, named)


async def test_a_time_zone_the_server_refuses_is_outside_the_document(anon):
    """Time zones are documented as the list of names the server takes."""
    spec = await _spec(anon)
    schemas = spec["components"]["schemas"]
    zones = [schemas["SubscriptionCreate"]["properties"]["time_zone"], schemas["OverrideIn"]["properties"]["time_zone"],
             schemas["QueryBody"]["properties"]["window_time_zone"],
             _parameter(spec, "get", "/v1/meters/{meter_key}/query", "window_time_zone")]
    for zone in zones:
        assert _valid(spec, zone, "Europe/Paris") and _valid(spec, zone, "UTC")
        assert not _valid(spec, zone, "") and not _valid(spec, zone, "Mars/Olympus_Mons")


async def test_a_meter_group_name_the_server_refuses_is_outside_the_document(anon, tenant):
    """Group names are letters, digits and underscores, and not the reserved ones."""
    spec = await _spec(anon)
    for schema in ("MeterCreate", "MeterUpdate"):
        group_by = spec["components"]["schemas"][schema]["properties"]["group_by"]
        assert _valid(spec, group_by, {"model": "$.model"}), schema
        for name in ("x-y", "subject", "1st"):
            assert not _valid(spec, group_by, {name: "$.a"}), (schema, name)
    body = {"key": "m1", "event_type": "prompt", "aggregation": "COUNT", "group_by": {"x-y": "$.a"}}
    assert_problem(await tenant.client.post("/v1/meters", json=body), 422, "group_by")
