"""The entry point: a new tenant with an admin key, the catalogue, the history, then traffic."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import httpx

from allotment.api.app import create_app
from allotment.config import Settings
from allotment.db import Database, shown_url
from allotment.demo import catalogue, history, traffic
from allotment.demo.api import Api
from allotment.importer.console import say
from allotment.migrate import upgrade
from allotment.tenancy import service as tenancy
from allotment.types import utcnow

TENANT_NAME = "Demo vendor"


def run_demo(settings: Settings, *, seconds: float | None, seed: int) -> int:
    """Seed a new demo tenant and send live traffic for `seconds` (None: until interrupted).

    The tenant's admin key goes to stdout (alone, for scripts); the rest to stderr."""
    upgrade(settings.database_url)
    try:
        asyncio.run(_demo(settings, seconds=seconds, rng=random.Random(seed)))
    except KeyboardInterrupt:
        say("stopped")
    return 0


async def _demo(settings: Settings, *, seconds: float | None, rng: random.Random) -> None:
    # The app in process, without its per-request log lines: stdout carries only the key.
    settings = replace(settings, access_log=False)
    db = Database(settings)
    try:
        async with db.transaction() as session:
            tenant = await tenancy.create_tenant(session, TENANT_NAME, at=utcnow())
            _, secret = await tenancy.create_key(session, tenant.id, scope="admin", name="demo", at=utcnow())
        print(secret, flush=True)
        say(f"demo tenant {tenant.id} in {shown_url(settings.database_url)}; its admin key is above "
            "(shown once)")
        transport = httpx.ASGITransport(app=create_app(settings, db=db))
        async with httpx.AsyncClient(transport=transport, base_url="http://demo",
                                     headers={"Authorization": f"Bearer {secret}"}) as client:
            api = Api(client)
            await catalogue.define(api)
            seeded = await history.seed(api, rng, utcnow())
            say(f"seeded {len(catalogue.METERS)} meters, {len(catalogue.PLANS)} plans, "
                f"{await _count(api, '/v1/customers')} customers and {seeded.events} events "
                f"of the last {history.SUBSCRIBED_DAYS} days")
            say("try: GET /v1/customers/acme/entitlements, /v1/denials, /v1/reports/overdraft, "
                "/v1/reports/upsell, /v1/meters/tokens/query?group_by=model&window_size=DAY")
            if seconds == 0:
                return
            say("live traffic: prompts checked before they are served, charging sessions, seat "
                "heartbeats (Ctrl-C stops)")
            tally = await traffic.run(api, rng, seeded, seconds=seconds, clock=utcnow, say=say)
            say(traffic.report(tally))
    finally:
        await db.dispose()


async def _count(api: Api, path: str) -> int:
    return len((await api.get(path, limit=1000))["items"])
