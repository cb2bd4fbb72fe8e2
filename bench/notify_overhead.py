"""What emitting entitlement notifications costs ingest and consume, with 100 endpoints subscribed.

    .venv/bin/python bench/notify_overhead.py [--backends sqlite,postgresql] [--events 40000]
        [--consumes 3000] [--rounds 2]

Two sides, each in a fresh database, in this process (in-process ASGI for ingest, the check
service for consumes, as the endpoints run them; no delivery worker, which runs elsewhere):
- quiet: no endpoints, limits so high that nothing is ever crossed, so nothing is emitted;
- noisy: 100 endpoints subscribed to everything, thresholds 50/80/100 % configured, and limits
  sized so that every customer crosses all three, then starts overdraft, during the run.
Ingest: batches of 500 events of 100 customers to a meter linked to the metered feature (the
counters move in the ingest transaction, crossings are detected there). Consume: one unit per
check, round-robin over 50 customers, one request at a time. The sides alternate `--rounds`
times (the machine is noisy); prints events/s, decisions/s and noisy/quiet.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import orjson
from common import batches, drop_database, fresh_database, make_events
from sqlalchemy import func, select

RULE = {"event_type": "entitlement.threshold_reached",
        "thresholds": [{"type": "percent", "value": v} for v in (50, 80, 100)]}
NEVER = 10**12
CONSUMERS = 50


async def _setup(client: httpx.AsyncClient, *, included: int, hard: int | None, customers: int, noisy: bool) -> None:
    async def post(path: str, body: Any = None) -> None:
        resp = await client.post(path, json=body)
        assert resp.status_code < 300, resp.text

    await post("/v1/meters", {"key": "tokens", "event_type": "prompt", "aggregation": "SUM",
                              "value_property": "$.tokens"})
    await post("/v1/features", {"key": "tokens", "name": "Tokens", "meter": "tokens"})
    await post("/v1/plans", {"key": "starter", "name": "Starter", "entitlements": [
        {"feature": "tokens", "kind": "metered", "usage_period": "MONTH", "included": included,
         "soft_limit": included, "hard_limit": hard}]})
    await post("/v1/plans/starter/publish")
    for i in range(customers):
        await post("/v1/customers", {"key": f"c{i}", "name": f"C{i}", "subject_keys": [f"user-{i}"]})
        await post("/v1/subscriptions", {"customer": f"c{i}", "plan": "starter"})
    if noisy:
        await post("/v1/notification-rules", RULE)
        for i in range(100):
            await post("/v1/webhook-endpoints", {"url": f"http://127.0.0.1:9/hook-{i}"})


async def _side(
    url: str, *, noisy: bool, mode: str, events: list[dict[str, Any]], consumes: int
) -> tuple[float, int, int]:
    """(events/s or decisions/s, notifications emitted, upsell asks) of one side on a fresh database."""
    from allotment.api.app import create_app
    from allotment.bootstrap import ensure_default_tenant
    from allotment.config import Settings
    from allotment.db import Database
    from allotment.entitlements import check as service
    from allotment.entitlements import fastpath
    from allotment.entitlements.models import UpsellDue
    from allotment.migrate import upgrade
    from allotment.types import utcnow

    upgrade(url)
    settings = Settings(database_url=url)
    db = Database(settings)
    try:
        tenant_id, secret = await ensure_default_tenant(db)
        transport = httpx.ASGITransport(app=create_app(settings, db=db))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=60,
                                     headers={"Authorization": f"Bearer {secret}"}) as client:
            if mode == "ingest":
                per_customer = Counter(e["subject"] for e in events)
                tokens = sum(e["data"]["tokens"] for e in events) // max(1, len(per_customer))
                await _setup(client, included=tokens // 2 if noisy else NEVER, hard=None, customers=100, noisy=noisy)
                # Live traffic, after the subscriptions began (rows count from their start).
                now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
                bodies = batches([{**e, "time": now} for e in events], 500)
                started = time.perf_counter()
                for body in bodies:
                    resp = await client.post("/v1/events", content=body, headers={"content-type": "application/json"})
                    assert resp.status_code == 200, resp.text
                rate = len(events) / (time.perf_counter() - started)
            else:
                each = consumes // CONSUMERS
                await _setup(client, included=each // 2 if noisy else NEVER, hard=NEVER, customers=CONSUMERS,
                             noisy=noisy)
                requests = [service.CheckRequest(f"c{i}", "tokens", Decimal(1), True) for i in range(CONSUMERS)]
                for r in requests:  # resolve the names once, as a long-running server has
                    await client.post("/v1/check", json={"customer": r.customer, "feature": "tokens"})
                started = time.perf_counter()
                for n in range(consumes):
                    request, at = requests[n % CONSUMERS], utcnow()
                    if await fastpath.check(db, tenant_id, request, at) is None:
                        async with db.transaction() as session:
                            await service.check(session, tenant_id, request, at=at)
                rate = consumes / (time.perf_counter() - started)
            listed = orjson.loads((await client.get("/v1/notifications", params={"limit": 1000})).content)
            async with db.transaction(readonly=True) as session:
                asked = await session.scalar(select(func.count()).select_from(UpsellDue))
            return rate, len(listed["items"]), int(asked or 0)
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--consumes", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    events = make_events(args.events, subjects=100)
    for backend in args.backends.split(","):
        for mode, unit in (("ingest", "events/s"), ("consume", "decisions/s")):
            rates: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.rounds):
                for noisy in (False, True):
                    url = fresh_database(backend)
                    try:
                        rate, emitted, asked = asyncio.run(_side(url, noisy=noisy, mode=mode, events=events,
                                                          consumes=args.consumes))
                    finally:
                        drop_database(url)
                    rates[noisy].append(rate)
                    side = "100 endpoints, crossing" if noisy else "0 endpoints, quiet    "
                    print(f"{backend:>10} {mode:<7} {side}: {rate:10,.0f} {unit}  ({emitted} notifications, {asked} upsell asks)")
            best = max(rates[True]) / max(rates[False])
            middle = statistics.median(rates[True]) / statistics.median(rates[False])
            print(f"{backend:>10} {mode:<7} noisy / quiet: best {best:.2f}, median {middle:.2f}")


if __name__ == "__main__":
    main()
