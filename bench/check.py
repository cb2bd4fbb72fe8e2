"""Latency of one real-time check, in-process (no HTTP), without and with consume.

    .venv/bin/python bench/check.py [--backends sqlite,postgresql] [--runs 500]

Sets up one customer on a plan with a metered feature through the same HTTP API users call
(in-process ASGI), then times a check as the endpoint runs it: the one-read path
(`entitlements.fastpath`), or the full check in a transaction when that path cannot answer
(always for consume). Prints p50 and p99 in microseconds.
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
    ("/v1/customers", {"key": "acme", "name": "Acme"}),
    ("/v1/subscriptions", {"customer": "acme", "plan": "starter"}),
]


async def run(backend: str, url: str, runs: int) -> None:
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
        for consume in (False, True):
            request = service.CheckRequest("acme", "api-calls", Decimal(1), consume, None)
            samples = []
            for _ in range(runs):
                await asyncio.sleep(0)  # each check in a turn of the loop of its own, like a request
                started = time.perf_counter()
                at = utcnow()
                if await fastpath.check(db, tenant_id, request, at) is None:
                    async with db.transaction() as session:
                        await service.check(session, tenant_id, request, at=at)
                samples.append((time.perf_counter() - started) * 1e6)
            samples.sort()
            label = "check + consume" if consume else "check"
            print(f"{backend:>10}: {label:<16} p50 {statistics.median(samples):8,.0f} us"
                  f"  p99 {samples[int(runs * 0.99) - 1]:8,.0f} us")
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    for backend in args.backends.split(","):
        url = fresh_database(backend)
        try:
            asyncio.run(run(backend, url, args.runs))
        finally:
            drop_database(url)


if __name__ == "__main__":
    main()
