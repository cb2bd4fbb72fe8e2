"""Real-time checks: decisions per kind, atomic consume, idempotency, periods, concurrency."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import httpx
import pytest

from allotment.api.app import create_app
from allotment.db import Database
from allotment.entitlements import check as service
from allotment.entitlements.periods import Interval, UsagePeriod, period_at
from allotment.entitlements.schemas import CheckRead
from allotment.types import utcnow
from tests.entitlements.catalogue import boolean, customer, feature, metered, ok, plan, subscribe

PARIS = ZoneInfo("Europe/Paris")


async def _metered_customer(c, included, soft, hard):  # type: ignore[no-untyped-def]
    await feature(c, "api-calls")
    await plan(c, "starter", [metered("api-calls", included, soft, hard)])
    await customer(c, "acme")
    await subscribe(c, "acme", "starter")


async def _check(c, status=200, **body):  # type: ignore[no-untyped-def]
    return await ok(await c.post("/v1/check", json={"customer": "acme", "feature": "api-calls", **body}), status)


async def test_worked_example_allow_then_overdraft_then_hard_limit_deny(tenant):
    """Included 1,000,000, soft 1,000,000, hard 1,500,000: allow, overdraft, then denied."""
    c = tenant.client
    await _metered_customer(c, 1_000_000, 1_000_000, 1_500_000)
    first = await _check(c, quantity=999_999, consume=True)
    assert (first["decision"], first["reason"], first["usage"]) == ("allow", "within_limit", 999_999)
    last_in = await _check(c, consume=True)
    assert (last_in["decision"], last_in["usage"], last_in["balance"]) == ("allow", 1_000_000, 0)
    over = await _check(c, quantity=499_999, consume=True)
    assert (over["decision"], over["reason"], over["overage"]) == ("allow_overdraft", "soft_limit", 499_999)
    cap = await _check(c, consume=True)
    assert (cap["decision"], cap["usage"], cap["hard_limit"]) == ("allow_overdraft", 1_500_000, 1_500_000)
    denied = await _check(c, consume=True)
    assert (denied["decision"], denied["reason"], denied["usage"]) == ("deny", "hard_limit", 1_500_000)
    denials = await ok(await c.get("/v1/denials", params={"customer": "acme", "feature": "api-calls"}))
    assert [(d["reason"], d["quantity"]) for d in denials["items"]] == [("hard_limit", 1)]
    assert (denials["items"][0]["customer"], denials["items"][0]["feature"]) == ("acme", "api-calls")
    assert denials["next_cursor"] is None


async def test_one_consume_larger_than_the_hard_limit_is_denied(tenant):
    """Asking for more than the cap at once, on a fresh counter or a used one, is a deny."""
    c = tenant.client
    await _metered_customer(c, 1_000_000, 1_000_000, 1_500_000)
    fresh = await _check(c, quantity=1_500_001, consume=True)
    assert (fresh["decision"], fresh["reason"], fresh["usage"]) == ("deny", "hard_limit", 0)
    await _check(c, quantity=1_400_000, consume=True)
    used = await _check(c, quantity=1_600_000, consume=True)
    assert (used["decision"], used["reason"], used["usage"]) == ("deny", "hard_limit", 1_400_000)
    assert (await _check(c, quantity=100_000, consume=True))["usage"] == 1_500_000


async def test_pay_as_you_go_is_allowed_and_never_overdraft(tenant):
    """A metered feature that includes nothing and sets no limit: every use is allowed and
    billed. Prepaid credit (a grant) pays first; past it, pay as you go. Neither is overdraft:
    not for the check, the entitlement page, the overdraft and upsell reports or notifications."""
    c = tenant.client
    await _metered_customer(c, 0, None, None)
    first = await _check(c, quantity=5, consume=True)
    assert (first["decision"], first["reason"], first["usage"], first["overage"]) == ("allow", "pay_as_you_go", 5, 5)
    await ok(await c.post("/v1/customers/acme/entitlements/api-calls/grants", json={"amount": 10}), 201)
    credit = await _check(c, quantity=5, consume=True)
    assert (credit["decision"], credit["reason"], credit["balance"]) == ("allow", "within_limit", 0)
    past = await _check(c, quantity=6, consume=True)
    assert (past["decision"], past["reason"], past["usage"], past["overage"]) == ("allow", "pay_as_you_go", 16, 6)
    page = await ok(await c.get("/v1/customers/acme/entitlements/api-calls"))
    assert (page["has_access"], page["in_overdraft"], page["usage"]) == (True, False, 16)
    assert (await ok(await c.get("/v1/reports/overdraft")))["items"] == []
    assert (await ok(await c.get("/v1/reports/upsell", params={"status": "overdraft"})))["items"] == []
    told = await ok(await c.get("/v1/notifications", params={"type": "entitlement.overdraft_started"}))
    assert told["items"] == []
    # A soft limit of 0, set explicitly, flags every use.
    await plan(c, "flagged", [metered("api-calls", 0, 0, None)])
    await customer(c, "globex")
    await subscribe(c, "globex", "flagged")
    flagged = await _check(c, customer="globex", consume=True)
    assert (flagged["decision"], flagged["reason"]) == ("allow_overdraft", "soft_limit")


async def test_check_without_consume_counts_nothing(tenant):
    c = tenant.client
    await _metered_customer(c, 10, None, 10)
    assert (await _check(c, quantity=10))["decision"] == "allow"
    assert (await _check(c, quantity=10))["usage"] == 0
    body = await _check(c, quantity=10.5)
    assert (body["decision"], body["reason"]) == ("deny", "hard_limit")


async def test_check_reports_the_usage_period(tenant):
    c = tenant.client
    await _metered_customer(c, 10, None, None)
    body = await _check(c, quantity=0.5, consume=True)
    assert (body["decision"], body["usage"], body["hard_limit"]) == ("allow", 0.5, None)
    start, end = datetime.fromisoformat(body["period_start"]), datetime.fromisoformat(body["period_end"])
    assert start <= utcnow() < end


async def test_boolean_and_static_answers(tenant):
    c = tenant.client
    await feature(c, "sso")
    await feature(c, "limits")
    await feature(c, "beta")
    await plan(c, "pro", [boolean("sso"), {"feature": "limits", "kind": "static", "config": {"rpm": 60}}])
    await customer(c, "acme")
    await subscribe(c, "acme", "pro")
    sso = await _check(c, feature="sso", consume=True)
    assert (sso["decision"], sso["reason"], sso["usage"]) == ("allow", "has_access", None)
    static = await _check(c, feature="limits")
    assert (static["decision"], static["config"]) == ("allow", {"rpm": 60})
    await ok(await c.put("/v1/customers/acme/entitlements/sso/override", json={"has_access": False}))
    assert (await _check(c, feature="sso"))["reason"] == "no_access"


async def test_feature_without_entitlement_is_not_entitled_and_recorded(tenant):
    c = tenant.client
    await _metered_customer(c, 10, None, 10)
    await feature(c, "beta")
    body = await _check(c, feature="beta", quantity=3)
    assert (body["decision"], body["reason"]) == ("deny", "not_entitled")
    denials = await ok(await c.get("/v1/denials", params={"feature": "beta"}))
    assert [(d["reason"], d["quantity"]) for d in denials["items"]] == [("not_entitled", 3)]


async def test_unknown_customer_or_feature_is_404_naming_it(tenant):
    c = tenant.client
    await _metered_customer(c, 10, None, 10)
    resp = await c.post("/v1/check", json={"customer": "nobody", "feature": "api-calls"})
    assert (resp.status_code, resp.json()["type"]) == (404, "customer_not_found")
    assert "nobody" in resp.json()["detail"]
    resp = await c.post("/v1/check", json={"customer": "acme", "feature": "nothing"})
    assert (resp.status_code, resp.json()["type"]) == (404, "feature_not_found")
    assert "nothing" in resp.json()["detail"]


async def test_bad_quantities_are_422_naming_quantity(tenant):
    c = tenant.client
    await _metered_customer(c, 10, None, 10)
    for bad in (0, -1, "1.0000001", 10**13, "NaN"):
        resp = await c.post("/v1/check", json={"customer": "acme", "feature": "api-calls", "quantity": bad})
        assert resp.status_code == 422, bad
        assert [e["field"] for e in resp.json()["errors"]] == ["quantity"], resp.json()


async def test_read_keys_check_but_cannot_consume(tenant, db):
    await _metered_customer(tenant.client, 10, None, 10)
    reader = {"Authorization": f"Bearer {await tenant.key('read', db)}"}
    body = {"customer": "acme", "feature": "api-calls"}
    assert (await tenant.client.post("/v1/check", json=body, headers=reader)).status_code == 200
    resp = await tenant.client.post("/v1/check", json={**body, "consume": True}, headers=reader)
    assert resp.status_code == 403 and "ingest" in resp.json()["detail"]
    ingester = {"Authorization": f"Bearer {await tenant.key('ingest', db)}"}
    resp = await tenant.client.post("/v1/check", json={**body, "consume": True}, headers=ingester)
    assert resp.json()["usage"] == 1


async def test_idempotent_consume_retry_is_counted_once(tenant):
    c = tenant.client
    await _metered_customer(c, 10, None, 10)
    first = await _check(c, quantity=4, consume=True, idempotency_key="req-1")
    retry = await c.post("/v1/check", json={"customer": "acme", "feature": "api-calls", "quantity": 4.0,
                                            "consume": True, "idempotency_key": "req-1"})
    assert retry.json() == first and retry.headers["Idempotent-Replayed"] == "true"
    assert (await _check(c))["usage"] == 4


async def test_an_idempotent_retry_in_overdraft_answers_the_same_document(tenant):
    """The upsell hint of a replay is projected from the first answer's moment, not now."""
    c = tenant.client
    await _metered_customer(c, 10, 10, 1_000)
    first = await _check(c, quantity=50, consume=True, idempotency_key="job-1")
    assert first["decision"] == "allow_overdraft" and first["upsell"] is not None
    await asyncio.sleep(0.01)  # the projection moves with time; the replay must not
    assert await _check(c, quantity=50, consume=True, idempotency_key="job-1") == first


async def test_idempotency_key_reused_with_another_body_is_409(tenant):
    c = tenant.client
    await _metered_customer(c, 10, None, 10)
    await _check(c, quantity=4, consume=True, idempotency_key="req-1")
    resp = await c.post("/v1/check", json={"customer": "acme", "feature": "api-calls", "quantity": 5,
                                           "consume": True, "idempotency_key": "req-1"})
    assert resp.status_code == 409
    assert (await _check(c))["usage"] == 4


async def test_usage_resets_at_the_period_boundary_in_the_customer_time_zone(tenant, db):
    """Daily periods in Paris: what was used before local midnight does not count after it."""
    c = tenant.client
    await feature(c, "api-calls")
    await customer(c, "acme")
    anchor = datetime(2026, 3, 1, tzinfo=PARIS)
    await ok(await c.post("/v1/customers/acme/entitlements", json={
        "feature": "api-calls", "kind": "metered", "usage_period": "DAY", "included": 10,
        "hard_limit": 10, "usage_anchor": anchor.isoformat(), "time_zone": "Europe/Paris"}), 201)
    _, boundary = period_at(UsagePeriod(Interval.DAY, anchor, PARIS), utcnow() + timedelta(days=1))
    assert boundary is not None and boundary.astimezone(PARIS).hour == 0
    before, after = boundary - timedelta(microseconds=1), boundary

    async def consume(at: datetime) -> service.CheckResult:
        async with db.transaction() as session:
            request = service.CheckRequest("acme", "api-calls", Decimal(10), consume=True)
            return await service.check(session, tenant.id, request, at=at)

    assert (await consume(before)).decision.decision == "allow"
    assert (await consume(before)).decision.reason == "hard_limit"
    fresh = await consume(after)
    assert (fresh.decision.decision, fresh.decision.usage, fresh.period_start) == ("allow", 10, boundary)


async def _race(clients: list[httpx.AsyncClient], n: int) -> list[dict[str, object]]:
    body = {"customer": "acme", "feature": "api-calls", "consume": True}
    responses = await asyncio.gather(*(clients[i % len(clients)].post("/v1/check", json=body) for i in range(n)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    return [r.json() for r in responses]


async def test_concurrent_consumers_never_pass_the_hard_limit(tenant):
    """32 concurrent consumes against a hard limit of 10: exactly 10 are allowed."""
    await _metered_customer(tenant.client, 5, None, 10)
    answers = await _race([tenant.client], 32)
    assert sum(a["decision"] != "deny" for a in answers) == 10
    assert (await _check(tenant.client))["usage"] == 10


async def test_concurrent_consumers_on_separate_engines_never_pass_the_hard_limit(tenant, settings):
    """The same race through four database engines: the database decides, not the process."""
    await _metered_customer(tenant.client, 5, None, 10)
    databases = [Database(settings) for _ in range(4)]
    clients = [
        httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(settings, db=d)),
                          base_url="http://allotment.test", headers={"Authorization": f"Bearer {tenant.admin}"})
        for d in databases
    ]
    try:
        answers = await _race(clients, 32)
    finally:
        for client, database in zip(clients, databases, strict=True):
            await client.aclose()
            await database.dispose()
    assert sum(a["decision"] != "deny" for a in answers) == 10
    denials = await ok(await tenant.client.get("/v1/denials", params={"customer": "acme"}))
    assert len(denials["items"]) == 22
    assert (await _check(tenant.client))["usage"] == 10


async def test_malformed_or_incomplete_check_bodies_are_4xx_naming_the_field(tenant):
    c = tenant.client
    await _metered_customer(c, 10, None, 10)
    resp = await c.post("/v1/check", content=b"{not json", headers={"Content-Type": "application/json"})
    assert (resp.status_code, resp.json()["type"]) == (400, "malformed_request")
    assert resp.headers["content-type"] == "application/problem+json"
    resp = await c.post("/v1/check", json={"feature": "api-calls", "colour": "red"})
    assert resp.status_code == 422
    assert sorted(e["field"] for e in resp.json()["errors"]) == ["colour", "customer"]
    resp = await c.post("/v1/check", json={"customer": "acme", "feature": "api-calls"},
                        headers={"Idempotency-Key": "k" * 256})
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "Idempotency-Key"
    resp = await c.post("/v1/check", json={"customer": "acme", "feature": "api-calls"},
                        headers={"Authorization": "Bearer nope"})
    assert (resp.status_code, resp.headers["www-authenticate"]) == (401, "Bearer")


async def test_a_check_body_sent_in_pieces_is_read_whole(tenant):
    """A body streamed in chunks is answered as if sent at once, its Idempotency-Key header too."""
    c = tenant.client
    await _metered_customer(c, 10, None, 10)

    async def pieces():  # type: ignore[no-untyped-def]
        for part in (b'{"customer": "acme", ', b'"feature": "api-calls", ', b'"quantity": 3, "consume": true}'):
            yield part

    headers = {"Content-Type": "application/json", "Idempotency-Key": "streamed-1"}
    first = await ok(await c.post("/v1/check", content=pieces(), headers=headers))
    assert (first["decision"], first["usage"]) == ("allow", 3)
    retry = await c.post("/v1/check", json={"customer": "acme", "feature": "api-calls", "quantity": 3,
                                            "consume": True}, headers={"Idempotency-Key": "streamed-1"})
    assert retry.json() == first and retry.headers["Idempotent-Replayed"] == "true"
    assert (await _check(c))["usage"] == 3


@pytest.mark.parametrize("text", ["1e3", " 5", "5.", "+5", "0.0000001", "\u0665", "1_000"])
async def test_a_quantity_as_text_takes_only_the_notation_the_schema_states(tenant, text):
    """Text in plain decimal notation counts like the number; any other text is a 422 naming
    quantity, and the schema's pattern refuses it too."""
    c = tenant.client
    await _metered_customer(c, 10, None, 10)
    schema = (await c.get("/openapi.json")).json()
    body = schema["paths"]["/v1/check"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    pattern = body["properties"]["quantity"]["anyOf"][1]["pattern"]
    assert re.fullmatch(pattern, "0.5") and re.fullmatch(pattern, text) is None
    assert (await _check(c, quantity="0.5", consume=True))["usage"] == 0.5
    resp = await c.post("/v1/check", json={"customer": "acme", "feature": "api-calls", "quantity": text})
    assert resp.status_code == 422 and [e["field"] for e in resp.json()["errors"]] == ["quantity"]
    assert (await _check(c))["usage"] == 0.5


async def test_every_check_answer_is_the_documented_document(tenant):
    """Allow, overdraft with an upsell hint, deny, fractional usage, boolean and static: each
    body is exactly what the documented CheckRead schema serialises."""
    c = tenant.client
    await feature(c, "api-calls")
    await plan(c, "pro", [metered("api-calls", 100, 100, 150)])
    await plan(c, "starter", [metered("api-calls", 10, 10, 15)], next_tier="pro")
    await customer(c, "acme")
    await subscribe(c, "acme", "starter")
    await feature(c, "sso")
    await feature(c, "limits")
    await plan(c, "extras", [boolean("sso"), {"feature": "limits", "kind": "static", "config": {"rpm": 60}}])
    await customer(c, "bravo")
    await subscribe(c, "bravo", "extras")
    bodies = [await _check(c), await _check(c, quantity=2.5, consume=True),
              await _check(c, quantity=9, consume=True), await _check(c, quantity=9)]
    for name in ("sso", "limits"):
        bodies.append(await ok(await c.post("/v1/check", json={"customer": "bravo", "feature": name})))
    assert [b["decision"] for b in bodies] == ["allow", "allow", "allow_overdraft", "deny", "allow", "allow"]
    assert bodies[1]["usage"] == 2.5 and bodies[-1]["config"] == {"rpm": 60}
    assert bodies[3]["upsell"]["href"] == "/v1/customers/acme/upsell"
    for body in bodies:
        assert CheckRead.model_validate(body).model_dump(mode="json") == body


async def test_limits_of_32_integer_digits_are_kept_and_computed_exactly(tenant):
    """NUMERIC(38, 6) limits: stored, shown and subtracted without rounding to 28 digits."""
    c = tenant.client
    await feature(c, "api-calls")
    await customer(c, "acme")
    hard = 98765432109876543210987654321098
    await ok(await c.post("/v1/customers/acme/entitlements", json={
        "feature": "api-calls", "kind": "metered", "usage_period": "MONTH", "included": 1,
        "soft_limit": 8.875706715068986e+31, "hard_limit": hard}), 201)
    soft = 88757067150689860000000000000000
    shown = await ok(await c.get("/v1/customers/acme/entitlements/api-calls"))
    assert (shown["hard_limit"], shown["soft_limit"]) == (hard, soft)
    checked = await ok(await c.post("/v1/check", json={"customer": "acme", "feature": "api-calls", "quantity": 3, "consume": True}))
    assert (checked["decision"], checked["usage"], checked["balance"]) == ("allow", 3, soft - 3)


async def test_consuming_up_to_what_a_counter_holds_is_allowed_and_past_it_denied(tenant):
    """Counters hold 64-bit millionths (about 9.2 million million units): an uncapped
    entitlement consumed past that gets a deny naming the reason, never a 500."""
    c = tenant.client
    await feature(c, "api-calls")
    await customer(c, "acme")
    await ok(await c.post("/v1/customers/acme/entitlements", json={
        "feature": "api-calls", "kind": "metered", "usage_period": "MONTH", "included": 1}), 201)
    body = {"customer": "acme", "feature": "api-calls", "quantity": 999_999_999_999, "consume": True}
    answers = [await c.post("/v1/check", json=body) for _ in range(10)]
    assert [a.status_code for a in answers] == [200] * 10, answers[-1].text
    assert [a.json()["decision"] for a in answers] == ["allow_overdraft"] * 9 + ["deny"]
    assert answers[-1].json()["reason"] == "counter_full" and answers[-1].json()["usage"] == 9 * 999_999_999_999
    await customer(c, "bigco")
    await ok(await c.post("/v1/customers/bigco/entitlements", json={
        "feature": "api-calls", "kind": "metered", "usage_period": "MONTH", "included": 1}), 201)
    together = await asyncio.gather(*(c.post("/v1/check", json={**body, "customer": "bigco"}) for _ in range(12)))
    assert [a.status_code for a in together] == [200] * 12
    assert sorted(a.json()["reason"] for a in together) == ["counter_full"] * 3 + ["soft_limit"] * 9


async def test_events_past_what_a_counter_holds_are_stored_and_the_counter_stays_full(tenant):
    """Events are facts: usage past a counter's 64-bit capacity is acknowledged and counted
    exactly by its meter, while the live counter stays full and checks deny as counter_full."""
    c = tenant.client
    await ok(await c.post("/v1/meters", json={"key": "bytes", "event_type": "egress", "aggregation": "SUM",
                                              "value_property": "$.bytes"}), 201)
    await feature(c, "egress", meter="bytes")
    await ok(await c.post("/v1/customers", json={"key": "acme", "name": "Acme", "subject_keys": ["box"]}), 201)
    await ok(await c.post("/v1/customers/acme/entitlements", json={
        "feature": "egress", "kind": "metered", "usage_period": "MONTH", "included": 1}), 201)
    for i in range(3):
        sent = await c.post("/v1/events", json=[{"specversion": "1.0", "id": f"e{i}", "source": "cdn",
                                                 "type": "egress", "subject": "box", "data": {"bytes": 4 * 10**12}}])
        assert (sent.status_code, sent.json()["accepted"]) == (200, 1), sent.text
    total = await ok(await c.get("/v1/meters/bytes/query", params={"customer": "acme"}))
    assert [row["value"] for row in total["data"]] == [12 * 10**12]
    checked = await ok(await c.post("/v1/check", json={"customer": "acme", "feature": "egress"}))
    assert (checked["decision"], checked["reason"]) == ("deny", "counter_full")


async def test_denials_are_listed_for_a_time_range(tenant):
    """A portal shows how often a customer was refused this month: [from, to) of the refusal."""
    c = tenant.client
    await _metered_customer(c, 1, None, 1)
    await _check(c, consume=True)
    before = utcnow()
    await _check(c, consume=True)
    between = utcnow()
    await _check(c, consume=True)
    after = utcnow()

    def listed(**q: str):  # type: ignore[no-untyped-def]
        return c.get("/v1/denials", params={"customer": "acme", **q})

    assert len((await ok(await listed(**{"from": before.isoformat()})))["items"]) == 2
    assert len((await ok(await listed(**{"from": before.isoformat(), "to": between.isoformat()})))["items"]) == 1
    assert (await ok(await listed(**{"from": after.isoformat()})))["items"] == []
    resp = await listed(to="yesterday")
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "to"
