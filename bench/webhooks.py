"""Webhook delivery throughput to a loopback receiver, and the cost of `emit`.

    .venv/bin/python bench/webhooks.py [--backends sqlite,postgresql] [--messages 5000]
        [--customers 500] [--loops 2] [--batch 200]

Fills the outbox with `--messages` notifications spread over `--customers` customers (one
endpoint subscribed to all), then drains it with `--loops` concurrent delivery loops in this
process, as `allotment serve` and `allotment worker` run them: fan-out, claim, signed POST,
record. The receiver (aiohttp) runs in its own process and answers 200. Prints webhooks/s,
and the time one `emit` adds to its transaction with 0 and with 100 endpoints subscribed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from common import drop_database, free_port, fresh_database


def receiver_main(port: int) -> None:
    from aiohttp import web

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def start_receiver() -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--receiver", str(port)])
    url = f"http://127.0.0.1:{port}/hook"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.post(url, content=b"{}", timeout=1)
            return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("receiver did not start")


async def setup(db: Any, tenant_id: str, url: str, customers: int) -> list[str]:
    from allotment.customers import service as customer_service
    from allotment.customers.schemas import CustomerCreate
    from allotment.notifications import service
    from allotment.notifications.schemas import WebhookEndpointCreate
    from allotment.types import utcnow

    async with db.transaction() as session:
        await service.create_endpoint(session, tenant_id, WebhookEndpointCreate(url=url), at=utcnow())
        return [
            (await customer_service.create(
                session, tenant_id, CustomerCreate(key=f"c{i}", name=f"c{i}"), at=utcnow()
            )).customer.id
            for i in range(customers)
        ]


async def emit_many(db: Any, tenant_id: str, customer_ids: list[str], messages: int, tag: str) -> list[float]:
    """Emit in transactions of 100; returns the time of each emit call in microseconds."""
    from allotment.notifications import service
    from allotment.types import utcnow

    samples = []
    for start in range(0, messages, 100):
        async with db.transaction() as session:
            for i in range(start, min(start + 100, messages)):
                began = time.perf_counter()
                await service.emit(
                    session, tenant_id, type="entitlement.threshold_reached",
                    dedupe_key=f"{tag}:{i}", customer_id=customer_ids[i % len(customer_ids)],
                    payload={"feature": "api-calls", "usage": i, "limit": 1000, "percent": 80},
                    at=utcnow(),
                )
                samples.append((time.perf_counter() - began) * 1e6)
    return samples


async def drain(db: Any, loops: int, batch: int, messages: int) -> float:
    """Run `loops` delivery loops until every message is delivered; returns seconds taken."""
    from sqlalchemy import func, select

    from allotment.notifications.models import DELIVERED, Delivery
    from allotment.worker.delivery import DeliveryOptions, run_delivery
    from allotment.worker.stopping import stop_loops

    options = DeliveryOptions(batch=batch, idle_seconds=0.01, loops=loops)
    started = time.perf_counter()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(run_delivery(db, options, stop))]
    try:
        while True:
            async with db.transaction(readonly=True) as session:
                done = await session.scalar(
                    select(func.count()).select_from(Delivery).where(Delivery.status == DELIVERED)
                )
            if done >= messages:
                return time.perf_counter() - started
            await asyncio.sleep(0.05)
    finally:
        await stop_loops(stop, tasks, grace=30)


async def add_endpoints(db: Any, tenant_id: str, url: str, count: int) -> None:
    from allotment.notifications import service
    from allotment.notifications.schemas import WebhookEndpointCreate
    from allotment.types import utcnow

    async with db.transaction() as session:
        for _ in range(count):
            await service.create_endpoint(session, tenant_id, WebhookEndpointCreate(url=url), at=utcnow())


async def run(backend: str, url: str, args: argparse.Namespace, receiver_url: str) -> None:
    from allotment.config import Settings
    from allotment.db import Database
    from allotment.migrate import upgrade
    from allotment.tenancy import service as tenancy
    from allotment.types import utcnow

    upgrade(url)
    db = Database(Settings(database_url=url))
    try:
        async with db.transaction() as session:
            tenant_id = (await tenancy.create_tenant(session, "bench", at=utcnow())).id
        customer_ids = await setup(db, tenant_id, receiver_url, args.customers)
        one = await emit_many(db, tenant_id, customer_ids, args.messages, "bench")
        seconds = await drain(db, args.loops, args.batch, args.messages)
        print(f"{backend:>10}: {args.messages} webhooks in {seconds:.2f} s = "
              f"{args.messages / seconds:,.0f} webhooks/s ({args.loops} loops, batch {args.batch}, "
              f"{args.customers} customers)", flush=True)
        await add_endpoints(db, tenant_id, receiver_url, 99)
        hundred = await emit_many(db, tenant_id, customer_ids, 2000, "more")
        print(f"{backend:>10}: emit p50 {statistics.median(one):.0f} µs with 1 endpoint, "
              f"{statistics.median(hundred):.0f} µs with 100 endpoints subscribed", flush=True)
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--loops", type=int, default=2)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        receiver_main(args.receiver)
        return
    receiver, receiver_url = start_receiver()
    try:
        for backend in args.backends.split(","):
            url = fresh_database(backend)
            try:
                asyncio.run(run(backend, url, args, receiver_url))
            finally:
                drop_database(url)
    finally:
        receiver.terminate()
        receiver.wait()


if __name__ == "__main__":
    os.environ.setdefault("ALLOTMENT_LOG_JSON", "0")
    main()
