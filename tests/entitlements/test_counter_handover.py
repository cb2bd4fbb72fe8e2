"""Usage in flight when a plan changes lands on the new plan's counter, whichever way it came.

The new row starts its counter with the period's usage so far. A consume, hold or ingest that
had already counted on the old row, or was about to, must not be left behind on the old
counter once that copy is made: the new row would then allow it again. Each test holds the old
counter's row lock from outside so that the usage is in flight, deterministically, while the
plan changes; the lock is given back once the change has either finished or is waiting for it.
PostgreSQL only: SQLite's single writer runs the change and the usage one after the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import _admin_dsn
from tests.entitlements.catalogue import feature, metered, ok, plan, subscribe
from tests.entitlements.locks import until, waiting
from tests.helpers import event, meter

pytestmark = pytest.mark.backends("postgresql")


async def _setup(c: Any) -> str:
    await ok(await c.post("/v1/meters", json=meter()), 201)
    await feature(c, "tokens", meter="tokens")
    await plan(c, "starter", [metered("tokens", 100, 100, 100)])
    await plan(c, "big", [metered("tokens", 200, 200, 200)])
    await ok(await c.post("/v1/customers", json={"key": "acme", "name": "Acme", "subject_keys": ["acme-1"]}), 201)
    sub = await subscribe(c, "acme", "starter")
    await ok(await c.post("/v1/events", json=[event("acme-1", tokens=10)]))
    check = {"customer": "acme", "feature": "tokens", "quantity": 1}
    await ok(await c.post("/v1/check", json=check))  # this process now remembers the row
    return f"/v1/subscriptions/{sub['id']}/change-plan"


async def _while_the_plan_changes(database_url: str, c: Any, usage: Callable[[], Awaitable[httpx.Response]],
                                  change: str) -> httpx.Response:
    """Run `usage` while holding the counter, change the plan, then let both finish."""
    counter, watch = await asyncpg.connect(_admin_dsn(database_url)), await asyncpg.connect(_admin_dsn(database_url))
    try:
        holding = counter.transaction()
        await holding.start()
        await counter.execute("SELECT used FROM entitlement_usage FOR UPDATE")
        used = asyncio.create_task(usage())
        await until(lambda: waiting(watch, 1))
        changing = asyncio.create_task(c.post(change, json={"plan": "big"}))
        await until(lambda: _done_or_waiting(changing, watch))
        await holding.rollback()
        answer = await used
        await ok(await changing)
        return answer
    finally:
        await counter.close()
        await watch.close()


async def _done_or_waiting(changing: asyncio.Task[httpx.Response], watch: asyncpg.Connection) -> bool:
    return changing.done() or await waiting(watch, 2)


async def _state(c: Any) -> tuple[Any, Any]:
    state = await ok(await c.get("/v1/customers/acme/entitlements/tokens"))
    return state["usage"], state["hard_limit"]


async def test_events_counting_while_the_plan_changes_count_on_the_new_plan(tenant, database_url):
    """An ingest that counted on the old row but had not committed yet when the plan changed."""
    c = tenant.client
    change = await _setup(c)
    sent = await _while_the_plan_changes(database_url, c, lambda: c.post("/v1/events", json=[event("acme-1", tokens=7)]),
                                         change)
    assert sent.json()["accepted"] == 1
    assert await _state(c) == (17, 200)


async def test_a_consume_in_flight_while_the_plan_changes_counts_on_the_new_plan(tenant, database_url):
    """A consume this process proved against the old row before the change counts once, on the new row."""
    c = tenant.client
    change = await _setup(c)
    body = {"customer": "acme", "feature": "tokens", "quantity": 5, "consume": True}
    answer = await ok(await _while_the_plan_changes(database_url, c, lambda: c.post("/v1/check", json=body), change))
    assert answer["decision"] == "allow"
    assert await _state(c) == (15, 200)


async def test_a_keyed_consume_in_flight_while_the_plan_changes_counts_on_the_new_plan(tenant, database_url):
    """The full check's consume, resolved to the old row before the change, counts on the new row."""
    c = tenant.client
    change = await _setup(c)
    body = {"customer": "acme", "feature": "tokens", "quantity": 5, "consume": True, "idempotency_key": "k1"}
    answer = await ok(await _while_the_plan_changes(database_url, c, lambda: c.post("/v1/check", json=body), change))
    assert answer["decision"] == "allow"
    assert await _state(c) == (15, 200)


async def test_a_hold_taken_while_the_plan_changes_commits_on_the_new_plan(tenant, database_url):
    """A reservation held on the old row as the plan changes is the new row's, and so is its commit."""
    c = tenant.client
    change = await _setup(c)
    body = {"customer": "acme", "feature": "tokens", "quantity": 30, "ttl_seconds": 3600}
    held = await ok(await _while_the_plan_changes(database_url, c, lambda: c.post("/v1/reservations", json=body),
                                                  change), 201)
    state = await ok(await c.get("/v1/customers/acme/entitlements/tokens"))
    assert (state["usage"], state["reserved"], state["hard_limit"]) == (10, 30, 200)
    await ok(await c.post(f"/v1/reservations/{held['reservation']['id']}/commit", json={"quantity": 20}))
    assert await _state(c) == (30, 200)
