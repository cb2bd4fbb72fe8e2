"""Latency of one real-time check, in-process (no HTTP), without and with consume.

    .venv/bin/python bench/check.py [--backends sqlite,postgresql] [--runs 500] [--customers 200]

Sets up customers on a plan with a metered feature through the same HTTP API users call
(in-process ASGI), then times a check as the endpoint runs it: the one-read path
(`entitlements.fastpath`), or the full check in a transaction when that path cannot answer
(always for consume). Prints p50 and p99 in microseconds: of the first check of each of
`--customers` customers (the process resolves their names: after a restart, every pair
costs this once per process), then of repeated checks of one customer.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from decimal import Decimal

import httpx
from common import drop_database, fresh_database

SETUP = [
    ("/v1/features", {"key": "api-calls", "name": "API calls"}),
    ("/v1/plans", {"key": "starter", "name": "Starter", "entitlements": [
        {"feature": "api-calls", "kind": "metered", "usage_period": "MONTH",
         "included": 10**9, "soft_limit": 10**9, "hard_limit": 10**9}]}),
    ("/v1/plans/starter/publish", None),
]


async def run(backend: str, url: str, runs: int, customers: int) -> None:
    from allotment.api.app import create_app
    from allotment.bootstrap import ensure_default_tenant
    from allotment.config import Settings
    from allotment.db import Database
    from allotment.entitlements import check as service
    from allotment.entitlements import fastpath
    from allotment.migrate import upgrade
    from allotment.types import utcnow

    upgrade(url)
    settings = Settings(database_url=url)
    db = Database(settings)
    try:
        tenant_id, secret = await ensure_default_tenant(db)
        transport = httpx.ASGITransport(app=create_app(settings, db=db))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench",
                                     headers={"Authorization": f"Bearer {secret}"}) as client:
            for path, body in SETUP:
                (await client.post(path, json=body)).raise_for_status()
            for i in range(customers):
                for path, body in [("/v1/customers", {"key": f"c{i}", "name": f"Customer {i}"}),
                                   ("/v1/subscriptions", {"customer": f"c{i}", "plan": "starter"})]:
                    (await client.post(path, json=body)).raise_for_status()

        async def timed(request: service.CheckRequest) -> float:
            await asyncio.sleep(0)  # each check in a turn of the loop of its own, like a request
            started = time.perf_counter()
            at = utcnow()
            if await fastpath.check(db, tenant_id, request, at) is None:
                async with db.transaction() as session:
                    await service.check(session, tenant_id, request, at=at)
            return (time.perf_counter() - started) * 1e6

        cases = [("first check", [(f"c{i}", False) for i in range(customers)]),
                 ("check", [("c0", False)] * runs), ("check + consume", [("c0", True)] * runs)]
        for label, calls in cases:
            samples = sorted([await timed(service.CheckRequest(who, "api-calls", Decimal(1), consume, None))
                              for who, consume in calls])
            print(f"{backend:>10}: {label:<16} p50 {statistics.median(samples):8,.0f} us"
                  f"  p99 {samples[int(len(samples) * 0.99) - 1]:8,.0f} us  ({len(samples)} checks)")
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--customers", type=int, default=200)
    args = parser.parse_args()
    for backend in args.backends.split(","):
        url = fresh_database(backend)
        try:
            asyncio.run(run(backend, url, args.runs, args.customers))
        finally:
            drop_database(url)


if __name__ == "__main__":
    main()
