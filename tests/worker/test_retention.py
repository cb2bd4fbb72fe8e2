"""Idempotency keys are remembered for the retention, then forgotten by the workers."""

from __future__ import annotations

from datetime import timedelta

from allotment.config import Settings
from allotment.types import utcnow
from allotment.worker import retention
from allotment.worker.delivery import DeliveryOptions
from tests.entitlements.catalogue import customer, feature, metered, ok, plan, subscribe


async def _metered_customer(c):  # type: ignore[no-untyped-def]
    await feature(c, "api-calls")
    await plan(c, "starter", [metered("api-calls", 100, None, 100)])
    await customer(c, "acme")
    await subscribe(c, "acme", "starter")


async def _consume(c, key):  # type: ignore[no-untyped-def]
    body = {"customer": "acme", "feature": "api-calls", "consume": True, "idempotency_key": key}
    return await c.post("/v1/check", json=body)


async def test_keys_given_within_the_retention_still_replay_after_a_sweep(tenant, db):
    c = tenant.client
    await _metered_customer(c)
    before_any = utcnow()
    await ok(await _consume(c, "req-1"))
    await ok(await c.post("/v1/customers", json={"key": "k-1", "name": "K"}, headers={"Idempotency-Key": "c-1"}), 201)
    assert await retention.forget_idempotency_keys(db, before=before_any) == 0
    assert (await _consume(c, "req-1")).headers["Idempotent-Replayed"] == "true"
    again = await c.post("/v1/customers", json={"key": "k-1", "name": "K"}, headers={"Idempotency-Key": "c-1"})
    assert (again.status_code, again.headers["Idempotent-Replayed"]) == (201, "true")


async def test_a_key_older_than_the_retention_is_forgotten_and_counts_as_new(tenant, db):
    """After the sweep, the same key is a new request: the consume counts again, and the
    customer create meets the existing customer (409) instead of replaying its 201."""
    c = tenant.client
    await _metered_customer(c)
    await ok(await _consume(c, "req-1"))
    await ok(await c.post("/v1/customers", json={"key": "k-1", "name": "K"}, headers={"Idempotency-Key": "c-1"}), 201)
    assert await retention.forget_idempotency_keys(db, before=utcnow() + timedelta(seconds=1)) == 2
    retry = await ok(await _consume(c, "req-1"))
    assert retry["usage"] == 2
    again = await c.post("/v1/customers", json={"key": "k-1", "name": "K"}, headers={"Idempotency-Key": "c-1"})
    assert again.status_code == 409 and "idempotent-replayed" not in again.headers


async def test_the_sweep_forgets_a_backlog_larger_than_one_batch(tenant, db, monkeypatch):
    c = tenant.client
    await _metered_customer(c)
    monkeypatch.setattr(retention, "BATCH", 2)
    for i in range(5):
        await ok(await _consume(c, f"req-{i}"))
    assert await retention.forget_idempotency_keys(db, before=utcnow() + timedelta(seconds=1)) == 5


def test_the_retention_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("ALLOTMENT_IDEMPOTENCY_RETENTION_HOURS", "72")
    options = DeliveryOptions.from_settings(Settings.from_env())
    assert options.idempotency_retention == timedelta(hours=72)
    assert DeliveryOptions.from_settings(Settings()).idempotency_retention == timedelta(hours=24)
