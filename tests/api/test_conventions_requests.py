"""Every native operation refuses and retries the same way (API.md): unknown keys are 404s
naming the resource, invalid bodies 422s naming the field, creates and consumes honour
`Idempotency-Key`; and each status it answers is one its OpenAPI operation documents."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from tests.api import native
from tests.api.test_bad_input import assert_problem

UNKNOWN = "nope-unknown"
# The resource a path parameter names, as a problem's `type` names it (`<resource>_not_found`).
RESOURCE = {
    "customer_key": {"customer"}, "feature_key": {"feature", "entitlement"}, "meter_key": {"meter"},
    "plan_key": {"plan"}, "subscription_id": {"subscription"}, "grant_id": {"grant"},
    "reservation_id": {"reservation"}, "endpoint_id": {"webhook_endpoint"}, "key_id": {"api_key"},
    "notification_id": {"notification"}, "rule_id": {"notification_rule"},
}
# POSTs that neither create nor consume: a query, and revoking (a retry answers the same key).
NOT_IDEMPOTENT_BY_KEY = {"POST /v1/meters/{meter_key}/query", "POST /v1/api-keys/{key_id}/revoke"}


def documented(op: native.Operation, resp: httpx.Response) -> httpx.Response:
    assert str(resp.status_code) in op.spec["responses"], (str(op), resp.status_code, resp.text)
    return resp


async def request_for(world: Any, op: native.Operation) -> tuple[Any, dict[str, str]]:
    """A valid body for the operation and the path parameters it needs beyond the
    catalogue's, so that what the test changes is the only thing wrong."""
    fresh = world.catalogue.fresh("conv")
    if str(op) in ("POST /v1/subscriptions", "POST /v1/customers/{customer_key}/entitlements"):
        await native.ok(await world.tenant.client.post("/v1/customers", json={"key": fresh, "name": fresh}))
        path = {"customer_key": fresh}
    else:
        path = {}
    bodies: dict[str, Any] = {
        "POST /v1/check": {"customer": "acme", "feature": "tokens", "quantity": 1, "consume": True},
        "POST /v1/events": [{"specversion": "1.0", "id": fresh, "source": "conventions", "type": "prompt",
                             "subject": "acme-key", "data": {"tokens": 1}}],
        "POST /v1/meters": {"key": fresh, "event_type": "prompt", "aggregation": "COUNT"},
        "POST /v1/customers": {"key": fresh, "name": fresh},
        "POST /v1/api-keys": {"scope": "read", "name": fresh},
        "POST /v1/features": {"key": fresh},
        "POST /v1/plans": {"key": fresh, "name": fresh, "entitlements": [{"feature": "sso", "kind": "boolean"}]},
        "POST /v1/subscriptions": {"customer": fresh, "plan": "pro"},
        "POST /v1/customers/{customer_key}/entitlements": {"feature": "exports", "kind": "boolean"},
        "POST /v1/reservations": {"customer": "acme", "feature": "tokens", "quantity": 1, "ttl_seconds": 60},
        "POST /v1/customers/{customer_key}/entitlements/{feature_key}/grants": {"amount": 1},
        "POST /v1/webhook-endpoints": {"url": f"http://127.0.0.1:9/{fresh}"},
        "POST /v1/notification-rules": {"event_type": "entitlement.threshold_reached", "name": fresh,
                                        "thresholds": [{"type": "percent", "value": 90}]},
        "PATCH /v1/meters/{meter_key}": {"name": "Tokens"},
        "PATCH /v1/customers/{customer_key}": {"name": "Acme"},
        "PATCH /v1/features/{feature_key}": {"name": "Tokens"},
        "PATCH /v1/webhook-endpoints/{endpoint_id}": {"description": "main"},
        "PATCH /v1/notification-rules/{rule_id}": {"name": "tokens at 50%"},
        "POST /v1/meters/{meter_key}/query": {},
        "POST /v1/subscriptions/{subscription_id}/change-plan": {"plan": "pro", "at": "period_end"},
        "POST /v1/subscriptions/{subscription_id}/cancel": {"at": "period_end"},
        "POST /v1/customers/{customer_key}/entitlements/{feature_key}/reset": {},
        "PUT /v1/customers/{customer_key}/entitlements/{feature_key}/override": {"hard_limit": 2000},
        "POST /v1/customers/{customer_key}/seats/{feature_key}/activate": {"item": fresh},
        "POST /v1/customers/{customer_key}/seats/{feature_key}/heartbeat": {"item": "ann"},
        "POST /v1/customers/{customer_key}/seats/{feature_key}/release": {"item": fresh},
        "POST /v1/reservations/{reservation_id}/commit": {"quantity": 1},
        "POST /v1/grants/{grant_id}/void": {"reason": "refunded"},
    }
    if str(op) in bodies:
        return bodies[str(op)], path
    assert "requestBody" not in op.spec or not op.spec["requestBody"].get("required"), f"no body for {op}"
    return None, path


async def send(world: Any, op: native.Operation, body: Any, *, headers: dict[str, str] | None = None,
               **path: str) -> httpx.Response:
    url = world.catalogue.url(op.path, **path)
    kwargs: dict[str, Any] = {} if body is None else {"json": body}
    return await world.tenant.client.request(op.method, url, headers=headers, **kwargs)


def _with_params() -> list[tuple[native.Operation, str]]:
    return [(op, name) for op in native.OPERATIONS for name in re.findall(r"{(\w+)}", op.path)]


@pytest.mark.parametrize(("op", "param"), _with_params(), ids=lambda v: str(v))
async def test_an_unknown_key_in_the_path_is_a_404_naming_the_resource(world, op, param):
    """`<resource>_not_found` for the resource that path parameter names, documented."""
    body, path = await request_for(world, op)
    resp = documented(op, await send(world, op, body, **{**path, param: UNKNOWN}))
    assert_problem(resp, 404)
    assert resp.json()["type"] in {f"{r}_not_found" for r in RESOURCE[param]}, resp.json()


def _with_required_fields() -> list[native.Operation]:
    def required(op: native.Operation) -> list[str]:
        schema = op.spec.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
        ref = schema.get("$ref")
        return native.SPEC["components"]["schemas"][ref.rsplit("/", 1)[1]].get("required", []) if ref else []

    return [op for op in native.OPERATIONS if required(op)]


@pytest.mark.parametrize("op", _with_required_fields(), ids=str)
async def test_an_empty_body_is_a_422_naming_each_required_field(world, op):
    """`errors[]` names every field the body lacks; the 422 is documented."""
    resp = documented(op, await send(world, op, {}))
    schema = op.spec["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    for field in native.SPEC["components"]["schemas"][schema]["required"]:
        assert_problem(resp, 422, field)


POSTS = [op for op in native.OPERATIONS if op.method == "POST" and str(op) not in NOT_IDEMPOTENT_BY_KEY]
CREATES = [op for op in POSTS if "201" in op.spec["responses"]] + [
    op for op in POSTS if str(op) in ("POST /v1/events", "POST /v1/check")]


@pytest.mark.parametrize("op", POSTS, ids=str)
async def test_a_post_that_creates_or_consumes_documents_idempotency_key(op):
    """Clients learn from the document that a retry with the key is safe."""
    headers = [p["name"] for p in op.spec.get("parameters", []) if p["in"] == "header"]
    assert "Idempotency-Key" in headers


@pytest.mark.parametrize("op", CREATES, ids=str)
async def test_a_create_retried_with_its_key_gets_the_first_answer_and_another_body_a_409(world, op):
    """Same key and body: the same status and body, marked replayed; another body: a 409."""
    (body, path), key = await request_for(world, op), {"Idempotency-Key": world.catalogue.fresh("idem")}
    first = documented(op, await send(world, op, body, headers=key, **path))
    again = documented(op, await send(world, op, body, headers=key, **path))
    assert first.status_code in (200, 201), first.text
    assert (again.status_code, again.headers.get("idempotent-replayed")) == (first.status_code, "true")
    assert {**again.json(), "secret": None} == {**first.json(), "secret": None}  # a key's secret is shown once
    other = documented(op, await send(world, op, another_body((await request_for(world, op))[0]), headers=key, **path))
    assert_problem(other, 409)
    assert other.json()["type"] == "idempotency_conflict"


def another_body(body: Any) -> Any:
    """Another valid request: creates of keyed resources name a fresh key already."""
    if isinstance(body, dict):
        for field, other in (("quantity", 2), ("amount", 2), ("plan", "starter"), ("feature", "sso")):
            if field in body:
                return {**body, field: other}
    return body


async def test_a_retried_revoke_answers_the_revoked_key_again(world):
    """Revoking is idempotent by itself, so it needs no `Idempotency-Key`."""
    c = world.tenant.client
    key = (await c.post("/v1/api-keys", json={"scope": "read"})).json()
    first = await c.post(f"/v1/api-keys/{key['id']}/revoke")
    again = await c.post(f"/v1/api-keys/{key['id']}/revoke")
    assert (first.status_code, again.status_code, again.json()) == (200, 200, first.json())
