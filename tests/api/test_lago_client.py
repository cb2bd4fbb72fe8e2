"""The Lago surface, driven by the official Lago Python client against a real server.

The same live server as the OpenMeter SDK tests (uvicorn in a thread), on SQLite and
PostgreSQL; the client is pointed at `/lago/` (OpenMeter owns `/api/v1`) except where a test
says it sends to the root.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from lago_python_client.client import Client
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models import BillableMetric, Customer, Subscription
from lago_python_client.models.event import BatchEvent, Event
from tests.api import test_openmeter_sdk as sdk
from tests.api.test_openmeter_sdk import Live

live = sdk.live  # the live server, as a fixture here too


def lago(live: Live, scope: str = "admin", *, root: bool = False) -> Client:
    return Client(api_key=live.keys[scope], api_url=live.url + ("/" if root else "/lago/"), max_retries=0)


def native(live: Live, method: str, path: str, body: Any = None) -> Any:
    answer = httpx.request(method, live.url + path, json=body,
                           headers={"Authorization": f"Bearer {live.keys['admin']}"}, timeout=30)
    assert answer.status_code < 300, answer.text
    return answer.json()


def setup_plan(live: Live, client: Client) -> None:
    """A tokens metric, a native plan including 1,000 of them, Acme on it as `sub-1`."""
    client.billable_metrics.create(BillableMetric(
        name="Tokens", code="tokens", aggregation_type="sum_agg", field_name="tokens"))
    native(live, "POST", "/v1/features", {"key": "tokens", "name": "Tokens", "meter": "tokens"})
    native(live, "POST", "/v1/plans", {"key": "starter", "name": "Starter", "entitlements": [
        {"feature": "tokens", "kind": "metered", "usage_period": "MONTH", "included": 1000,
         "soft_limit": 1000, "hard_limit": 1500}]})
    native(live, "POST", "/v1/plans/starter/publish")
    client.customers.create(Customer(external_id="acme", name="Acme", currency="EUR"))
    began = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    client.subscriptions.create(Subscription(external_customer_id="acme", plan_code="starter", external_id="sub-1",
                                             subscription_at=began))


def event(tx: str, tokens: float, *, at: datetime | None = None, code: str = "tokens") -> Event:
    stamp = int((at or datetime.now(UTC)).timestamp())
    return Event(transaction_id=tx, external_subscription_id="sub-1", code=code, timestamp=stamp,
                 properties={"tokens": tokens})


def month_total(live: Live) -> Any:
    start = datetime.now(UTC) - timedelta(days=40)
    rows = native(live, "GET", f"/v1/meters/tokens/query?customer=acme&from={start.isoformat().replace('+', '%2B')}")
    return sum(r["value"] for r in rows["data"] if r["value"] is not None)


def test_usage_sent_through_lago_is_the_customers_metered_usage(live):
    """Single and batch events, a re-sent transaction_id and a late event: the meter and the
    entitlement check count each once, for the customer owning the subscription."""
    client = lago(live)
    setup_plan(live, client)
    sent = client.events.create(event("tx-1", 100))
    assert sent is not None and sent.transaction_id == "tx-1" and sent.code == "tokens"
    client.events.batch_create(BatchEvent(events=[event("tx-2", 200), event("tx-3", 50)]))
    client.events.create(event("tx-1", 100))  # a retry: acknowledged, not counted again
    client.events.batch_create(BatchEvent(events=[event("tx-2", 200)]))
    client.events.create(event("tx-late", 25, at=datetime.now(UTC) - timedelta(minutes=30)))
    assert month_total(live) == 375
    check = native(live, "POST", "/v1/check", {"customer": "acme", "feature": "tokens", "quantity": 1})
    assert check["usage"] == 375 and check["decision"] == "allow"


def test_current_usage_counts_units_per_metric_without_prices(live):
    """Units of the period per billable metric; amounts are 0 in the customer's currency."""
    client = lago(live)
    setup_plan(live, client)
    client.events.batch_create(BatchEvent(events=[event("a", 3), event("b", 4.5)]))
    usage = client.customers.current_usage("acme", "sub-1")
    assert usage.currency == "EUR" and usage.amount_cents == 0
    (charge,) = usage.charges_usage
    assert charge.billable_metric.code == "tokens" and float(charge.units) == 7.5


def test_current_usage_lists_only_the_metrics_of_the_subscriptions_plan(live):
    """As Lago lists the plan's charges: a metric the plan does not meter is left out."""
    client = lago(live)
    setup_plan(live, client)
    client.billable_metrics.create(BillableMetric(name="Calls", code="calls", aggregation_type="count_agg"))
    client.events.batch_create(BatchEvent(events=[event("t", 2), event("c", 1, code="calls")]))
    usage = client.customers.current_usage("acme", "sub-1")
    assert [(c.billable_metric.code, float(c.units)) for c in usage.charges_usage] == [("tokens", 2)]


def test_current_usage_of_a_subscription_not_active_is_a_404(live):
    """As Lago: only an active subscription has current usage; a terminated one, or one that
    has not started (whose period would lie before it), is `subscription_not_found`."""
    client = lago(live)
    setup_plan(live, client)
    client.events.create(event("before-end", 5))
    client.subscriptions.destroy("sub-1")
    later = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    client.subscriptions.create(Subscription(external_customer_id="acme", plan_code="starter", external_id="sub-2",
                                             subscription_at=later))
    for ended_or_pending in ("sub-1", "sub-2"):
        with pytest.raises(LagoApiError) as missing:
            client.customers.current_usage("acme", ended_or_pending)
        assert missing.value.status_code == 404 and missing.value.response["code"] == "subscription_not_found"


def test_event_is_read_back_by_transaction_id(live):
    """GET /events/{transaction_id} answers what was stored, under the `event` root key."""
    client = lago(live)
    setup_plan(live, client)
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    client.events.create(event("tx-read", 9, at=when))
    found = client.events.find("tx-read")
    assert (found.transaction_id, found.external_subscription_id, found.code) == ("tx-read", "sub-1", "tokens")
    assert found.timestamp == "2024-05-01T12:00:00.000Z" and found.properties == {"tokens": 9}
    with pytest.raises(LagoApiError) as missing:
        client.events.find("never-sent")
    assert missing.value.status_code == 404 and missing.value.response["code"] == "event_not_found"
    for tx, stamp in (("tx-text", "1714564800"), ("tx-float", 1714564800.0), ("tx-exp", "1.7145648e9")):
        client.events.create(Event(transaction_id=tx, external_subscription_id="sub-1", code="tokens",
                                   timestamp=stamp, properties={"tokens": 1}))
        assert client.events.find(tx).timestamp == "2024-05-01T12:00:00.000Z", stamp


def test_event_of_an_unknown_metric_is_stored_uncounted(live):
    """As native ingest does: kept in the event log, counted by no meter."""
    client = lago(live)
    setup_plan(live, client)
    client.events.create(event("tx-x", 5, code="not-a-metric"))
    assert client.events.find("tx-x").code == "not-a-metric"
    assert month_total(live) == 0


def test_event_without_transaction_id_is_a_422_naming_it(live):
    """Lago's validation body: error_details maps the field to its reason."""
    client = lago(live)
    setup_plan(live, client)
    bad = Event.construct(external_subscription_id="sub-1", code="tokens", properties={"tokens": 1})
    with pytest.raises(LagoApiError) as refused:
        client.events.create(bad)
    assert refused.value.status_code == 422
    assert refused.value.response == {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
                                      "error_details": {"transaction_id": ["value_is_mandatory"]}}


def test_batch_names_each_refused_event_by_index_and_keeps_the_others(live):
    client = lago(live)
    setup_plan(live, client)
    bad = Event.construct(transaction_id="t-bad", external_subscription_id="sub-1", code="tokens",
                          timestamp="yesterday")
    with pytest.raises(LagoApiError) as refused:
        client.events.batch_create(BatchEvent.construct(events=[event("t-ok", 10), bad]))
    assert refused.value.response["error_details"] == {"1": {"timestamp": ["invalid_format"]}}
    assert month_total(live) == 10


def test_unknown_customer_and_plan_are_404s_naming_them(live):
    client = lago(live)
    setup_plan(live, client)
    with pytest.raises(LagoApiError) as no_customer:
        client.customers.find("nobody")
    assert no_customer.value.status_code == 404 and no_customer.value.response["code"] == "customer_not_found"
    with pytest.raises(LagoApiError) as no_plan:
        client.subscriptions.create(Subscription(external_customer_id="acme", plan_code="gold", external_id="s2"))
    assert no_plan.value.status_code == 404 and no_plan.value.response["code"] == "plan_not_found"


def test_customer_external_id_we_cannot_key_by_is_a_422_naming_external_id(live):
    """The refusal names the field the client sent, not the native customer's `key`."""
    with pytest.raises(LagoApiError) as refused:
        lago(live).customers.create(Customer(external_id="acme corp/eu", name="Acme"))
    assert refused.value.status_code == 422
    assert list(refused.value.response["error_details"]) == ["external_id"]


def test_unsupported_aggregation_is_a_422_naming_it(live):
    with pytest.raises(LagoApiError) as refused:
        lago(live).billable_metrics.create(BillableMetric(
            name="W", code="w", aggregation_type="weighted_sum_agg", field_name="x"))
    assert refused.value.status_code == 422
    assert list(refused.value.response["error_details"]) == ["aggregation_type"]


def test_metrics_customers_and_subscriptions_round_trip(live):
    """Create, read, list, update and delete as a Lago client does."""
    client = lago(live)
    setup_plan(live, client)
    metric = client.billable_metrics.find("tokens")
    assert (metric.aggregation_type, metric.field_name) == ("sum_agg", "tokens")
    renamed = client.billable_metrics.update(BillableMetric(name="LLM tokens"), "tokens")
    assert renamed.name == "LLM tokens"
    assert [m.code for m in client.billable_metrics.find_all()["billable_metrics"]] == ["tokens"]
    again = client.customers.create(Customer(external_id="acme", name="Acme Corp"))  # an upsert
    assert (again.name, again.currency) == ("Acme Corp", "EUR")
    assert client.customers.create(Customer(external_id="acme")).name == "Acme Corp"  # nothing sent: kept
    assert client.billable_metrics.update(BillableMetric(description="tokens in and out"), "tokens").name == "LLM tokens"
    assert [c.external_id for c in client.customers.find_all()["customers"]] == ["acme"]
    sub = client.subscriptions.find("sub-1")
    assert (sub.status, sub.plan_code, sub.external_customer_id) == ("active", "starter", "acme")
    assert client.subscriptions.destroy("sub-1").status == "terminated"
    assert native(live, "GET", "/v1/subscriptions?customer=acme")["items"][0]["status"] == "canceled"
    client.customers.destroy("acme")
    with pytest.raises(LagoApiError):
        client.customers.find("acme")


def _at_once(live: Live, path: str, bodies: list[Any]) -> list[httpx.Response]:
    """The same kind of request sent concurrently, as retrying workers do."""
    def send(body: Any) -> httpx.Response:
        return httpx.post(live.url + "/lago/api/v1" + path, json=body, timeout=30,
                          headers={"Authorization": f"Bearer {live.keys['admin']}"})
    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(send, bodies))


def test_concurrent_upserts_of_one_customer_all_succeed(live):
    """Upserts racing to create one customer leave one customer, and each is answered 200 with
    it: the losers update it, as an upsert sent after the first would."""
    answers = _at_once(live, "/customers", [{"customer": {"external_id": "acme", "name": f"n{i}"}} for i in range(6)])
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    assert {a.json()["customer"]["external_id"] for a in answers} == {"acme"}
    assert len({a.json()["customer"]["lago_id"] for a in answers}) == 1
    assert [c.external_id for c in lago(live).customers.find_all()["customers"]] == ["acme"]


async def test_two_upserts_of_a_new_customer_at_once_both_answer_200(tenant):
    """Two upserts of one new external_id sent together: one creates, the other updates."""
    async def upsert(name: str) -> httpx.Response:
        body = {"customer": {"external_id": "acme", "name": name}}
        return await tenant.client.post("/lago/api/v1/customers", json=body)

    first, second = await asyncio.gather(upsert("first"), upsert("second"))
    assert (first.status_code, second.status_code) == (200, 200), (first.text, second.text)
    assert first.json()["customer"]["lago_id"] == second.json()["customer"]["lago_id"]
    listed = (await tenant.client.get("/lago/api/v1/customers")).json()["customers"]
    assert [(c["external_id"], c["name"]) for c in listed] in ([("acme", "first")], [("acme", "second")])


def test_concurrent_creates_of_one_subscription_never_fail_with_a_500(live):
    """Retries racing to create one subscription leave one; a loser is told, not a 500."""
    client = lago(live)
    setup_plan(live, client)
    client.customers.create(Customer(external_id="beta", name="Beta"))
    body = {"subscription": {"external_customer_id": "beta", "plan_code": "starter", "external_id": "sub-b"}}
    answers = _at_once(live, "/subscriptions", [body] * 6)
    assert [a.status_code for a in answers if a.status_code not in (200, 422)] == []
    assert client.subscriptions.find("sub-b").status == "active"


def test_lago_client_pointed_at_the_root_still_sends_usage(live):
    """`POST /api/v1/events` with Lago's body and `/api/v1/events/batch` are Lago's ingest."""
    setup_plan(live, lago(live))
    at_root = lago(live, "ingest", root=True)
    assert at_root.events.create(event("r-1", 1)).transaction_id == "r-1"
    at_root.events.batch_create(BatchEvent(events=[event("r-2", 2), event("r-1", 1)]))
    assert month_total(live) == 3


def test_read_key_cannot_send_events(live):
    with pytest.raises(LagoApiError) as refused:
        lago(live, "read").events.create(event("x", 1))
    assert refused.value.status_code == 403


def test_a_terminated_subscriptions_external_id_starts_a_new_subscription(live):
    """As in Lago: after termination the same external_id subscribes again, under a new lago_id."""
    client = lago(live)
    setup_plan(live, client)
    first = client.subscriptions.find("sub-1")
    client.subscriptions.destroy("sub-1")
    again = client.subscriptions.create(Subscription(external_customer_id="acme", plan_code="starter",
                                                     external_id="sub-1"))
    assert again.status == "active" and again.lago_id != first.lago_id
    statuses = [s["status"] for s in native(live, "GET", "/v1/subscriptions?customer=acme")["items"]]
    assert sorted(statuses) == ["active", "canceled"]


def _lago_event(tx: str, tokens: float, timestamp: int) -> dict[str, Any]:
    return {"transaction_id": tx, "external_subscription_id": "sub-1", "code": "tokens",
            "timestamp": timestamp, "properties": {"tokens": tokens}}


async def test_a_batch_answers_a_re_sent_event_as_stored_not_as_sent(tenant):
    """A batch event whose transaction_id is stored is answered with the stored one, as GET is."""
    first = _lago_event("tx-1", 100, 1_700_000_000)
    assert (await tenant.client.post("/lago/api/v1/events", json={"event": first})).status_code == 200
    again = _lago_event("tx-1", 999, 1_700_000_500)
    resp = await tenant.client.post("/lago/api/v1/events/batch", json={"events": [again]})
    assert resp.status_code == 200, resp.text
    stored = (await tenant.client.get("/lago/api/v1/events/tx-1")).json()["event"]
    assert resp.json()["events"] == [stored]
    assert stored["properties"] == {"tokens": 100}


async def test_a_batch_answers_its_new_events_as_stored(tenant):
    """New events of a batch come back as GET shows them, with their lago_id and created_at."""
    sent = [_lago_event(tx, 1, 1_700_000_000) for tx in ("tx-a", "tx-b")]
    answered = (await tenant.client.post("/lago/api/v1/events/batch", json={"events": sent})).json()["events"]
    stored = [(await tenant.client.get(f"/lago/api/v1/events/{tx}")).json()["event"] for tx in ("tx-a", "tx-b")]
    assert answered == stored
    assert all(e["lago_id"] and e["created_at"] for e in answered)
