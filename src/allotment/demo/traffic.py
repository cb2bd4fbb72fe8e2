"""Live traffic: what the stories' vendors send while the demo runs, and a line a few seconds
saying what Allotment answered."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime

from allotment.demo.api import Api
from allotment.demo.history import AI_CUSTOMERS, DRIVERS, PHONE, Seeded, charge, prompt

TICK_SECONDS = 0.5
HEARTBEAT_SECONDS = 60  # well inside the seats' 15-minute lease
REPORT_SECONDS = 5


async def run(api: Api, rng: random.Random, seeded: Seeded, *, seconds: float | None,
              clock: Callable[[], datetime], say: Callable[[str], None]) -> Counter[str]:
    """Until `seconds` have passed (None: until cancelled); returns what was answered."""
    tally: Counter[str] = Counter()
    started = last_beat = last_report = time.monotonic()
    while seconds is None or time.monotonic() - started < seconds:
        await _tick(api, rng, tally, clock())
        now = time.monotonic()
        if now - last_beat >= HEARTBEAT_SECONDS:
            await _heartbeats(api, seeded)
            last_beat = now
        if now - last_report >= REPORT_SECONDS:
            say(report(tally))
            last_report = now
        await asyncio.sleep(TICK_SECONDS)
    return tally


def report(tally: Counter[str]) -> str:
    decisions = ", ".join(f"{tally[d]} {d}" for d in ("allow", "allow_overdraft", "deny"))
    return f"{tally['events']} events, {tally['checks']} checks ({decisions}), {tally['sessions']} charging sessions"


async def _tick(api: Api, rng: random.Random, tally: Counter[str], now: datetime) -> None:
    """A few prompts, each checked first (a denied one is not served, so sends no event); now
    and then a charging session and a phone's data."""
    events = []
    for c in rng.sample(AI_CUSTOMERS, k=rng.randint(1, 3)):
        tokens = rng.randint(500, 9_000)
        decision = await _check(api, tally, {"customer": c.key, "feature": "tokens", "quantity": tokens})
        if decision != "deny":
            events.append(prompt(rng, rng.choice(c.subjects or (c.key,)), now, tokens))
    if events:
        await api.post("/v1/events", events)
        tally["events"] += len(events)
    if rng.random() < 0.1:
        tally["sessions"] += await charge(api, rng, rng.choice(list(DRIVERS)))
    if rng.random() < 0.2:
        await _check(api, tally, {"customer": PHONE[0], "feature": "data", "quantity": rng.randint(1, 20),
                                  "consume": True})


async def _check(api: Api, tally: Counter[str], body: dict[str, object]) -> str:
    decision: str = (await api.post("/v1/check", body))["decision"]
    tally["checks"] += 1
    tally[decision] += 1
    return decision


async def _heartbeats(api: Api, seeded: Seeded) -> None:
    for customer, items in seeded.seats.items():
        for item in items:
            await api.post(f"/v1/customers/{customer}/seats/seats/heartbeat", {"item": item})
