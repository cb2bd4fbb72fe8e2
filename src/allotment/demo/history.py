"""The stories' customers and what they used before the demo started, sent as late events,
reservations, seat activations and checks, so every screen has something to show."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from allotment.demo.api import Api, DemoError

SUBSCRIBED_DAYS = 40  # long enough that every monthly customer has a whole period behind it
_BATCH = 500


@dataclass(frozen=True)
class AiCustomer:
    key: str
    name: str
    plan: str
    time_zone: str
    used: int  # tokens in the current period when the demo starts
    subjects: tuple[str, ...] = field(default=())


AI_CUSTOMERS = (
    AiCustomer("acme", "Acme Corp", "ai-starter", "Europe/Berlin", 1_210_000, ("acme-prod", "acme-staging")),
    AiCustomer("initech", "Initech", "ai-starter", "America/New_York", 540_000, ("initech-api",)),
    AiCustomer("hooli", "Hooli", "ai-starter", "UTC", 860_000, ("hooli-web", "hooli-batch")),
    AiCustomer("umbrella", "Umbrella Labs", "ai-starter", "Asia/Kolkata", 1_480_000, ("umbrella-api",)),
    AiCustomer("stark", "Stark Industries", "ai-pro", "America/Los_Angeles", 6_300_000, ("stark-ml",)),
)
SEAT_CUSTOMERS = {"globex": ("Globex", 112), "soylent": ("Soylent", 64)}  # seats held when the demo starts
DRIVERS = {"driver-dana": ("Dana (EV)", 200), "driver-eli": ("Eli (EV)", 500)}  # prepaid kWh
PHONE = ("sub-0170", "Subscriber +49 170", "+491700000170")
MEMBERS = {"member-ann": ("Ann (gym)", "gym-all-access"), "member-bob": ("Bob (gym)", "gym-limited")}
MODELS = ("small", "large", "vision")


@dataclass
class Seeded:
    """What the live traffic needs to know about the seeded tenant."""

    seats: dict[str, list[str]] = field(default_factory=dict)  # customer -> items holding a seat
    events: int = 0


async def seed(api: Api, rng: random.Random, now: datetime) -> Seeded:
    seeded = Seeded()
    since = now - timedelta(days=SUBSCRIBED_DAYS)
    for c in AI_CUSTOMERS:
        await _customer(api, c.key, c.name, list(c.subjects or (c.key,)))
        await api.post("/v1/subscriptions", {"customer": c.key, "plan": c.plan, "starts_at": since.isoformat(),
                                             "time_zone": c.time_zone})
        seeded.events += await _ai_usage(api, rng, c, since, now)
    for key, (name, held) in SEAT_CUSTOMERS.items():
        await _customer(api, key, name, [])
        await api.post("/v1/subscriptions", {"customer": key, "plan": "team-100", "starts_at": since.isoformat()})
        seeded.seats[key] = [f"{key}-user-{n:03d}" for n in range(1, held + 1)]
        for item in seeded.seats[key]:
            await api.post(f"/v1/customers/{key}/seats/seats/activate", {"item": item})
    for key, (name, credit) in DRIVERS.items():
        await _customer(api, key, name, [])
        await api.post("/v1/subscriptions", {"customer": key, "plan": "prepaid-kwh", "starts_at": since.isoformat()})
        await api.post(f"/v1/customers/{key}/entitlements/kwh/grants", {"amount": credit})
        while await charge(api, rng, key) and rng.random() < 0.85:
            pass  # sessions until one is refused or the driver stops for now
    seeded.events += await _phone(api, rng, since, now)
    for key, (name, plan) in MEMBERS.items():
        await _customer(api, key, name, [])
        await api.post("/v1/subscriptions", {"customer": key, "plan": plan, "starts_at": since.isoformat()})
    for _ in range(2):  # Bob's weekly entry, then one he pays for
        await api.post("/v1/check", {"customer": "member-bob", "feature": "pool", "consume": True})
    return seeded


async def charge(api: Api, rng: random.Random, driver: str) -> bool:
    """A charging session: hold 30 kWh at the plug, then commit what was charged."""
    hold = await api.post("/v1/reservations", {"customer": driver, "feature": "kwh", "quantity": 30,
                                               "ttl_seconds": 3600})
    if hold["decision"] == "deny":
        return False
    charged = round(rng.uniform(12, 29.5), 1)
    await api.post(f"/v1/reservations/{hold['reservation']['id']}/commit", {"quantity": charged})
    return True


async def _customer(api: Api, key: str, name: str, subjects: list[str]) -> None:
    await api.post("/v1/customers", {"key": key, "name": name, "subject_keys": subjects})


async def _ai_usage(api: Api, rng: random.Random, c: AiCustomer, since: datetime, now: datetime) -> int:
    """Last period's usage (some of it over the included amount) and this period's, up to `used`."""
    state = await api.get(f"/v1/customers/{c.key}/entitlements/tokens")
    start = datetime.fromisoformat(state["period_start"])
    subjects = list(c.subjects or (c.key,))
    events = _prompts(rng, subjects, since, start, int(c.used * rng.uniform(0.6, 1.1)))
    events += _prompts(rng, subjects, start, now, c.used)
    await _send(api, events)
    return len(events)


def prompt(rng: random.Random, subject: str, at: datetime, tokens: int) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"req-{rng.getrandbits(64):016x}", "source": "gateway",
            "type": "prompt", "subject": subject, "time": at.isoformat(),
            "data": {"tokens": tokens, "model": rng.choice(MODELS),
                     "direction": "input" if rng.random() < 0.7 else "output"}}


def _prompts(rng: random.Random, subjects: list[str], start: datetime, end: datetime, total: int) -> list[dict[str, Any]]:
    """Prompts summing to `total` tokens at random instants in [start, end)."""
    out, left, span = [], total, (end - start).total_seconds()
    while left > 0:
        tokens = min(left, rng.randint(500, 12_000))
        at = start + timedelta(seconds=rng.uniform(0, span))
        out.append(prompt(rng, rng.choice(subjects), at, tokens))
        left -= tokens
    return sorted(out, key=lambda e: e["time"])


async def _phone(api: Api, rng: random.Random, since: datetime, now: datetime) -> int:
    """A subscriber with the 10 GB bundle, a 1 GB add-on bought a third into the month that
    expires first (so burns first), and most of this month's data used, reported late by the
    network: what was used after the purchase burnt the add-on."""
    key, name, msisdn = PHONE
    await _customer(api, key, name, [msisdn])
    await api.post("/v1/subscriptions", {"customer": key, "plan": "bundle-10gb", "starts_at": since.isoformat()})
    start = datetime.fromisoformat((await api.get(f"/v1/customers/{key}/entitlements/data"))["period_start"])
    await api.post(f"/v1/customers/{key}/entitlements/data/grants", {
        "amount": 1024, "effective_at": (start + (now - start) / 3).isoformat(),
        "expires_at": (now + timedelta(days=7)).isoformat()})
    events = []
    for n in range(60):
        at = start + (now - start) * (n + rng.random()) / 60
        events.append({"specversion": "1.0", "id": f"cdr-{rng.getrandbits(64):016x}", "source": "network",
                       "type": "data-session", "subject": msisdn, "time": at.isoformat(), "data": {"mb": 150}})
        if n % 3 == 0:
            events.append({"specversion": "1.0", "id": f"cdr-{rng.getrandbits(64):016x}", "source": "network",
                           "type": "call", "subject": msisdn, "time": at.isoformat(),
                           "data": {"minutes": rng.randint(1, 9)}})
    await _send(api, events)
    return len(events)


async def _send(api: Api, events: list[dict[str, Any]]) -> None:
    for i in range(0, len(events), _BATCH):
        answer = await api.post("/v1/events", events[i : i + _BATCH])
        if answer["rejected"]:
            raise DemoError(f"demo events rejected: {answer['errors'][:3]}")
