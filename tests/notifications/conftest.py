"""Fixtures of the notification tests: a loopback receiver, endpoints, customers, delivery rounds."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from allotment.db import Database
from allotment.notifications import service
from allotment.notifications.lanes import Lanes
from allotment.worker.delivery import DeliveryOptions, deliver_due, http_lanes
from tests.conftest import Tenant
from tests.notifications.receiver import Receiver

OPTIONS = DeliveryOptions(timeout=5.0)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


@pytest.fixture
async def sender() -> AsyncIterator[Lanes]:
    async with http_lanes(OPTIONS) as lanes:
        yield lanes


async def ok(resp: httpx.Response, status: int = 200) -> Any:
    assert resp.status_code == status, resp.text
    return resp.json() if resp.content else None


async def endpoint(tenant: Tenant, url: str, **extra: Any) -> dict[str, Any]:
    return await ok(await tenant.client.post("/v1/webhook-endpoints", json={"url": url, **extra}), 201)  # type: ignore[no-any-return]


async def customer_id(tenant: Tenant, key: str) -> str:
    body = await ok(await tenant.client.post("/v1/customers", json={"key": key, "name": key}), 201)
    return str(body["id"])


async def emit(db: Database, tenant: Tenant, key: str, *, at: datetime, customer: str | None = None,
               type: str = "entitlement.threshold_reached", **payload: Any) -> bool:
    async with db.transaction() as session:
        return await service.emit(session, tenant.id, type=type, dedupe_key=key, customer_id=customer,
                                  payload={"key": key, **payload}, at=at)


async def drain(db: Database, lanes: Lanes, *, at: datetime, rounds: int = 50) -> int:
    """Delivery rounds at time `at` until nothing more is due then; returns attempts made."""
    total = 0
    for _ in range(rounds):
        sent = await deliver_due(db, lanes, at=at, options=OPTIONS)
        if sent == 0:
            return total
        total += sent
    raise AssertionError("the outbox did not drain")
