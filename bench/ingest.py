"""Ingest throughput over HTTP against the raw insert ceiling of the same database.

    .venv/bin/python bench/ingest.py [--events 400000] [--backends sqlite,postgresql]

For each backend: (1) the ceiling — the same rows inserted with plain batched INSERTs of 500
in one transaction per batch (no HTTP, no de-duplication, no rollups); (2) Allotment —
`allotment serve --workers 2`, two meters (tokens SUM by model and direction, calls COUNT),
batches of 500 posted by concurrent keep-alive clients; every event durable, de-duplicated
and rolled up before its batch is acknowledged. The server is warmed up first with 20,000
other events (its connections opened, its statements prepared), which are not timed. The
ceilings are measured before and after Allotment's run and averaged. Prints both figures and
the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import time
from datetime import timedelta

import aiohttp
import asyncpg
import httpx
import orjson
from common import batches, drop_database, fresh_database, make_events, server

RAW_DDL = (
    "CREATE TABLE raw_events (seq {pk}, tenant_id TEXT NOT NULL, source TEXT NOT NULL,"
    " event_id TEXT NOT NULL, type TEXT NOT NULL, subject TEXT NOT NULL, time_us BIGINT NOT NULL,"
    " received_us BIGINT NOT NULL, data TEXT)"
)
WARM_UP = 20_000  # events sent before the timed run, distinct from the timed ones

# What de-duplicating forever costs by itself: the unique identity index, nothing else.
DEDUP_INDEX = "CREATE UNIQUE INDEX raw_identity ON raw_events (tenant_id, source, event_id)"


def rows_of(events: list[dict]) -> list[tuple]:
    now_us = int(time.time() * 1e6)
    return [("ten", e["source"], e["id"], e["type"], e["subject"], now_us, now_us, orjson.dumps(e["data"]).decode())
            for e in events]


def raw_sqlite(url: str, rows: list[tuple], batch: int, *, dedup: bool) -> float:
    path = url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(RAW_DDL.format(pk="INTEGER PRIMARY KEY"))
    if dedup:
        conn.execute(DEDUP_INDEX)
    insert = "INSERT OR IGNORE" if dedup else "INSERT"
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        conn.execute("BEGIN")
        conn.executemany(f"{insert} INTO raw_events (tenant_id, source, event_id, type, subject, time_us,"
                         " received_us, data) VALUES (?,?,?,?,?,?,?,?)", rows[i : i + batch])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return len(rows) / elapsed


async def raw_postgres(url: str, rows: list[tuple], batch: int, *, dedup: bool) -> float:
    conn = await asyncpg.connect(url)
    await conn.execute(RAW_DDL.format(pk="BIGSERIAL PRIMARY KEY"))
    if dedup:
        await conn.execute(DEDUP_INDEX)
    conflict = " ON CONFLICT DO NOTHING" if dedup else ""
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        async with conn.transaction():
            await conn.executemany("INSERT INTO raw_events (tenant_id, source, event_id, type, subject, time_us,"
                                   f" received_us, data) VALUES ($1,$2,$3,$4,$5,$6,$7,$8){conflict}", rows[i : i + batch])
    elapsed = time.perf_counter() - started
    await conn.close()
    return len(rows) / elapsed


def ceiling(backend: str, rows: list[tuple], batch: int, *, dedup: bool) -> float:
    url = fresh_database(backend)
    try:
        if backend == "sqlite":
            return raw_sqlite(url, rows, batch, dedup=dedup)
        return asyncio.run(raw_postgres(url, rows, batch, dedup=dedup))
    finally:
        drop_database(url)


async def post_all(url: str, key: str, bodies: list[bytes], concurrency: int) -> float:
    """Post every body over keep-alive connections (aiohttp: the leanest client on PyPI, so
    that the load generator takes as little of the shared cores as it can)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            async with session.post(f"{url}/v1/events", data=body, headers=headers) as resp:
                answer = await resp.read()
                if resp.status != 200 or orjson.loads(answer)["rejected"]:
                    raise RuntimeError(f"ingest failed: {resp.status} {answer[:300]!r}")

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return time.perf_counter() - started


def setup_meters(url: str, key: str) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    for body in (
        {"key": "tokens", "event_type": "prompt", "aggregation": "SUM", "value_property": "$.tokens",
         "group_by": {"model": "$.model", "direction": "$.direction"}},
        {"key": "calls", "event_type": "prompt", "aggregation": "COUNT"},
    ):
        httpx.post(f"{url}/v1/meters", json=body, headers=headers).raise_for_status()


def check_total(url: str, key: str, expected: int, when: str) -> None:
    resp = httpx.get(f"{url}/v1/meters/calls/query", headers={"Authorization": f"Bearer {key}"},
                     params={"from": "2000-01-01T00:00:00Z"})
    got = resp.json()["data"][0]["value"]
    for _ in range(3):
        if got == expected:
            break
        again = httpx.get(f"{url}/v1/meters/calls/query", headers={"Authorization": f"Bearer {key}"},
                          params={"from": "2000-01-01T00:00:00Z"}).json()["data"][0]["value"]
        print(f"  mismatch {when}: {got}, asked again: {again}")
        time.sleep(1)
    if got != expected:
        raise RuntimeError(f"{when}: calls meter says {got}, expected {expected}")


def run(backend: str, events: list[dict], warm_up: list[dict], batch: int, concurrency: int, workers: int) -> None:
    rows = rows_of(events)
    # The ceilings are measured right before and right after Allotment's run, and averaged:
    # this machine's speed drifts by tens of percent within minutes.
    raw_before, dedup_before = ceiling(backend, rows, batch, dedup=False), ceiling(backend, rows, batch, dedup=True)
    url = fresh_database(backend)
    try:
        from allotment.migrate import upgrade

        upgrade(url)
        with server(url, workers=workers) as (base, key):
            setup_meters(base, key)
            # Untimed: each worker's first requests open its connections and prepare its
            # statements, which a server does once, not per event.
            asyncio.run(post_all(base, key, batches(warm_up, batch), concurrency))
            elapsed = asyncio.run(post_all(base, key, batches(events, batch), concurrency))
            stored = len(warm_up) + len(events)
            check_total(base, key, stored, "after ingest")
            # A full re-send: everything is a duplicate, nothing is counted twice.
            dup_elapsed = asyncio.run(post_all(base, key, batches(events[: len(events) // 4], batch), concurrency))
            check_total(base, key, stored, "after re-sending duplicates")
    finally:
        drop_database(url)
    raw_after, dedup_after = ceiling(backend, rows, batch, dedup=False), ceiling(backend, rows, batch, dedup=True)
    ceiling_raw, ceiling_dedup = (raw_before + raw_after) / 2, (dedup_before + dedup_after) / 2
    rate = len(events) / elapsed
    print(f"{backend:>10}: raw insert ceiling {ceiling_raw:>9,.0f} rows/s ({raw_before:,.0f} before,"
          f" {raw_after:,.0f} after) | with the identity index alone {ceiling_dedup:>9,.0f} rows/s"
          f" ({dedup_before:,.0f}, {dedup_after:,.0f}) | Allotment HTTP ingest {rate:>9,.0f} events/s"
          f" | ratio to raw {rate / ceiling_raw:6.1%}, to identity-index ceiling {rate / ceiling_dedup:6.1%}"
          f" | duplicates re-sent {len(events) // 4 / dup_elapsed:>9,.0f} events/s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--spread-seconds", type=float, default=60,
                        help="event times fall within this many seconds before now (late data: larger)")
    args = parser.parse_args()
    made = make_events(args.events + WARM_UP, spread=timedelta(seconds=args.spread_seconds))
    warm_up, events = made[:WARM_UP], made[WARM_UP:]
    print(f"{args.events:,} events, batches of {args.batch}, {args.concurrency} concurrent clients, {args.workers} server workers,"
          f" event times within {args.spread_seconds:g} s")
    for backend in args.backends.split(","):
        run(backend, events, warm_up, args.batch, args.concurrency, args.workers)


if __name__ == "__main__":
    main()
