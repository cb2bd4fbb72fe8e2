"""What included units that roll over cost a check, as the entitlement ages.

    .venv/bin/python bench/rollover.py [--backends sqlite,postgresql] [--days 730] [--runs 50]

Two customers on daily usage periods with the same usage every day for `--days` days: one
entitlement rolls unused included units over (`included_rollover`), the other does not (the
baseline, answered from its counter). Prints the p50 of a check on the last day for each,
and their ratio: the roll-over is worked out by replaying every period with usage since the
entitlement began (docs/grants.md).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from common import drop_database, fresh_database

T0 = datetime(2024, 1, 1, tzinfo=UTC)


async def run(backend: str, url: str, days: int, runs: int) -> None:
    from allotment.bootstrap import ensure_default_tenant
    from allotment.config import Settings
    from allotment.customers import service as customers
    from allotment.customers.schemas import CustomerCreate
    from allotment.db import Database
    from allotment.entitlements import check as service
    from allotment.entitlements import features, overrides
    from allotment.entitlements.schemas import AdhocIn, FeatureCreate
    from allotment.migrate import upgrade

    upgrade(url)
    db = Database(Settings(database_url=url))
    try:
        tenant_id, _ = await ensure_default_tenant(db)
        async with db.transaction() as s:
            await features.create(s, tenant_id, FeatureCreate(key="data", name="Data"), actor="bench", at=T0)
            for key, rollover in (("plain", None), ("rolling", Decimal(2))):
                await customers.create(s, tenant_id, CustomerCreate(key=key, name=key), at=T0)
                values = AdhocIn(feature="data", kind="metered", usage_period="DAY", included=Decimal(10),
                                 hard_limit=Decimal(10**6), included_rollover=rollover, usage_anchor=T0)
                await overrides.create_adhoc(s, tenant_id, key, values, actor="bench", at=T0)
        for day in range(days):
            async with db.transaction() as s:
                for key in ("plain", "rolling"):
                    request = service.CheckRequest(key, "data", Decimal(7), True, None)
                    await service.check(s, tenant_id, request, at=T0 + timedelta(days=day, hours=12))
        at = T0 + timedelta(days=days - 1, hours=18)
        medians = {}
        for key in ("plain", "rolling"):
            samples = []
            for _ in range(runs):
                started = time.perf_counter()
                async with db.transaction() as s:
                    result = await service.check(s, tenant_id, service.CheckRequest(key, "data", Decimal(1), False, None),
                                                 at=at)
                samples.append((time.perf_counter() - started) * 1e6)
            medians[key] = statistics.median(samples)
            print(f"{backend:>10}: {key:<8} check after {days} days of daily usage: p50 {medians[key]:9,.0f} us"
                  f"  (balance {result.decision.balance})")
        print(f"{backend:>10}: roll-over / plain: {medians['rolling'] / medians['plain']:.1f}x")
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    for backend in args.backends.split(","):
        url = fresh_database(backend)
        try:
            asyncio.run(run(backend, url, args.days, args.runs))
        finally:
            drop_database(url)


if __name__ == "__main__":
    main()
