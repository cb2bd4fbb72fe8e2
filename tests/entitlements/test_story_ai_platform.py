"""Story 1: an AI API platform. Tokens are summed per model and direction and calls counted;
Starter includes 1 M tokens a month, allows overdraft to 1.5 M and denies beyond; Pro includes
10 M; the admin is warned at 80 %, the account team told when overdraft starts; denials are
listed for the customer; 500 k top-ups expire after 90 days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from standardwebhooks import Webhook

from allotment.db import Database
from allotment.entitlements import check as checks
from allotment.entitlements import grants, notices, state
from allotment.notifications.lanes import Lanes
from allotment.types import utcnow
from tests.conftest import Tenant
from tests.entitlements.catalogue import feature, metered, ok, plan, subscribe
from tests.helpers import event, meter
from tests.notifications.conftest import drain, endpoint
from tests.notifications.receiver import Receiver

M = 1_000_000
T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def _platform(c: Any, **subscription: Any) -> None:
    """The vendor's catalogue, and acme (two API keys) on Starter, bigco on Pro."""
    tokens = meter("tokens", event_type="prompt", group_by={"model": "$.model", "direction": "$.direction"})
    await ok(await c.post("/v1/meters", json=tokens), 201)
    await ok(await c.post("/v1/meters", json=meter("api-calls", "COUNT", event_type="prompt")), 201)
    await feature(c, "tokens", meter="tokens", unit="token")
    await feature(c, "api-calls", meter="api-calls")
    calls = {"feature": "api-calls", "kind": "metered", "usage_period": "MONTH"}  # pay as you go
    await plan(c, "starter", [metered("tokens", M, M, 1_500_000), calls])
    await plan(c, "pro", [metered("tokens", 10 * M), calls])
    for key, tier in (("acme", "starter"), ("bigco", "pro")):
        body = {"key": key, "name": key.title(), "subject_keys": [f"{key}-key-1", f"{key}-key-2"]}
        await ok(await c.post("/v1/customers", json=body), 201)
        await subscribe(c, key, tier, **subscription)


def _prompt(who: str, tokens: int, model: str = "large", direction: str = "input", **extra: Any) -> dict[str, Any]:
    return event(who, "prompt", tokens=tokens, model=model, direction=direction, **extra)


async def _send(c: Any, *events: dict[str, Any]) -> None:
    answer = await ok(await c.post("/v1/events", json=list(events)))
    assert answer["accepted"] == len(events), answer


async def _check(c: Any, who: str, quantity: int = 1, *, consume: bool = False) -> Any:
    body = {"customer": who, "feature": "tokens", "quantity": quantity, "consume": consume}
    return await ok(await c.post("/v1/check", json=body))


async def test_tokens_are_summed_by_model_and_direction_and_every_call_is_counted(tenant):
    """The meter splits acme's tokens by model and direction over both its API keys; the
    entitlement counts their sum and the calls are counted one per request."""
    c = tenant.client
    await _platform(c)
    await _send(c, _prompt("acme-key-1", 1200, "large", "input"), _prompt("acme-key-1", 800, "large", "output"),
                _prompt("acme-key-2", 300, "small", "input"), _prompt("acme-key-2", 100, "small", "output"),
                _prompt("acme-key-2", 500, "large", "input"), _prompt("bigco-key-1", 9999, "large", "input"))
    query = {"customer": "acme", "group_by": ["model", "direction"]}
    rows = (await ok(await c.get("/v1/meters/tokens/query", params=query)))["data"]
    assert sorted((r["group_by"]["model"], r["group_by"]["direction"], r["value"]) for r in rows) == [
        ("large", "input", 1700), ("large", "output", 800), ("small", "input", 300), ("small", "output", 100)]
    calls = (await ok(await c.get("/v1/meters/api-calls/query", params={"customer": "acme"})))["data"]
    assert [r["value"] for r in calls] == [5]
    tokens = await ok(await c.get("/v1/customers/acme/entitlements/tokens"))
    assert (tokens["usage"], tokens["balance"]) == (2900, M - 2900)
    assert (await ok(await c.get("/v1/customers/acme/entitlements/api-calls")))["usage"] == 5


async def test_starter_flags_usage_past_1_m_as_overdraft_and_denies_past_1_5_m(tenant):
    """Reported usage moves the check: within 1 M allow, above it allow_overdraft with the
    overage, and once 1.5 M is used the next request is denied."""
    c = tenant.client
    await _platform(c)
    await _send(c, _prompt("acme-key-1", 800_000))
    within = await _check(c, "acme", 200_000)
    assert (within["decision"], within["reason"], within["balance"]) == ("allow", "within_limit", 200_000)
    await _send(c, _prompt("acme-key-2", 400_000, direction="output"))
    over = await _check(c, "acme", 1000)
    assert (over["decision"], over["reason"], over["usage"], over["overage"]) == (
        "allow_overdraft", "soft_limit", 1_200_000, 200_000)
    assert (over["included"], over["soft_limit"], over["hard_limit"], over["balance"]) == (M, M, 1_500_000, 0)
    assert (await _check(c, "acme", 300_000))["decision"] == "allow_overdraft"
    assert (await _check(c, "acme", 300_001))["decision"] == "deny"
    await _send(c, _prompt("acme-key-1", 300_000))
    denied = await _check(c, "acme")
    assert (denied["decision"], denied["reason"], denied["usage"]) == ("deny", "hard_limit", 1_500_000)


async def test_pro_includes_10_m_tokens(tenant):
    """What puts a Starter customer in overdraft is well within Pro; Pro's 10 M is the line."""
    c = tenant.client
    await _platform(c)
    await _send(c, _prompt("bigco-key-1", 1_200_000), _prompt("acme-key-1", 1_200_000))
    pro = await _check(c, "bigco")
    assert (pro["decision"], pro["balance"], pro["included"]) == ("allow", 8_800_000, 10 * M)
    assert (await _check(c, "acme"))["decision"] == "allow_overdraft"
    assert (await _check(c, "bigco", 8_800_000))["decision"] == "allow"
    past = await _check(c, "bigco", 8_800_001)
    assert (past["decision"], past["reason"]) == ("allow_overdraft", "soft_limit")


def _told(received: list[Any], secret: str) -> list[tuple[str, str | None, Any]]:
    """(type, threshold label, usage) of each webhook an endpoint received, signature verified."""
    messages = [Webhook(secret).verify(r.body, r.headers) for r in received]
    return [(m["type"], m["data"].get("threshold", {}).get("label"), m["data"]["usage"]) for m in messages]


async def test_the_admin_is_warned_at_80_percent_and_the_account_team_told_when_overdraft_starts(
    db: Database, tenant: Tenant, receiver: Receiver, sender: Lanes
) -> None:
    """Two endpoints: the admin's gets the 80 % warning its rule sends it, the account team's
    gets overdraft started; each once, however much more is used."""
    c = tenant.client
    await _platform(c)
    admin = await endpoint(tenant, receiver.url, rules_only=True, headers={"x-audience": "admin"})
    team = await endpoint(tenant, receiver.url, event_types=[notices.OVERDRAFT_STARTED],
                          headers={"x-audience": "account-team"})
    await ok(await c.post("/v1/notification-rules", json={
        "event_type": notices.THRESHOLD_REACHED, "features": ["tokens"], "endpoint_ids": [admin["id"]],
        "thresholds": [{"type": "percent", "value": 80}]}), 201)
    for tokens in (700_000, 150_000, 100_000, 100_000, 100_000):
        await _send(c, _prompt("acme-key-1", tokens))
    await drain(db, sender, at=utcnow())
    to = {who: [r for r in receiver.received if r.headers["x-audience"] == who] for who in ("admin", "account-team")}
    assert _told(to["admin"], admin["secret"]) == [(notices.THRESHOLD_REACHED, "80%", 850_000)]
    assert _told(to["account-team"], team["secret"]) == [(notices.OVERDRAFT_STARTED, None, 1_050_000)]
    told = Webhook(team["secret"]).verify(to["account-team"][0].body, to["account-team"][0].headers)["data"]
    assert (told["customer"]["key"], told["feature"]["key"], told["soft_limit"], told["hard_limit"]) == (
        "acme", "tokens", M, 1_500_000)


async def test_the_customer_sees_when_and_how_often_requests_were_denied_at_the_cap(tenant):
    """Every refused request at 1.5 M is listed with its time, for the customer and a window."""
    c = tenant.client
    await _platform(c)
    await _send(c, _prompt("acme-key-1", 1_500_000))
    before = utcnow()
    for _ in range(3):
        assert (await _check(c, "acme", 2000))["decision"] == "deny"
    assert (await _check(c, "bigco", 2000, consume=True))["decision"] == "allow"
    after = utcnow()
    listed = (await ok(await c.get("/v1/denials", params={"customer": "acme", "feature": "tokens"})))["items"]
    assert [(d["customer"], d["feature"], d["reason"], d["quantity"]) for d in listed] == [
        ("acme", "tokens", "hard_limit", 2000)] * 3
    times = [datetime.fromisoformat(d["at"]) for d in listed]
    assert times == sorted(times) and before <= times[0] and times[-1] <= after
    window = {"customer": "acme", "from": times[1].isoformat(), "to": after.isoformat()}
    assert len((await ok(await c.get("/v1/denials", params=window)))["items"]) == 2


class _Clock:
    """acme's tokens driven through the services at chosen instants."""

    def __init__(self, db: Database, tenant_id: str) -> None:
        self.db, self.tenant_id = db, tenant_id

    async def consume(self, quantity: int, at: datetime) -> Any:
        async with self.db.transaction() as s:
            request = checks.CheckRequest("acme", "tokens", Decimal(quantity), consume=True)
            return (await checks.check(s, self.tenant_id, request, at=at)).decision

    async def state(self, at: datetime) -> state.EntitlementState:
        async with self.db.transaction(readonly=True) as s:
            return await state.get_state(s, self.tenant_id, "acme", "tokens", at=at)

    async def top_up(self, at: datetime) -> str:
        async with self.db.transaction() as s:
            made = await grants.create(s, self.tenant_id, customer="acme", feature="tokens", at=at,
                                       amount=Decimal(500_000), expires_at=at + timedelta(days=90))
            return made.id


async def test_a_customer_denied_at_the_cap_buys_a_500_k_top_up_and_is_served_again(tenant):
    """The top-up raises the cap to 2 M at once; the portal shows it and when it expires."""
    c = tenant.client
    await _platform(c)
    await _send(c, _prompt("acme-key-1", 1_500_000))
    assert (await _check(c, "acme"))["decision"] == "deny"
    expires = (utcnow() + timedelta(days=90)).replace(microsecond=0)
    grants_path = "/v1/customers/acme/entitlements/tokens/grants"
    top_up = await ok(await c.post(grants_path, json={"amount": 500_000, "expires_at": expires.isoformat()}), 201)
    served = await _check(c, "acme", 500_000)
    assert (served["decision"], served["hard_limit"]) == ("allow_overdraft", 2 * M)
    assert (await _check(c, "acme", 500_001))["decision"] == "deny"
    page = await ok(await c.get("/v1/customers/acme/entitlements/tokens"))
    assert [(g["id"], g["amount"], datetime.fromisoformat(g["expires_at"])) for g in page["grants"]] == [
        (top_up["id"], 500_000, expires)]


async def test_a_500_k_top_up_lasts_90_days_across_monthly_resets(tenant, db):
    """Bought at 900 k on 11 January, 100 k of it used in January: the 400 k left carries
    through February and March and is gone on 11 April, 90 days after it was bought."""
    await _platform(tenant.client, starts_at=T0.isoformat())
    clock = _Clock(db, tenant.id)
    bought = T0 + timedelta(days=10)
    assert (await clock.consume(900_000, bought)).decision == "allow"
    top_up = await clock.top_up(bought)
    assert (await clock.consume(200_000, bought + timedelta(hours=1))).decision == "allow"
    expiry = bought + timedelta(days=90)
    for at in (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 15, tzinfo=UTC), expiry - timedelta(seconds=1)):
        held = await clock.state(at)
        assert ([(g.grant.id, g.balance) for g in held.grants], held.soft_limit, held.hard_limit) == (
            [(top_up, 400_000)], 1_400_000, 1_900_000), at
    gone = await clock.state(expiry)
    assert (sum(g.balance for g in gone.grants), gone.soft_limit, gone.hard_limit) == (0, M, 1_500_000)
    assert (await clock.consume(1_500_000, expiry)).decision == "allow_overdraft"
    assert (await clock.consume(1, expiry)).decision == "deny"
