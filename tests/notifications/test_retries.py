"""Retries, dead letters, disabling, and leases: driven by explicit times, never by sleeping."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from allotment.notifications import outbox, queries, retries
from allotment.notifications.sender import Outcome
from allotment.types import utcnow
from tests.notifications.conftest import customer_id, drain, emit, endpoint, ok
from tests.servers import free_port


def test_backoff_grows_threefold_to_a_ceiling_with_bounded_jitter():
    assert retries.delay(1, jitter=0.5) == timedelta(seconds=10)
    assert retries.delay(2, jitter=0.5) == timedelta(seconds=30)
    assert retries.delay(30, jitter=0.5) == retries.CEILING
    for attempt in range(1, 40):
        low, high = retries.delay(attempt, jitter=0.0), retries.delay(attempt, jitter=0.999)
        middle = retries.delay(attempt, jitter=0.5)
        assert middle * 0.8 <= low < middle < high <= middle * 1.2


def test_schedule_retries_for_a_day_in_about_eleven_attempts():
    """Whatever the jitter, a delivery is tried for at least 24 hours, in 9 to 13 attempts."""
    for jitter in (0.0, 0.5, 0.999):
        first = at = datetime(2026, 1, 1, tzinfo=UTC)
        attempts = 1
        while not retries.gives_up(first, at):
            at += retries.delay(attempts, jitter=jitter)
            attempts += 1
        assert at - first >= timedelta(hours=24) and 9 <= attempts <= 13


async def _until_settled(db, tenant, sender, hook_id: str, at: datetime) -> dict[str, Any]:
    """Attempt at each next_attempt_at until the delivery is no longer pending."""
    for _ in range(30):
        await drain(db, sender, at=at)
        resp = await tenant.client.get(f"/v1/webhook-endpoints/{hook_id}/deliveries")
        [delivery] = [d for d in (await ok(resp))["items"] if d["type"] != "webhook_endpoint.disabled"]
        if delivery["status"] != "pending":
            return delivery  # type: ignore[no-any-return]
        at = datetime.fromisoformat(delivery["next_attempt_at"])
    raise AssertionError("still pending after 30 rounds")


async def test_delivery_is_dead_lettered_after_a_day_of_failures(db, tenant, sender):
    hook = await endpoint(tenant, f"http://127.0.0.1:{free_port()}/refused")
    t0 = utcnow()
    await emit(db, tenant, "k", at=t0)
    delivery = await _until_settled(db, tenant, sender, hook["id"], t0)
    assert delivery["status"] == "dead" and delivery["next_attempt_at"] is None
    times = [datetime.fromisoformat(a["at"]) for a in delivery["attempts"]]
    assert times == sorted(times) and times[-1] - times[0] >= timedelta(hours=24)
    assert times[-2] - times[0] < timedelta(hours=24)  # the first failure past the horizon is the last
    assert all("cannot connect" in a["error"].lower() for a in delivery["attempts"])
    assert await drain(db, sender, at=t0 + timedelta(days=30)) == 0


async def test_endpoint_failing_for_the_whole_horizon_is_disabled_and_the_operator_told(
    db, tenant, receiver, sender, capsys
):
    """Disabled with a reason on the endpoint, an error log line, and a notification elsewhere."""
    down = await endpoint(tenant, f"http://127.0.0.1:{free_port()}/refused")
    await endpoint(tenant, receiver.url, event_types=["webhook_endpoint.disabled"])
    t0 = utcnow()
    await emit(db, tenant, "k", at=t0)
    await _until_settled(db, tenant, sender, down["id"], t0)
    read = await ok(await tenant.client.get(f"/v1/webhook-endpoints/{down['id']}"))
    assert read["enabled"] is False and "every attempt failed for 24 hours" in read["disabled_reason"]
    [line] = [x for x in capsys.readouterr().out.splitlines() if "webhook endpoint disabled" in x]
    assert "error" in line and down["id"] in line
    await drain(db, sender, at=t0 + timedelta(days=2))
    [told] = receiver.received
    assert told.json["type"] == "webhook_endpoint.disabled"
    assert told.json["data"]["endpoint_id"] == down["id"]


async def test_a_rejected_message_is_dead_lettered_without_disabling_its_endpoint(
    db, tenant, receiver, sender
):
    """The endpoint took other messages meanwhile: the message is bad, not the endpoint."""
    receiver.respond = lambda got: (400, b"bad") if got.json["data"]["key"] == "poison" else (200, b"ok")
    hook = await endpoint(tenant, receiver.url)
    t0 = utcnow()
    await emit(db, tenant, "poison", at=t0)
    await emit(db, tenant, "fine", at=t0)
    delivery = await _until_settled_for(db, tenant, sender, hook["id"], t0, "poison")
    assert delivery["status"] == "dead"
    assert (await ok(await tenant.client.get(f"/v1/webhook-endpoints/{hook['id']}")))["enabled"] is True


async def _until_settled_for(db, tenant, sender, hook_id: str, at: datetime, key: str) -> dict[str, Any]:
    notifications = (await ok(await tenant.client.get("/v1/notifications")))["items"]
    [target] = [n["id"] for n in notifications if n["payload"]["key"] == key]
    for _ in range(30):
        await drain(db, sender, at=at)
        [delivery] = (await ok(await tenant.client.get(f"/v1/notifications/{target}")))["deliveries"]
        if delivery["status"] != "pending":
            return delivery  # type: ignore[no-any-return]
        at = datetime.fromisoformat(delivery["next_attempt_at"])
    raise AssertionError("still pending after 30 rounds")


async def test_a_leased_delivery_is_claimed_by_nobody_else_until_the_lease_ends(db, tenant):
    await endpoint(tenant, "http://127.0.0.1:9/never-called")
    t0 = utcnow()
    await emit(db, tenant, "k", at=t0)
    lease = timedelta(seconds=60)
    async with db.transaction() as session:
        await outbox.fan_out(session, at=t0)
        [first] = await outbox.claim(session, at=t0, limit=10, lease_for=lease)
    async with db.transaction() as session:
        assert await outbox.claim(session, at=t0 + lease - timedelta(seconds=1), limit=10, lease_for=lease) == []
    async with db.transaction() as session:
        [again] = await outbox.claim(session, at=t0 + lease, limit=10, lease_for=lease)
    assert again.message_id == first.message_id and again.attempt == 2 and again.lease != first.lease


async def test_a_worker_that_outlived_its_lease_changes_nothing(db, tenant):
    """Only the current lease holder moves a delivery on; the late one's attempt is still logged."""
    hook = await endpoint(tenant, "http://127.0.0.1:9/never-called")
    t0 = utcnow()
    await emit(db, tenant, "k", at=t0)
    lease = timedelta(seconds=60)
    async with db.transaction() as session:
        await outbox.fan_out(session, at=t0)
        [stale] = await outbox.claim(session, at=t0, limit=10, lease_for=lease)
    async with db.transaction() as session:
        [current] = await outbox.claim(session, at=t0 + lease, limit=10, lease_for=lease)
    success = Outcome(True, 200, None, 5, "ok")
    async with db.transaction() as session:
        await outbox.record(session, [(stale, success)], at=t0 + lease, rng=random.Random(1))
    [delivery] = (await ok(await tenant.client.get(f"/v1/webhook-endpoints/{hook['id']}/deliveries")))["items"]
    assert delivery["status"] == "pending" and len(delivery["attempts"]) == 1
    async with db.transaction() as session:
        await outbox.record(session, [(current, success)], at=t0 + lease, rng=random.Random(1))
    [delivery] = (await ok(await tenant.client.get(f"/v1/webhook-endpoints/{hook['id']}/deliveries")))["items"]
    assert delivery["status"] == "delivered"



async def test_a_replay_asked_while_an_attempt_is_in_flight_is_still_sent(db, tenant, receiver):
    """The in-flight attempt's answer, arriving after the replay, does not swallow the replay."""
    hook = await endpoint(tenant, receiver.url)
    t0 = utcnow()
    await emit(db, tenant, "k", at=t0)
    async with db.transaction() as session:
        await outbox.fan_out(session, at=t0)
        [in_flight] = await outbox.claim(session, at=t0, limit=10, lease_for=timedelta(seconds=60))
    await ok(await tenant.client.post(f"/v1/notifications/{in_flight.message_id}/replay"), 202)
    async with db.transaction() as session:
        await outbox.record(session, [(in_flight, Outcome(True, 200, None, 5, "ok"))], at=t0,
                            rng=random.Random(1))
    [delivery] = (await ok(await tenant.client.get(f"/v1/webhook-endpoints/{hook['id']}/deliveries")))["items"]
    assert delivery["status"] == "pending"


async def test_an_endpoint_disabled_for_being_down_holds_its_other_deliveries(db, tenant, sender):
    """Other customers' messages to it wait for it to be enabled, without keeping workers busy."""
    down = await endpoint(tenant, f"http://127.0.0.1:{free_port()}/refused")
    t0 = utcnow()
    await emit(db, tenant, "k", at=t0)
    await drain(db, sender, at=t0)
    later = t0 + timedelta(hours=2)
    await emit(db, tenant, "later", at=later, customer=await customer_id(tenant, "c"))
    await drain(db, sender, at=later)
    await drain(db, sender, at=t0 + timedelta(hours=25))
    assert (await ok(await tenant.client.get(f"/v1/webhook-endpoints/{down['id']}")))["enabled"] is False
    assert await queries.anything_due(db, at=t0 + timedelta(days=3)) is False
