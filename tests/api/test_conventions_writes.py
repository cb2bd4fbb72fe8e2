"""Every native write answers in the API's conventions too (API.md): what a create, an update,
an action or a delete answers is shaped like what a read answers, is what the OpenAPI document
says it answers, and a retried create or consume changes nothing a second time."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from tests.api import native
from tests.api.test_bad_input import assert_problem
from tests.api.test_conventions_answers import problems_in
from tests.api.test_conventions_requests import (
    CREATES,
    POSTS,
    another_body,
    documented,
    request_for,
    send,
)

WRITES = [op for op in native.OPERATIONS if op.method != "GET"]


async def sandbox(world: Any, op: native.Operation) -> dict[str, str]:
    """Path parameters naming resources of the operation's own, so that a delete, a cancel or a
    void leaves the shared catalogue as every other test expects it."""
    c, fresh, ok = world.tenant.client, world.catalogue.fresh("sbx"), native.ok
    post = c.post
    path = str(op)
    if "/v1/subscriptions/{" in path or "/v1/customers/{customer_key}/" in path or path.startswith(
            "DELETE /v1/customers/"):
        await ok(await post("/v1/customers", json={"key": fresh, "name": fresh, "currency": "USD"}))
        if path == "DELETE /v1/customers/{customer_key}":
            return {"customer_key": fresh}  # a customer with a live subscription is not deleted
        if path.endswith("/reset"):  # only an ad-hoc entitlement resets apart from a subscription
            await ok(await post(f"/v1/customers/{fresh}/entitlements", json={
                "feature": "tokens", "kind": "metered", "usage_period": "MONTH", "included": 100}))
            return {"customer_key": fresh, "feature_key": "tokens"}
        subscription = await ok(await post("/v1/subscriptions", json={"customer": fresh, "plan": "starter"}))
        params = {"customer_key": fresh, "subscription_id": subscription["id"]}
        if "/seats/" in path:
            await ok(await post(f"/v1/customers/{fresh}/seats/seats/activate", json={"item": "ann"}))
        if path.endswith(("/entitlements/{feature_key}", "/entitlements/{feature_key}/override")):
            await ok(await post(f"/v1/customers/{fresh}/entitlements", json={"feature": "exports", "kind": "boolean"}))
            params["feature_key"] = "exports" if path.endswith("}") else "tokens"
        if path.startswith("DELETE") and path.endswith("/override"):
            await ok(await c.put(f"/v1/customers/{fresh}/entitlements/tokens/override", json={"hard_limit": 2000}))
        return params
    if "{reservation_id}" in path:
        hold = await ok(await post("/v1/reservations", json={"customer": "acme", "feature": "tokens", "quantity": 1,
                                                            "ttl_seconds": 600}))
        return {"reservation_id": hold["reservation"]["id"]}
    if "{grant_id}" in path:
        grant = await ok(await post("/v1/customers/acme/entitlements/tokens/grants", json={"amount": 1}))
        return {"grant_id": grant["id"]}
    if "{key_id}" in path:
        return {"key_id": (await ok(await post("/v1/api-keys", json={"scope": "read", "name": fresh})))["id"]}
    if "{endpoint_id}" in path:
        endpoint = await ok(await post("/v1/webhook-endpoints", json={"url": f"http://127.0.0.1:9/{fresh}"}))
        return {"endpoint_id": endpoint["id"]}
    if "{rule_id}" in path:
        rule = await ok(await post("/v1/notification-rules", json={
            "event_type": "entitlement.threshold_reached", "name": fresh,
            "thresholds": [{"type": "percent", "value": 90}]}))
        return {"rule_id": rule["id"]}
    if "{plan_key}" in path:
        await ok(await post("/v1/plans", json={"key": fresh, "name": fresh,
                                              "entitlements": [{"feature": "sso", "kind": "boolean"}]}))
        return {"plan_key": fresh}
    if path.startswith("DELETE /v1/meters/"):
        await ok(await post("/v1/meters", json={"key": fresh, "event_type": fresh, "aggregation": "COUNT"}))
        return {"meter_key": fresh}
    if path.startswith("DELETE /v1/features/"):
        await ok(await post("/v1/features", json={"key": fresh}))
        return {"feature_key": fresh}
    return {}


async def prepared(world: Any, op: native.Operation) -> tuple[Any, dict[str, str]]:
    """A valid body for the operation and the path parameters of its own sandbox."""
    params = await sandbox(world, op)
    body, path = await request_for(world, op)
    if op.path.endswith("/release") and "/seats/" in op.path:
        body = {"item": "ann"}  # the seat the sandbox holds
    return body, {**params, **path}


async def perform(world: Any, op: native.Operation) -> Any:
    body, path = await prepared(world, op)
    return documented(op, await send(world, op, body, **path))


@pytest.mark.parametrize("op", WRITES, ids=str)
async def test_every_write_answers_in_the_json_conventions(world, op):
    """Ids, times, money and quantities in what a write answers follow the same rules as reads;
    a delete answers 204 with nothing in it."""
    resp = await perform(world, op)
    assert resp.status_code < 300, resp.text
    if op.method == "DELETE":
        assert (resp.status_code, resp.content) == (204, b"")
    else:
        assert problems_in(resp.json(), path=op.path) == []


@pytest.mark.parametrize("op", WRITES, ids=str)
async def test_every_write_answer_matches_its_documented_schema(world, op):
    """Status, content type and body are what the OpenAPI document says the write answers."""
    resp = await perform(world, op)
    assert resp.status_code < 300, resp.text
    schemathesis.openapi.from_dict(native.SPEC)[op.path][op.method].validate_response(resp)


async def _count(world: Any, op: native.Operation, path: dict[str, str]) -> int:
    """How many items the list beside a create holds (its usage, for a consuming check)."""
    c = world.tenant.client
    if str(op) == "POST /v1/check":
        state = await native.ok(await c.get("/v1/customers/acme/entitlements/tokens"))
        return int(state["usage"])
    url, items = world.catalogue.url(op.path, **path), 0
    cursor = None
    while True:
        answer = await native.ok(await c.get(url, params={"limit": 1000, **({"cursor": cursor} if cursor else {})}))
        items += len(answer["items"])
        if not (cursor := answer["next_cursor"]):
            return items


def _listed_or_consuming(op: native.Operation) -> bool:
    return any(lst.path == op.path for lst in native.LISTS) or str(op) == "POST /v1/check"


@pytest.mark.parametrize("op", [op for op in CREATES if _listed_or_consuming(op)], ids=str)
async def test_a_create_retried_with_its_key_creates_nothing_twice(world, op):
    """The list beside a create grows by one for the first request and not at all for its retry;
    a consuming check counts its quantity once."""
    (body, path), key = await request_for(world, op), {"Idempotency-Key": world.catalogue.fresh("once")}
    before = await _count(world, op, path)
    first = documented(op, await send(world, op, body, headers=key, **path))
    after_first = await _count(world, op, path)
    again = documented(op, await send(world, op, body, headers=key, **path))
    assert first.status_code < 300 and again.headers.get("idempotent-replayed") == "true", again.text
    assert (after_first - before, await _count(world, op, path)) == (1, after_first)


def _with_body() -> list[native.Operation]:
    return [op for op in native.OPERATIONS if "requestBody" in op.spec]


@pytest.mark.parametrize("op", _with_body(), ids=str)
async def test_a_body_that_is_not_json_is_a_documented_400_problem(world, op):
    """Malformed JSON is a 400 `application/problem+json` with type, title, status and detail."""
    params = await sandbox(world, op)
    url = world.catalogue.url(op.path, **params)
    resp = documented(op, await world.tenant.client.request(
        op.method, url, content=b'{"nope', headers={"content-type": "application/json"}))
    assert_problem(resp, 400)


@pytest.mark.parametrize("op", native.LISTS, ids=str)
@pytest.mark.parametrize(("name", "value"), [("limit", "ten"), ("cursor", "not-a-cursor")])
async def test_a_list_parameter_it_cannot_read_is_a_4xx_naming_it(world, op, name, value):
    """A `limit` that is no number or a `cursor` the API never handed out is refused naming it."""
    resp = documented(op, await world.tenant.client.get(world.catalogue.url(op.path), params={name: value}))
    assert 400 <= resp.status_code < 500, resp.text
    assert_problem(resp, resp.status_code, name)


ACTIONS = [op for op in POSTS if op not in CREATES]


@pytest.mark.parametrize("op", ACTIONS, ids=str)
async def test_an_action_retried_with_its_key_gets_the_first_answer(world, op):
    """A commit, a void, a seat activation or a plan change sent twice with one key is done once:
    the retry answers the first status and body, marked replayed; another body is a 409."""
    key = {"Idempotency-Key": world.catalogue.fresh("act")}
    body, path = await prepared(world, op)
    first = documented(op, await send(world, op, body, headers=key, **path))
    again = documented(op, await send(world, op, body, headers=key, **path))
    assert first.status_code < 300, first.text
    assert (again.status_code, again.headers.get("idempotent-replayed"), again.json()) == (
        first.status_code, "true", first.json())
    if another_body(body) != body:
        assert_problem(documented(op, await send(world, op, another_body(body), headers=key, **path)), 409)


def _with_object_body() -> list[native.Operation]:
    return [op for op in _with_body() if str(op) != "POST /v1/events"]  # a batch: its events are data


@pytest.mark.parametrize("op", _with_object_body(), ids=str)
async def test_a_field_the_body_does_not_take_is_a_422_naming_it(world, op):
    """A misspelt field is refused naming it, never ignored (the change asked for would not be made)."""
    body, path = await prepared(world, op)
    resp = documented(op, await send(world, op, {**(body or {}), "colour": "red"}, **path))
    assert_problem(resp, 422, "colour")
