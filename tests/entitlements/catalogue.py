"""Builders for catalogue tests: a metered feature, plans, customers and their rows."""

from __future__ import annotations

from typing import Any

from allotment.db import Database
from allotment.entitlements import provisioning
from allotment.entitlements.models import CustomerEntitlement


async def ok(resp: Any, status: int = 200) -> Any:
    assert resp.status_code == status, resp.text
    return resp.json() if resp.content else None


async def feature(client: Any, key: str, **extra: Any) -> dict[str, Any]:
    return await ok(await client.post("/v1/features", json={"key": key, **extra}), 201)  # type: ignore[no-any-return]


async def plan(client: Any, key: str, entitlements: list[dict[str, Any]], *, publish: bool = True,
               **extra: Any) -> dict[str, Any]:
    body = {"key": key, "name": key.title(), "entitlements": entitlements, **extra}
    created = await ok(await client.post("/v1/plans", json=body), 201)
    if publish:
        return await ok(await client.post(f"/v1/plans/{key}/publish"))  # type: ignore[no-any-return]
    return created  # type: ignore[no-any-return]


async def customer(client: Any, key: str) -> dict[str, Any]:
    return await ok(await client.post("/v1/customers", json={"key": key, "name": key}), 201)  # type: ignore[no-any-return]


async def subscribe(client: Any, customer_key: str, plan_key: str, **extra: Any) -> dict[str, Any]:
    body = {"customer": customer_key, "plan": plan_key, **extra}
    return await ok(await client.post("/v1/subscriptions", json=body), 201)  # type: ignore[no-any-return]


def metered(feature_key: str, included: int, soft: int | None = None, hard: int | None = None) -> dict[str, Any]:
    return {"feature": feature_key, "kind": "metered", "usage_period": "MONTH", "included": included,
            "soft_limit": soft, "hard_limit": hard}


def boolean(feature_key: str) -> dict[str, Any]:
    return {"feature": feature_key, "kind": "boolean"}


async def rows(db: Database, tenant_id: str, customer_id: str) -> list[CustomerEntitlement]:
    async with db.transaction(readonly=True) as session:
        return await provisioning.rows_of(session, tenant_id, customer_id)


async def open_rows(db: Database, tenant_id: str, customer_id: str) -> list[CustomerEntitlement]:
    """The rows with no end: what the customer has from now on, once scheduled changes apply."""
    return [r for r in await rows(db, tenant_id, customer_id) if r.active_to is None]
