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
    for field, value, named in [("url", "0", "url"), ("url", "ftp://example.com", "url"), ("url", "http://a[b@example.com", "url"),
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


async def test_a_text_holding_nul_is_outside_the_document(anon, tenant):
    """No text, member name or free-form value may hold NUL: the document says so everywhere."""
    spec = await _spec(anon)
    schema = {"$ref": "#/components/schemas/CustomerCreate"}
    assert _valid(spec, schema, {"key": "c2", "name": "C", "metadata": {"notes": ["ok", {"deep": "ok"}]}})
    for bad in ({"name": "C\x00"}, {"metadata": {"notes": ["ok", {"deep": "\x00"}]}}, {"metadata": {"a\x00": 1}}):
        body = {"key": "c2", "name": "C", **bad}
        assert not _valid(spec, schema, body), bad
        assert (await tenant.client.post("/v1/customers", json=body)).status_code == 422, bad
    assert not _valid(spec, _parameter(spec, "get", "/v1/events", "subject"), "a\x00")


async def test_a_time_outside_the_years_taken_is_outside_the_document(anon):
    """Times are taken from 1970 to before the year 9000, as the document's times say."""
    spec = await _spec(anon)
    anchor = spec["components"]["schemas"]["SubscriptionCreate"]["properties"]["billing_anchor"]
    assert _valid(spec, anchor, "2026-12-01T00:00:00Z") and _valid(spec, anchor, "8999-12-31T23:59:59Z")
    assert not _valid(spec, anchor, "1969-12-31T23:59:59Z") and not _valid(spec, anchor, "9000-01-01T00:00:00Z")


async def test_an_event_attribute_with_a_control_character_is_outside_the_document(anon, tenant):
    """CloudEvents attributes hold no control character: the document says what ingest refuses."""
    spec = await _spec(anon)
    content = spec["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    event = {"specversion": "1.0", "id": "e\x07", "source": "s", "type": "prompt", "subject": "acme-key"}
    assert not _valid(spec, content, event) and _valid(spec, content, {**event, "id": "e1"})
    assert (await tenant.client.post("/v1/events", json=[event])).status_code == 422


async def test_a_whole_number_written_with_a_point_is_an_integer(tenant):
    """`36.0` is the integer 36 (JSON has one kind of number); text is still refused."""
    hook = (await tenant.client.post("/v1/webhook-endpoints", json={"url": "https://example.com/h"})).json()
    rotate = f"/v1/webhook-endpoints/{hook['id']}/rotate-secret"
    assert (await tenant.client.post(rotate, json={"keep_previous_seconds": 36.0})).status_code == 200
    assert_problem(await tenant.client.post(rotate, json={"keep_previous_seconds": "36"}), 422, "keep_previous_seconds")


async def test_every_lago_operation_documents_its_error_answers(anon, tenant):
    """The Lago surface's 400, 401, 404 and 422 are documented, in the body Lago's clients read."""
    spec = await _spec(anon)
    lago = [(path, operation) for path, operations in spec["paths"].items() if path.startswith("/lago/")
            for operation in operations.values()]
    assert lago
    for path, operation in lago:
        for code in ("400", "401", "404", "422", "503"):
            content = operation["responses"][code]["content"]
            assert content == {"application/json": {"schema": {"$ref": "#/components/schemas/LagoError"}}}, (path, code)
    resp = await tenant.client.get("/lago/api/v1/customers/nobody")
    assert resp.status_code == 404 and resp.headers["content-type"].startswith("application/json")
    assert _valid(spec, {"$ref": "#/components/schemas/LagoError"}, resp.json()), resp.text
