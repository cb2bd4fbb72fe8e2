"""Delivery to a real receiver on loopback: signed, ordered per customer, retried, never stuck."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import update
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from allotment.notifications import outbox, queries, service
from allotment.notifications.models import HELD, Delivery
from allotment.types import utcnow
from allotment.worker.delivery import DeliveryOptions, deliver_due, http_lanes, scan_due
from tests.notifications.conftest import customer_id, drain, emit, endpoint, ok
from tests.notifications.receiver import Received, Receiver
from tests.servers import free_port


async def deliveries(tenant, endpoint_id: str, **params: str) -> list[dict]:
    resp = await tenant.client.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries", params=params)
    return (await ok(resp))["items"]  # type: ignore[no-any-return]


async def test_webhook_is_signed_and_verifies_with_standard_webhooks(db, tenant, receiver, sender):
    """The receiver's Standard Webhooks verifier accepts the headers and body it is sent."""
    hook = await endpoint(tenant, receiver.url)
    cid = await customer_id(tenant, "acme")
    await emit(db, tenant, "threshold:80", at=utcnow(), customer=cid, percent=80)
    await drain(db, sender, at=utcnow())
    [got] = receiver.received
    message = Webhook(hook["secret"]).verify(got.body, got.headers)
    notification = (await ok(await tenant.client.get("/v1/notifications")))["items"][0]
    assert got.webhook_id == notification["id"] == message["id"]
    assert message["type"] == "entitlement.threshold_reached"
    assert message["data"] == {"key": "threshold:80", "percent": 80}
    assert message["timestamp"] == notification["created_at"]


async def test_only_enabled_subscribed_endpoints_receive_a_type(db, tenant, sender):
    denied_only, everything, disabled = Receiver().start(), Receiver().start(), Receiver().start()
    try:
        await endpoint(tenant, denied_only.url, event_types=["entitlement.usage_denied"])
        await endpoint(tenant, everything.url)
        await endpoint(tenant, disabled.url, enabled=False)
        await emit(db, tenant, "t", at=utcnow())
        await emit(db, tenant, "d", at=utcnow(), type="entitlement.usage_denied")
        await drain(db, sender, at=utcnow())
        assert [r.json["type"] for r in denied_only.received] == ["entitlement.usage_denied"]
        assert sorted(r.json["data"]["key"] for r in everything.received) == ["d", "t"]
        assert disabled.received == []
    finally:
        for r in (denied_only, everything, disabled):
            r.stop()


async def test_failed_message_holds_back_later_messages_of_its_customer_only(db, tenant, receiver, sender):
    """a3 waits until a2 is delivered; customer b's messages are not held back by a's."""
    failed_once: set[str] = set()

    def fail_a2_once(got: Received) -> tuple[int, bytes]:
        if got.json["data"]["key"] == "a2" and "a2" not in failed_once:
            failed_once.add("a2")
            return (503, b"busy")
        return (200, b"ok")

    receiver.respond = fail_a2_once
    await endpoint(tenant, receiver.url)
    a, b = await customer_id(tenant, "a"), await customer_id(tenant, "b")
    t0 = utcnow()
    for key, cid in [("a1", a), ("b1", b), ("a2", a), ("b2", b), ("a3", a), ("b3", b)]:
        await emit(db, tenant, key, at=t0, customer=cid)
    await drain(db, sender, at=t0)

    def of(customer: str) -> list[str]:
        return [k for r in receiver.received if (k := r.json["data"]["key"]).startswith(customer)]

    assert of("a") == ["a1", "a2"] and of("b") == ["b1", "b2", "b3"]
    await drain(db, sender, at=t0 + timedelta(minutes=1))
    assert of("a") == ["a1", "a2", "a2", "a3"]


async def test_receiver_refusing_connections_then_up_gets_every_event(db, tenant, sender):
    """Nothing is lost while the receiver is down; repeats are redeliveries with the same id."""
    port = free_port()
    await endpoint(tenant, f"http://127.0.0.1:{port}/hook")
    customers = [await customer_id(tenant, f"c{i}") for i in range(3)]
    t0 = utcnow()
    for i in range(12):
        await emit(db, tenant, f"e{i}", at=t0, customer=customers[i % 3])
    assert await drain(db, sender, at=t0) == 3  # one per customer: the rest wait their turn
    receiver = Receiver().start(port)
    try:
        for hours in range(1, 4):  # a try that timed out on a busy machine is retried later
            await drain(db, sender, at=t0 + timedelta(hours=hours))
        emitted = {n["id"] for n in (await ok(await tenant.client.get("/v1/notifications")))["items"]}
        assert set(receiver.ids()) == emitted
        for i in range(3):
            mine = [r.json["data"]["key"] for r in receiver.received if r.json["data"]["key"] in
                    {f"e{j}" for j in range(i, 12, 3)}]
            assert list(dict.fromkeys(mine)) == [f"e{j}" for j in range(i, 12, 3)]
    finally:
        receiver.stop()


async def test_500_garbage_and_hanging_receivers_are_logged_failures(db, tenant, sender):
    """Each bad receiver costs one logged attempt and a retry; the rest of the queue moves on."""
    answers = {"500": (500, b'{"error": "boom"}' + b"x" * 5000), "garbage": "garbage", "hang": "hang"}
    receivers = {name: Receiver(respond=lambda _r, a=a: a).start() for name, a in answers.items()}
    healthy = Receiver().start()
    try:
        hooks = {name: await endpoint(tenant, r.url) for name, r in receivers.items()}
        await endpoint(tenant, healthy.url)
        t0 = utcnow()
        await emit(db, tenant, "x", at=t0)
        options = DeliveryOptions(timeout=0.5)
        assert await deliver_due(db, sender, at=t0, options=options) == 4
        assert len(healthy.received) == 1
        logs = {name: (await deliveries(tenant, hook["id"]))[0] for name, hook in hooks.items()}
        for delivery in logs.values():
            assert delivery["status"] == "pending" and delivery["next_attempt_at"] > delivery["created_at"]
            assert not delivery["attempts"][0]["succeeded"]
        first = {name: d["attempts"][0] for name, d in logs.items()}
        assert first["500"]["status_code"] == 500 and first["500"]["error"] == "HTTP 500"
        assert first["500"]["response_excerpt"].startswith('{"error": "boom"}')
        assert len(first["500"]["response_excerpt"]) == 1024
        assert first["garbage"]["status_code"] is None and first["garbage"]["error"]
        assert first["hang"]["error"] == "no complete answer within 0.5 s"
    finally:
        for r in (*receivers.values(), healthy):
            r.stop()


async def test_delivery_log_shows_each_attempt(db, tenant, receiver, sender):
    calls = iter([(500, b"down"), (200, b"fine")])
    receiver.respond = lambda _r: next(calls)
    hook = await endpoint(tenant, receiver.url)
    t0 = utcnow()
    await emit(db, tenant, "k", at=t0)
    await drain(db, sender, at=t0)
    await drain(db, sender, at=t0 + timedelta(minutes=1))
    [delivery] = await deliveries(tenant, hook["id"], status="delivered")
    assert delivery["attempt_count"] == 2 and delivery["next_attempt_at"] is None
    assert [(a["attempt"], a["status_code"], a["response_excerpt"]) for a in delivery["attempts"]] == [
        (1, 500, "down"), (2, 200, "fine")]
    assert all(a["latency_ms"] >= 0 for a in delivery["attempts"])
    assert await deliveries(tenant, hook["id"], status="pending") == []


async def test_replay_sends_again_with_the_same_webhook_id(db, tenant, receiver, sender):
    await endpoint(tenant, receiver.url)
    await emit(db, tenant, "k", at=utcnow())
    await drain(db, sender, at=utcnow())
    notification = (await ok(await tenant.client.get("/v1/notifications")))["items"][0]
    replayed = await ok(await tenant.client.post(f"/v1/notifications/{notification['id']}/replay"), 202)
    assert [d["status"] for d in replayed["deliveries"]] == ["pending"]
    await drain(db, sender, at=utcnow())
    assert receiver.ids() == [notification["id"], notification["id"]]


async def test_replay_retried_with_its_idempotency_key_sends_once_more_only(db, tenant, receiver, sender):
    """A client retrying a replay it got no answer to does not send the notification twice more."""
    await endpoint(tenant, receiver.url)
    await emit(db, tenant, "k", at=utcnow())
    await drain(db, sender, at=utcnow())
    notification = (await ok(await tenant.client.get("/v1/notifications")))["items"][0]
    path, key = f"/v1/notifications/{notification['id']}/replay", {"Idempotency-Key": "replay-1"}
    first = await tenant.client.post(path, headers=key)
    again = await tenant.client.post(path, headers=key)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    await drain(db, sender, at=utcnow())
    assert receiver.ids() == [notification["id"], notification["id"]]


async def test_replay_to_a_new_endpoint_sends_it_there(db, tenant, receiver, sender):
    await emit(db, tenant, "k", at=utcnow())
    await drain(db, sender, at=utcnow())  # no endpoint yet: nobody gets it
    hook = await endpoint(tenant, receiver.url)
    notification = (await ok(await tenant.client.get("/v1/notifications")))["items"][0]
    resp = await tenant.client.post(f"/v1/notifications/{notification['id']}/replay",
                                    json={"endpoint_id": hook["id"]})
    assert resp.status_code == 202, resp.text
    await drain(db, sender, at=utcnow())
    assert receiver.ids() == [notification["id"]]


async def test_test_ping_reaches_only_its_endpoint(db, tenant, receiver, sender):
    other = Receiver().start()
    try:
        hook = await endpoint(tenant, receiver.url)
        await endpoint(tenant, other.url)
        sent = await ok(await tenant.client.post(f"/v1/webhook-endpoints/{hook['id']}/test"), 202)
        await drain(db, sender, at=utcnow())
        [got] = receiver.received
        assert got.webhook_id == sent["notification_id"] and got.json["type"] == "webhook.test"
        Webhook(hook["secret"]).verify(got.body, got.headers)
        assert other.received == []
        detail = await ok(await tenant.client.get(f"/v1/notifications/{sent['notification_id']}"))
        assert [d["status"] for d in detail["deliveries"]] == ["delivered"]
    finally:
        other.stop()


async def test_disabled_endpoint_holds_its_deliveries_until_enabled(db, tenant, receiver, sender):
    calls = iter([(500, b"down")])
    receiver.respond = lambda _r: next(calls, (200, b"ok"))
    hook = await endpoint(tenant, receiver.url)
    path = f"/v1/webhook-endpoints/{hook['id']}"
    t0 = utcnow()
    await emit(db, tenant, "k", at=t0)
    await drain(db, sender, at=t0)
    await ok(await tenant.client.patch(path, json={"enabled": False}))
    assert await drain(db, sender, at=t0 + timedelta(days=3)) == 0
    await ok(await tenant.client.patch(path, json={"enabled": True}))
    await drain(db, sender, at=t0 + timedelta(days=3))
    assert len(receiver.received) == 2
    assert (await deliveries(tenant, hook["id"]))[0]["status"] == "delivered"



async def test_a_rotated_secret_overlaps_the_previous_one_for_the_window_asked(db, tenant, receiver, sender):
    """During the overlap every attempt carries a signature by each secret, so a receiver that
    still holds the old secret keeps verifying; after it, only the new secret signs."""
    hook = await endpoint(tenant, receiver.url)
    path = f"/v1/webhook-endpoints/{hook['id']}/rotate-secret"
    rotated = await ok(await tenant.client.post(path, json={"keep_previous_seconds": 2}))
    assert rotated["secret"] != hook["secret"] and rotated["previous_secret_expires_at"]
    await emit(db, tenant, "during", at=utcnow())
    await drain(db, sender, at=utcnow())
    [during] = receiver.received
    for secret in (hook["secret"], rotated["secret"]):
        assert Webhook(secret).verify(during.body, during.headers)["data"]["key"] == "during"
    await asyncio.sleep(2.1)
    await emit(db, tenant, "after", at=utcnow())
    await drain(db, sender, at=utcnow())
    after = receiver.received[1]
    assert Webhook(rotated["secret"]).verify(after.body, after.headers)["data"]["key"] == "after"
    with pytest.raises(WebhookVerificationError):
        Webhook(hook["secret"]).verify(after.body, after.headers)
    shown = await ok(await tenant.client.get(f"/v1/webhook-endpoints/{hook['id']}"))
    assert shown["previous_secret_expires_at"] is None


async def test_rotating_with_no_overlap_retires_the_old_secret_at_once(db, tenant, receiver, sender):
    hook = await endpoint(tenant, receiver.url)
    path = f"/v1/webhook-endpoints/{hook['id']}/rotate-secret"
    rotated = await ok(await tenant.client.post(path, json={"keep_previous_seconds": 0}))
    assert rotated["previous_secret_expires_at"] is None
    await emit(db, tenant, "now", at=utcnow())
    await drain(db, sender, at=utcnow())
    [got] = receiver.received
    Webhook(rotated["secret"]).verify(got.body, got.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(hook["secret"]).verify(got.body, got.headers)


async def test_an_endpoint_may_take_openmeter_bodies(db, tenant, receiver, sender):
    """The same threshold in OpenMeter's form, then, after a PATCH, in the native one."""
    hook = await endpoint(tenant, receiver.url, body_format="openmeter")
    assert hook["body_format"] == "openmeter"
    cid = await customer_id(tenant, "acme")
    payload = {"customer": {"id": cid, "key": "acme"}, "feature": {"id": "fea_1", "key": "tokens"},
               "entitlement_id": "ent_1", "usage": 85, "soft_limit": 100, "hard_limit": 100,
               "balance": 15, "threshold": {"type": "percent", "value": 80, "label": "80%"}}
    await _threshold(db, tenant.id, "80", cid, payload)
    await drain(db, sender, at=utcnow())
    om = Webhook(hook["secret"]).verify(receiver.received[0].body, receiver.received[0].headers)
    assert om["type"] == "entitlements.balance.threshold"
    assert om["data"]["threshold"] == {"value": 80, "type": "PERCENT"}
    assert (om["data"]["value"]["usage"], om["data"]["subject"]["key"]) == (85, "acme")
    await ok(await tenant.client.patch(f"/v1/webhook-endpoints/{hook['id']}", json={"body_format": "native"}))
    await _threshold(db, tenant.id, "100", cid, payload)
    await drain(db, sender, at=utcnow())
    native = Webhook(hook["secret"]).verify(receiver.received[1].body, receiver.received[1].headers)
    assert native["type"] == "entitlement.threshold_reached" and native["data"]["usage"] == 85
    resp = await tenant.client.post("/v1/webhook-endpoints", json={"url": receiver.url, "body_format": "xml"})
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "body_format"


async def test_an_openmeter_body_of_a_notification_stored_without_the_feature_name_names_it_by_key(
    db, tenant, receiver, sender
):
    """Notifications stored before payloads carried the name keep sending the key as the name."""
    hook = await endpoint(tenant, receiver.url, body_format="openmeter")
    cid = await customer_id(tenant, "acme")
    payload = {"customer": {"id": cid, "key": "acme"}, "feature": {"id": "fea_1", "key": "tokens"},
               "entitlement_id": "ent_1", "usage": 85, "soft_limit": 100, "hard_limit": 100, "balance": 15}
    await _threshold(db, tenant.id, "80", cid, payload)
    await drain(db, sender, at=utcnow())
    om = Webhook(hook["secret"]).verify(receiver.received[0].body, receiver.received[0].headers)
    assert om["data"]["feature"] == {"id": "fea_1", "key": "tokens", "name": "tokens"}


async def _threshold(db, tenant_id: str, key: str, customer: str, payload: dict) -> None:
    async with db.transaction() as session:
        await service.emit(session, tenant_id, type="entitlement.threshold_reached", dedupe_key=key,
                           customer_id=customer, payload=payload, at=utcnow())


async def _failing_delivery(db, tenant, sender) -> tuple[dict, object]:
    """An endpoint whose first attempt failed: its delivery is pending, due again in seconds."""
    hook = await endpoint(tenant, f"http://127.0.0.1:{free_port()}/refused")
    t0 = utcnow()
    await emit(db, tenant, "k", at=t0)
    await drain(db, sender, at=t0)
    return hook, t0


async def test_a_disabled_endpoint_leaves_the_workers_idle(db, tenant, sender):
    """Held deliveries are not due: workers do not poll for them while the endpoint is off."""
    hook, t0 = await _failing_delivery(db, tenant, sender)
    await ok(await tenant.client.patch(f"/v1/webhook-endpoints/{hook['id']}", json={"enabled": False}))
    assert await queries.anything_due(db, at=t0 + timedelta(days=3)) is False
    [held] = await deliveries(tenant, hook["id"])
    assert held["status"] == "pending" and held["next_attempt_at"] is None


async def test_an_enabled_endpoint_gets_its_held_deliveries_at_once(db, tenant, receiver, sender):
    """Enabling resumes now, not when the backoff from before the outage would have said."""
    hook = await endpoint(tenant, receiver.url)
    receiver.respond = lambda _r: (500, b"down")
    t0 = utcnow()
    await emit(db, tenant, "k", at=t0)
    await drain(db, sender, at=t0)
    path = f"/v1/webhook-endpoints/{hook['id']}"
    await ok(await tenant.client.patch(path, json={"enabled": False}))
    receiver.respond = lambda _r: (200, b"ok")
    await ok(await tenant.client.patch(path, json={"enabled": True}))
    await drain(db, sender, at=utcnow())
    assert [d["status"] for d in await deliveries(tenant, hook["id"])] == ["delivered"]


async def test_a_deleted_endpoint_leaves_the_workers_idle(db, tenant, sender):
    """Its pending deliveries will never be sent: the log says so and nothing polls for them."""
    hook, t0 = await _failing_delivery(db, tenant, sender)
    notification = (await ok(await tenant.client.get("/v1/notifications")))["items"][0]
    await ok(await tenant.client.delete(f"/v1/webhook-endpoints/{hook['id']}"), 204)
    assert await queries.anything_due(db, at=t0 + timedelta(days=3)) is False
    detail = await ok(await tenant.client.get(f"/v1/notifications/{notification['id']}"))
    assert [d["status"] for d in detail["deliveries"]] == ["dead"]


async def test_replaying_to_every_endpoint_skips_a_deleted_one(db, tenant, receiver, sender):
    """A replay cannot bring back deliveries to an endpoint that no longer exists."""
    hook, t0 = await _failing_delivery(db, tenant, sender)
    notification = (await ok(await tenant.client.get("/v1/notifications")))["items"][0]
    await ok(await tenant.client.delete(f"/v1/webhook-endpoints/{hook['id']}"), 204)
    replayed = await ok(await tenant.client.post(f"/v1/notifications/{notification['id']}/replay"), 202)
    assert [d["status"] for d in replayed["deliveries"]] == ["dead"]
    assert await queries.anything_due(db, at=t0 + timedelta(days=3)) is False


async def test_replaying_to_a_disabled_endpoint_holds_it_until_enabled(db, tenant, receiver, sender):
    hook = await endpoint(tenant, receiver.url)
    t0 = utcnow()
    await emit(db, tenant, "k", at=t0)
    await drain(db, sender, at=t0)
    path = f"/v1/webhook-endpoints/{hook['id']}"
    notification = (await ok(await tenant.client.get("/v1/notifications")))["items"][0]
    await ok(await tenant.client.patch(path, json={"enabled": False}))
    await ok(await tenant.client.post(f"/v1/notifications/{notification['id']}/replay"), 202)
    assert await queries.anything_due(db, at=t0 + timedelta(days=3)) is False
    await ok(await tenant.client.patch(path, json={"enabled": True}))
    await drain(db, sender, at=utcnow())
    assert receiver.ids() == [notification["id"], notification["id"]]


async def test_a_hanging_receiver_does_not_hold_back_what_other_receivers_answered(db, tenant):
    """Answers are recorded as they come, so a healthy endpoint's next message need not wait."""
    hanging = Receiver(respond=lambda _r: "hang").start()
    healthy = Receiver().start()
    options = DeliveryOptions(timeout=60.0)
    try:
        slow = await endpoint(tenant, hanging.url)
        fast = await endpoint(tenant, healthy.url)
        t0 = utcnow()
        await emit(db, tenant, "x", at=t0)
        async with http_lanes(options) as lanes:
            round_ = asyncio.create_task(deliver_due(db, lanes, at=t0, options=options))

            async def fast_is_delivered() -> None:
                while [d["status"] for d in await deliveries(tenant, fast["id"])] != ["delivered"]:
                    await asyncio.sleep(0.05)

            await asyncio.wait_for(fast_is_delivered(), 30)
            [in_flight] = await deliveries(tenant, slow["id"])
            assert in_flight["attempts"] == []
            hanging.release.set()
            assert await round_ == 2
    finally:
        hanging.stop()
        healthy.stop()


async def test_the_periodic_scan_settles_deliveries_left_due_for_endpoints_that_are_off(db, tenant, sender):
    """Deliveries stored due for a disabled or deleted endpoint (by an older version) stop keeping workers busy."""
    off, t0 = await _failing_delivery(db, tenant, sender)
    gone = await endpoint(tenant, f"http://127.0.0.1:{free_port()}/gone")
    await emit(db, tenant, "k2", at=t0)
    await drain(db, sender, at=t0)
    await ok(await tenant.client.patch(f"/v1/webhook-endpoints/{off['id']}", json={"enabled": False}))
    await ok(await tenant.client.delete(f"/v1/webhook-endpoints/{gone['id']}"), 204)
    async with db.transaction() as session:  # as an older version left them
        await session.execute(update(Delivery).values(status="pending", next_attempt_at=t0))
    await scan_due(db, at=t0)
    assert await queries.anything_due(db, at=t0 + timedelta(days=3)) is False
    assert [d["status"] for d in await deliveries(tenant, off["id"])] == ["pending", "pending"]


async def test_the_periodic_scan_sends_deliveries_left_held_for_an_enabled_endpoint(db, tenant, receiver, sender):
    """A delivery held while its endpoint was being enabled is not held for good."""
    hook = await endpoint(tenant, receiver.url)
    t0 = utcnow()
    await emit(db, tenant, "k", at=t0)
    async with db.transaction() as session:
        await outbox.fan_out(session, at=t0)
        await session.execute(update(Delivery).values(next_attempt_at=HELD))
    await scan_due(db, at=t0)
    await drain(db, sender, at=t0)
    assert [d["status"] for d in await deliveries(tenant, hook["id"])] == ["delivered"]
