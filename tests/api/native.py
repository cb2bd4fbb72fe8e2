"""The native `/v1` API as an outside tester sees it: its operations, read from the OpenAPI
document, and a realistic catalogue that gives every path parameter something to name.

The operations are read at collection time, so that a new endpoint is checked by every
convention test without anyone listing it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import httpx

from allotment.api.app import create_app
from allotment.config import Settings
from allotment.db import Database
from allotment.types import utcnow
from allotment.worker.delivery import DeliveryOptions, deliver_due, http_lanes


def _spec() -> dict[str, Any]:
    settings = Settings(database_url="sqlite://")  # never connected: the document needs no database
    spec: dict[str, Any] = create_app(settings, db=Database(settings)).openapi()
    return spec


SPEC = _spec()


@dataclass(frozen=True)
class Operation:
    method: str
    path: str

    @property
    def spec(self) -> dict[str, Any]:
        return SPEC["paths"][self.path][self.method.lower()]  # type: ignore[no-any-return]

    @property
    def query_parameters(self) -> set[str]:
        return {p["name"] for p in self.spec.get("parameters", []) if p["in"] == "query"}

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


OPERATIONS = [
    Operation(method.upper(), path)
    for path, item in SPEC["paths"].items() if path.startswith("/v1/")
    for method in item
]


def answer_schema(op: Operation) -> dict[str, Any]:
    for code, response in op.spec["responses"].items():
        if code.startswith("2"):
            schema = response.get("content", {}).get("application/json", {}).get("schema", {})
            ref = schema.get("$ref")
            return SPEC["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema  # type: ignore[no-any-return]
    return {}


def is_list(op: Operation) -> bool:
    """A list answers `{"items": [...], "next_cursor": ...}` (by its document, or by its name)."""
    properties = answer_schema(op).get("properties", {})
    return op.method == "GET" and ({"items", "next_cursor"} <= set(properties) or "limit" in op.query_parameters)


GETS = [op for op in OPERATIONS if op.method == "GET"]
LISTS = [op for op in GETS if is_list(op)]


@dataclass
class Catalogue:
    """What the catalogue holds: the value of each path parameter, and some spares."""

    params: dict[str, str] = field(default_factory=dict)
    _serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def fresh(self, prefix: str) -> str:
        return f"{prefix}-{next(self._serial)}"

    def url(self, path: str, **overrides: str) -> str:
        values = {**self.params, **overrides}
        if "/seats/" in path:
            values.setdefault("feature_key", "seats")
            values["feature_key"] = overrides.get("feature_key", "seats")
        return path.format(**values)


async def ok(resp: httpx.Response, *status: int) -> Any:
    assert resp.status_code in (status or (200, 201)), (resp.request.method, resp.request.url, resp.text)
    return resp.json() if resp.content else None


def _event(event_id: str, subject: str, **data: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": event_id, "source": "gateway", "type": "prompt", "subject": subject,
            "data": data}


TOP_UP = {"amount": 500, "price": "49.00", "currency": "USD", "expires_after_days": 30}


async def build(c: httpx.AsyncClient, db: Database) -> Catalogue:
    """Two of everything a list can hold: meters, customers with usage, features on plans,
    subscriptions, grants, holds, seats past their soft limit, denials, webhook endpoints with
    deliveries, notification rules and the notifications usage raised."""
    cat = Catalogue()
    for endpoint_url in ("http://127.0.0.1:9/hook", "http://127.0.0.1:9/other"):
        endpoint = await ok(await c.post("/v1/webhook-endpoints", json={"url": endpoint_url}))
    cat.params["endpoint_id"] = endpoint["id"]
    for _ in range(2):
        await ok(await c.post(f"/v1/webhook-endpoints/{endpoint['id']}/test"), 202)
    await ok(await c.post("/v1/meters", json={"key": "tokens", "name": "Tokens", "event_type": "prompt",
                                              "aggregation": "SUM", "value_property": "$.tokens",
                                              "group_by": {"model": "$.model"}}))
    await ok(await c.post("/v1/meters", json={"key": "prompts", "event_type": "prompt", "aggregation": "COUNT"}))
    await ok(await c.post("/v1/features", json={"key": "tokens", "name": "Tokens", "meter": "tokens",
                                                "unit": "token", "metadata": {"top_up": TOP_UP}}))
    await ok(await c.post("/v1/features", json={"key": "seats", "name": "Seats"}))
    await ok(await c.post("/v1/features", json={"key": "sso", "name": "SSO"}))
    await ok(await c.post("/v1/features", json={"key": "exports", "name": "Exports"}))
    for key in ("tokens", "seats"):
        await ok(await c.post("/v1/notification-rules", json={
            "event_type": "entitlement.threshold_reached", "name": f"{key} at 50%", "features": [key],
            "thresholds": [{"type": "percent", "value": 50}]}))
    rules = (await ok(await c.get("/v1/notification-rules")))["items"]
    cat.params["rule_id"] = rules[0]["id"]
    for key, included, hard in (("pro", 10000, 15000), ("starter", 1000, 1500)):
        await ok(await c.post("/v1/plans", json={
            "key": key, "name": key.title(), "currency": "USD", "next_tier": "pro" if key == "starter" else None,
            "entitlements": [
                {"feature": "tokens", "kind": "metered", "usage_period": "MONTH", "included": included,
                 "soft_limit": included, "hard_limit": hard},
                {"feature": "seats", "kind": "seats", "included": 2, "soft_limit": 2, "hard_limit": 3},
                {"feature": "sso", "kind": "boolean"}]}))
        await ok(await c.post(f"/v1/plans/{key}/publish"))
    for key in ("globex", "acme"):
        await ok(await c.post("/v1/customers", json={"key": key, "name": key.title(), "currency": "USD",
                                                     "email": f"billing@{key}.test",
                                                     "subject_keys": [f"{key}-key"]}))
        subscription = await ok(await c.post("/v1/subscriptions", json={"customer": key, "plan": "starter"}))
        await ok(await c.post("/v1/events", json=[
            _event(f"{key}-1", f"{key}-key", tokens=600, model="large"),
            _event(f"{key}-2", f"{key}-key", tokens=300, model="small"),
            _event(f"{key}-bad", f"{key}-key", tokens="many")]))
        for item in ("ann", "bob", "cy"):
            await ok(await c.post(f"/v1/customers/{key}/seats/seats/activate", json={"item": item}))
        for quantity in (100, 1000):  # the second is past the hard limit: a denial
            await ok(await c.post("/v1/check", json={"customer": key, "feature": "tokens", "quantity": quantity,
                                                     "consume": True}))
        for amount in (50, 70):
            grant = await ok(await c.post(f"/v1/customers/{key}/entitlements/tokens/grants",
                                          json={"amount": amount, "expires_at": "2099-01-01T00:00:00Z"}))
        for quantity in (5, 7):
            hold = await ok(await c.post("/v1/reservations", json={"customer": key, "feature": "tokens",
                                                                   "quantity": quantity, "ttl_seconds": 3600}))
    await ok(await c.post("/v1/customers/acme/entitlements", json={"feature": "exports", "kind": "boolean"}))
    await ok(await c.post("/v1/api-keys", json={"scope": "read", "name": "dashboards"}))
    async with http_lanes(DeliveryOptions()) as lanes:  # one round: the pings fail, and say so
        await deliver_due(db, lanes, at=utcnow())
    keys = (await ok(await c.get("/v1/api-keys")))["items"]
    notifications = (await ok(await c.get("/v1/notifications")))["items"]
    cat.params.update(
        customer_key="acme", feature_key="tokens", meter_key="tokens", plan_key="starter",
        subscription_id=subscription["id"], grant_id=grant["id"], reservation_id=hold["reservation"]["id"],
        key_id=next(k["id"] for k in keys if k["name"] == "dashboards"),
        notification_id=notifications[0]["id"] if notifications else "ntf_none",
    )
    return cat
