"""Meter query latency on a large event log, and ingest cost as the log grows.

    .venv/bin/python bench/query.py [--events 10000000] [--backends sqlite,postgresql]

Loads N events (one SUM meter, 1,000 subjects each owned by its own customer, spread over 90
days) through the real ingest and folding code in-process, timing ingest as the log reaches 1 M
events stored and as it reaches N (the rate over the last fortieth of N before each mark: 250,000
events for 10 M), beside `allotment serve --workers 2` on that database, then runs the
maintenance the database would run on its own after such a load (VACUUM ANALYZE). Then times over
HTTP: (a) a 30-day query with DAY windows for one customer, (b) the same for all customers
grouped by subject. Prints p50/p95 of each.

Checks against the log's size: every customer is subscribed to a plan whose metered feature is
fed by the meter, and `POST /v1/check` is driven by wrk (64 connections, customers in turn).
After the load, a twin server on a fresh database with the same catalogue and no events is
started beside it, and checks are measured on the two in turn (twice each, because this
machine's speed drifts); prints the best of each and their ratio. Needs `wrk`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import orjson
from common import drop_database, fresh_database, server

SUBJECTS = 1000
DAYS = 90
BATCH = 5000


def batch_bodies(total: int, seed: int = 3):  # type: ignore[no-untyped-def]
    """Event batches in time order (as live traffic arrives), 90 days ending yesterday."""
    rng = random.Random(seed)
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=DAYS)
    step = (end - start).total_seconds() / total
    for first in range(0, total, BATCH):
        events = []
        for i in range(first, min(first + BATCH, total)):
            at = start + timedelta(seconds=i * step)
            events.append({"specversion": "1.0", "id": f"e{i}", "source": "bench", "type": "prompt",
                           "subject": f"user-{rng.randrange(SUBJECTS)}",
                           "time": at.isoformat().replace("+00:00", "Z"),
                           "data": {"tokens": rng.randrange(1, 2000)}})
        yield orjson.dumps(events)


def prepare(base: str, key: str) -> None:
    """The meter, the customers, and a plan whose metered feature that meter feeds."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        for path, body in [
            ("/v1/meters", {"key": "tokens", "event_type": "prompt", "aggregation": "SUM",
                            "value_property": "$.tokens"}),
            ("/v1/features", {"key": "tokens", "name": "Tokens", "meter": "tokens"}),
            ("/v1/plans", {"key": "starter", "name": "Starter", "entitlements": [
                {"feature": "tokens", "kind": "metered", "usage_period": "MONTH",
                 "included": 10**12, "soft_limit": 10**12, "hard_limit": 10**13}]}),
            ("/v1/plans/starter/publish", None),
        ]:
            c.post(path, json=body).raise_for_status()
        for i in range(SUBJECTS):
            c.post("/v1/customers", json={"key": f"cust-{i}", "name": f"Customer {i}",
                                          "subject_keys": [f"user-{i}"]}).raise_for_status()
            c.post("/v1/subscriptions", json={"customer": f"cust-{i}", "plan": "starter"}).raise_for_status()


CHECK_LUA = """
local n = 0
request = function()
  n = n + 1
  local body = '{{"customer":"cust-' .. (n % {customers}) .. '","feature":"tokens"}}'
  return wrk.format("POST", "/v1/check", {{["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer {key}"}}, body)
end
"""


def checks(base: str, key: str) -> dict[str, float]:
    """wrk checking every customer in turn: warm-up, then 10 s measured."""
    from check_http import wrk

    script = CHECK_LUA.format(customers=SUBJECTS, key=key)
    wrk(base, 8, 64, script)
    return wrk(base, 10, 64, script)


async def load(url: str, total: int) -> tuple[float, float]:
    """Returns ingest events/s as the log reaches 1 M events stored (a tenth of `total` when
    that is less) and as it reaches `total`: each over the fortieth of `total` before the mark.
    The first stretches, into nearly empty indexes whose pages many subjects share, run
    faster; they are printed too."""
    from allotment.config import Settings
    from allotment.db import Database
    from allotment.metering import ingest
    from allotment.metering.folding import fold_pending
    from allotment.metering.wire import decode
    from allotment.tenancy import service as tenancy
    from allotment.types import to_micros, utcnow

    db = Database(Settings(database_url=url))
    async with db.transaction() as s:
        tenant = await tenancy.first_tenant(s)
        assert tenant is not None
    window = max(BATCH, total // 40)
    first_mark = min(1_000_000, total // 10)
    rates: dict[int, float] = {}
    done, mark, mark_at = 0, 0, time.perf_counter()
    for body in batch_bodies(total):
        decoded = decode(body, max_events=BATCH)
        async with db.transaction() as s:
            await ingest.ingest(s, tenant.id, [ingest.Batch(decoded, to_micros(utcnow()))])
        async with db.transaction() as s:
            await fold_pending(s)
        done += len(decoded.events)
        if done - mark >= window:
            rates[done] = (done - mark) / (time.perf_counter() - mark_at)
            mark, mark_at = done, time.perf_counter()
            print(f"  loaded {done:>11,} events, last {window:,} at {rates[done]:,.0f} events/s", flush=True)
    while True:
        async with db.transaction() as s:
            if not await fold_pending(s):
                break
    await db.dispose()
    await _maintain(url)
    at_first = max(stored for stored in rates if stored <= max(first_mark, window))
    return rates[at_first], rates[max(rates)]


async def _maintain(url: str) -> None:
    """What the database does on its own soon after a bulk load (PostgreSQL's autovacuum:
    statistics and the visibility map), done at once, so that queries are timed in the steady
    state rather than while autovacuum works through ten million fresh rows."""
    started = time.perf_counter()
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute("ANALYZE")
    else:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("VACUUM (ANALYZE)")
        finally:
            await conn.close()
    print(f"  maintenance after the load (VACUUM ANALYZE / ANALYZE): {time.perf_counter() - started:,.1f} s")


def timed(client: httpx.Client, path: str, params: dict, runs: int = 30) -> tuple[float, float, int]:
    client.get(path, params=params).raise_for_status()  # warm up
    samples, rows = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        resp = client.get(path, params=params)
        samples.append((time.perf_counter() - started) * 1000)
        resp.raise_for_status()
        rows = len(resp.json()["data"])
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1], rows


def run(backend: str, total: int) -> None:
    url = fresh_database(backend)
    try:
        from allotment.migrate import upgrade

        upgrade(url)
        with server(url, workers=2) as (base, key):  # creates the tenant; load runs beside it
            prepare(base, key)
            started = time.perf_counter()
            first, last = asyncio.run(load(url, total))
            print(f"{backend:>10}: loaded {total:,} events in {time.perf_counter() - started:,.0f} s;"
                  f" ingest {first:,.0f} events/s as the log reached {min(1_000_000, total // 10):,} events,"
                  f" {last:,.0f} events/s as it reached {total:,}"
                  f" (ratio {last / first:.2f})")
            end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            params = {"from": (end - timedelta(days=30)).isoformat(), "to": end.isoformat(), "window_size": "DAY"}
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
                p50, p95, rows = timed(client, "/v1/meters/tokens/query", {**params, "customer": "cust-7"})
                print(f"{backend:>10}: 30 days x DAY, one customer:            p50 {p50:7.1f} ms  p95 {p95:7.1f} ms ({rows} rows)")
                p50, p95, rows = timed(client, "/v1/meters/tokens/query", {**params, "group_by": "subject"}, runs=10)
                print(f"{backend:>10}: 30 days x DAY, all customers by subject: p50 {p50:7.1f} ms  p95 {p95:7.1f} ms ({rows} rows)")
            twin = fresh_database(backend)
            try:
                upgrade(twin)
                with server(twin, workers=2) as (twin_base, twin_key):
                    prepare(twin_base, twin_key)
                    runs: dict[str, list[dict[str, float]]] = {"empty": [], "full": []}
                    for _ in range(2):
                        runs["empty"].append(checks(twin_base, twin_key))
                        runs["full"].append(checks(base, key))
            finally:
                drop_database(twin)
            best = {side: max(got, key=lambda g: g["rps"]) for side, got in runs.items()}
            for side, label in (("empty", "no events stored"), ("full", f"{total:,} events stored")):
                got = best[side]
                each = ", ".join(f"{g['rps']:,.0f}" for g in runs[side])
                print(f"{backend:>10}: check, {label:<22} {got['rps']:9,.0f} req/s"
                      f"  p50 {got['p50']:6.2f} ms  p99 {got['p99']:6.2f} ms  (runs: {each})")
            print(f"{backend:>10}: check throughput, full log / empty log: {best['full']['rps'] / best['empty']['rps']:.2f}")
    finally:
        drop_database(url)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    print(f"{args.events:,} events over {DAYS} days, {SUBJECTS:,} subjects/customers")
    for backend in args.backends.split(","):
        run(backend, args.events)


if __name__ == "__main__":
    main()
