"""Creates and actions sent with an Idempotency-Key: a retry gets the first answer, a reuse is refused."""

from __future__ import annotations

from sqlalchemy import select
from tests.entitlements.catalogue import customer, feature, metered, ok, plan, subscribe
from tests.helpers import event, meter

from allotment.tenancy.models import IdempotentRequest


async def test_retry_with_same_key_returns_the_first_answer(tenant):
    headers = {"Idempotency-Key": "create-tokens-1"}
    first = await tenant.client.post("/v1/meters", json=meter(), headers=headers)
    again = await tenant.client.post("/v1/meters", json=meter(), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len((await tenant.client.get("/v1/meters")).json()["items"]) == 1


async def test_a_retry_serialised_with_other_spacing_or_key_order_is_the_same_request(tenant):
    headers = {"Idempotency-Key": "same-1", "content-type": "application/json"}
    first = await tenant.client.post("/v1/customers", content=b'{"key":"ws-1","name":"W"}', headers=headers)
    for body in (b'{"key": "ws-1", "name": "W"}', b'{"name":"W","key":"ws-1"}'):
        again = await tenant.client.post("/v1/customers", content=body, headers=headers)
        assert (again.status_code, again.json(), again.headers["idempotent-replayed"]) == (201, first.json(), "true")


async def test_a_retried_plan_change_gets_the_first_answer_not_a_conflict(tenant):
    c = tenant.client
    for key in ("a", "b"):
        await c.post("/v1/features", json={"key": f"f-{key}"})
        body = {"key": f"p-{key}", "name": "P", "entitlements": [{"feature": f"f-{key}", "kind": "boolean"}]}
        await c.post("/v1/plans", json=body)
        await c.post(f"/v1/plans/p-{key}/publish")
    await c.post("/v1/customers", json={"key": "c", "name": "C"})
    sub = (await c.post("/v1/subscriptions", json={"customer": "c", "plan": "p-a"})).json()
    headers = {"Idempotency-Key": "cp-1"}
    first = await c.post(f"/v1/subscriptions/{sub['id']}/change-plan", json={"plan": "p-b"}, headers=headers)
    again = await c.post(f"/v1/subscriptions/{sub['id']}/change-plan", json={"plan": "p-b"}, headers=headers)
    assert (first.status_code, again.status_code, again.json()) == (200, 200, first.json())
    assert again.headers["idempotent-replayed"] == "true"


async def test_an_ingest_retried_with_its_key_gets_the_first_answer_and_another_batch_is_409(tenant):
    c = tenant.client
    headers = {"Idempotency-Key": "ev-1"}
    batch = [event(id="e-1"), event(id="e-2")]
    first = await c.post("/v1/events", json=batch, headers=headers)
    again = await c.post("/v1/events", json=batch, headers=headers)
    assert (first.json()["accepted"], again.json(), again.headers["idempotent-replayed"]) == (2, first.json(), "true")
    other = await c.post("/v1/events", json=[event(id="e-3")], headers=headers)
    assert (other.status_code, other.json()["type"]) == (409, "idempotency_conflict")
    assert (await c.post("/v1/events", json=batch)).json()["duplicates"] == 2


async def test_same_key_with_another_body_is_409(tenant):
    headers = {"Idempotency-Key": "k"}
    await tenant.client.post("/v1/customers", json={"key": "a", "name": "A"}, headers=headers)
    resp = await tenant.client.post("/v1/customers", json={"key": "b", "name": "B"}, headers=headers)
    assert resp.status_code == 409
    assert "Idempotency-Key" in resp.json()["detail"]


async def test_without_a_key_a_second_create_is_a_conflict(tenant):
    await tenant.client.post("/v1/meters", json=meter())
    assert (await tenant.client.post("/v1/meters", json=meter())).status_code == 409


async def test_failed_request_is_not_remembered(tenant):
    """A refused create can be corrected and retried under the same key."""
    headers = {"Idempotency-Key": "fix-me"}
    bad = await tenant.client.post("/v1/meters", json=meter(aggregation="NOPE"), headers=headers)
    assert bad.status_code == 422
    good = await tenant.client.post("/v1/meters", json=meter(), headers=headers)
    assert good.status_code == 201


async def test_keys_are_per_tenant(tenant, other_tenant):
    headers = {"Idempotency-Key": "shared"}
    await tenant.client.post("/v1/meters", json=meter("a"), headers=headers)
    resp = await other_tenant.client.post("/v1/meters", json=meter("b"), headers=headers)
    assert resp.status_code == 201 and resp.json()["key"] == "b"
    assert "idempotent-replayed" not in resp.headers


async def _tokens_customer(c):  # type: ignore[no-untyped-def]
    await feature(c, "tokens")
    await plan(c, "starter", [metered("tokens", 10, None, 10)])
    await customer(c, "acme")
    await subscribe(c, "acme", "starter")


async def _grant(c):  # type: ignore[no-untyped-def]
    return await ok(await c.post("/v1/customers/acme/entitlements/tokens/grants", json={"amount": 5}), 201)


async def test_a_retried_void_gets_the_first_answer(tenant):
    c = tenant.client
    await _tokens_customer(c)
    grant = await _grant(c)
    headers = {"Idempotency-Key": "void-1"}
    first = await c.post(f"/v1/grants/{grant['id']}/void", json={"reason": "refunded"}, headers=headers)
    again = await c.post(f"/v1/grants/{grant['id']}/void", json={"reason": "refunded"}, headers=headers)
    assert (first.status_code, again.status_code, again.json()) == (200, 200, first.json())
    assert again.headers["idempotent-replayed"] == "true"
    other = await c.post(f"/v1/grants/{grant['id']}/void", json={"reason": "other"}, headers=headers)
    assert (other.status_code, other.json()["type"]) == (409, "idempotency_conflict")


async def test_a_key_reused_on_another_resource_is_409_not_the_other_answer(tenant):
    """The same key and body sent to void another grant is another request."""
    c = tenant.client
    await _tokens_customer(c)
    a, b = await _grant(c), await _grant(c)
    headers = {"Idempotency-Key": "void-1"}
    await ok(await c.post(f"/v1/grants/{a['id']}/void", json={"reason": "refunded"}, headers=headers))
    other = await c.post(f"/v1/grants/{b['id']}/void", json={"reason": "refunded"}, headers=headers)
    assert (other.status_code, other.json()["type"]) == (409, "idempotency_conflict")
    assert (await ok(await c.get(f"/v1/grants/{b['id']}")))["voided_at"] is None


async def test_a_retried_publish_gets_the_first_answer(tenant):
    c = tenant.client
    await feature(c, "f")
    await plan(c, "pro", [{"feature": "f", "kind": "boolean"}], publish=False)
    headers = {"Idempotency-Key": "publish-1"}
    first = await c.post("/v1/plans/pro/publish", headers=headers)
    again = await c.post("/v1/plans/pro/publish", headers=headers)
    assert (first.status_code, again.status_code, again.json()) == (200, 200, first.json())
    assert again.headers["idempotent-replayed"] == "true"
    assert (await c.post("/v1/plans/pro/publish")).status_code == 409  # without it: no draft left


async def test_a_retried_key_creation_creates_no_second_key_and_shows_no_secret(tenant):
    """The secret was shown once: the retry names the same key, with `secret: null`."""
    c = tenant.client
    headers, body = {"Idempotency-Key": "key-1"}, {"scope": "read", "name": "dashboards"}
    first = await c.post("/v1/api-keys", json=body, headers=headers)
    again = await c.post("/v1/api-keys", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert first.json()["secret"].startswith("alm_") and again.json()["secret"] is None
    assert {**again.json(), "secret": first.json()["secret"]} == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    keys = (await c.get("/v1/api-keys")).json()["items"]
    assert [k["id"] for k in keys if k["name"] == "dashboards"] == [first.json()["id"]]
    other = await c.post("/v1/api-keys", json={**body, "scope": "admin"}, headers=headers)
    assert (other.status_code, other.json()["type"]) == (409, "idempotency_conflict")


async def test_a_created_key_secret_is_not_kept_with_its_idempotency_key(tenant, db):
    created = await ok(await tenant.client.post("/v1/api-keys", json={"scope": "read"},
                                                headers={"Idempotency-Key": "key-1"}), 201)
    async with db.transaction(readonly=True) as session:
        [stored] = (await session.scalars(select(IdempotentRequest))).all()
    assert created["secret"].encode() not in stored.body and created["id"].encode() in stored.body
