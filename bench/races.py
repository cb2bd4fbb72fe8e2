"""A mixed torture run against real servers: every way usage moves, at once, on the same
customers and features, then a check of the invariants from the API and from the database.

    .venv/bin/python bench/races.py [--backend postgresql|sqlite] [--seconds 40] [--clients 48]
        [--seed 1] [--processes 4] [--base-port N] [--database-url URL]

PostgreSQL: `--processes` separate `allotment serve` processes (default 4) on one database;
SQLite: one `allotment serve --workers 2`. Clients (asyncio + httpx, `--clients` in flight)
mix, on three customers: consumes with and without idempotency keys (keys retried, at once
and later), reservations (commit less or more than held, release, abandon to a short TTL,
commit after expiry), events on a meter a feature counts (batches resent), consumes on that
feature too, seats with short leases (activate, heartbeat, release, abandon), grants added,
an override of a hard limit and a plan change, all mid-run. Then, once every hold and lease
has expired, it checks:

- no 5xx, ever;
- every answer: usage + reserved within the answer's hard limit (consume-only features),
  active seats within theirs, and an allow never beyond it on the event-fed feature;
- a keyed consume answers the same every time it is asked, and a keyed hold asked again is
  the same hold (a refused one too: its retry is refused, not decided again);
- consume-only usage == the units allowed (each key once) plus what commits recorded;
- every acknowledged event counted exactly once (meter query, entitlement usage, event log);
- no open reservation and no live seat lease left; reserved back at 0 on every counter;
- the denials list holds exactly the refusals answered.

Prints each check and exits 1 when any fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from common import BIN, drop_database, free_port, fresh_database

CUSTOMERS = ["c0", "c1", "c2"]
TTL = 2  # seconds: reservation holds and seat leases
SEAT_ITEMS = 12
SOURCE = "races"


def plan(hard: dict[str, int]) -> list[dict[str, Any]]:
    return [
        {"feature": "calls", "kind": "metered", "usage_period": "MONTH", "included": hard["calls"] * 3 // 4,
         "hard_limit": hard["calls"]},
        {"feature": "energy", "kind": "metered", "usage_period": "MONTH", "included": hard["energy"] * 2 // 3,
         "hard_limit": hard["energy"]},
        {"feature": "tokens", "kind": "metered", "usage_period": "MONTH", "included": hard["tokens"] // 2,
         "hard_limit": hard["tokens"]},
        {"feature": "seats", "kind": "seats", "included": hard["seats"] - 1, "hard_limit": hard["seats"],
         "lease_ttl_seconds": TTL},
    ]


TEAM = {"calls": 300, "energy": 1500, "tokens": 5000, "seats": 4}
PLUS = {"calls": 700, "energy": 2500, "tokens": 9000, "seats": 6}
OVERRIDE = 500  # c0's calls, mid-run


@dataclass
class Ledger:
    """What the clients were told, to hold the servers to it at the end."""

    violations: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    ops: Counter[str] = field(default_factory=Counter)
    allowed: dict[tuple[str, str], Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    keyed: dict[str, dict[str, Any]] = field(default_factory=dict)  # consume key -> first answer
    denials: Counter[tuple[str, str]] = field(default_factory=Counter)
    keyed_denials: set[str] = field(default_factory=set)
    acked: dict[str, tuple[str, int]] = field(default_factory=dict)  # event id -> (customer, tokens)
    committed: dict[str, tuple[str, Decimal]] = field(default_factory=dict)  # reservation id -> customer, quantity
    answers: int = 0

    def fail(self, what: str) -> None:
        if len(self.violations) < 200:
            self.violations.append(what)

    def status(self, resp: httpx.Response, what: str) -> None:
        self.statuses[resp.status_code] += 1
        if resp.status_code >= 500:
            self.fail(f"{resp.status_code} on {what}: {resp.text[:300]}")

    def observe(self, customer: str, feature: str, body: dict[str, Any], what: str) -> None:
        """Every answer that states usage must state it within its own hard limit."""
        self.answers += 1
        hard = body.get("hard_limit")
        if hard is None:
            return
        if feature == "seats":
            if body["active"] > hard:
                self.fail(f"{what} {customer}: {body['active']} seats active over hard limit {hard}")
            return
        usage = Decimal(str(body.get("usage") or 0)) + Decimal(str(body.get("reserved") or 0))
        allowed = body.get("decision", "allow") != "deny"
        if (feature != "tokens" or allowed) and usage > Decimal(str(hard)):
            self.fail(f"{what} {customer}/{feature}: usage+reserved {usage} over hard limit {hard}: {body}")


class Traffic:
    def __init__(self, urls: list[str], key: str, ledger: Ledger, rng: random.Random, seconds: float) -> None:
        self.urls, self.ledger, self.rng = urls, ledger, rng
        self.headers = {"Authorization": f"Bearer {key}"}
        self.deadline = time.monotonic() + seconds
        self.seconds = seconds
        # Idle connections are dropped well before the servers' keep-alive timeout (5 s), so no
        # request goes out on a connection the server is closing.
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256, keepalive_expiry=1.0)
        self.client = httpx.AsyncClient(headers=self.headers, timeout=120, limits=limits)
        self.serial = 0

    def next_id(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}-{self.serial}"

    async def post(self, path: str, body: Any, *, headers: dict[str, str] | None = None) -> httpx.Response:
        url = self.rng.choice(self.urls) + path
        try:
            resp = await self.client.post(url, json=body, headers=headers)
        except httpx.TransportError as exc:  # reported as a 5xx: the answer was lost
            resp = httpx.Response(599, json={"type": "transport_error", "detail": repr(exc)})
        self.ledger.status(resp, f"POST {path}")
        return resp

    async def get(self, path: str, **params: Any) -> httpx.Response:
        resp = await self.client.get(self.urls[0] + path, params=params)
        self.ledger.status(resp, f"GET {path}")
        return resp

    # -- consumes -----------------------------------------------------------------------------

    async def consume(self, feature: str, *, keyed: bool) -> None:
        customer = self.rng.choice(CUSTOMERS)
        quantity = self.rng.randint(1, 40 if feature == "tokens" else 3 if feature == "calls" else 6)
        body: dict[str, Any] = {"customer": customer, "feature": feature, "quantity": quantity, "consume": True}
        if not keyed:
            self.ledger.ops[f"consume {feature}"] += 1
            resp = await self.post("/v1/check", body)
            if resp.status_code == 200:
                self._consumed(customer, feature, quantity, resp.json(), "consume")
            return
        self.ledger.ops[f"keyed consume {feature}"] += 1
        body["idempotency_key"] = key = self.next_id(f"k-{feature}")
        copies = 2 if self.rng.random() < 0.4 else 1  # a client retrying while the first is in flight
        answers = await asyncio.gather(*(self.post("/v1/check", body) for _ in range(copies)))
        if self.rng.random() < 0.3:  # and once more, later
            await asyncio.sleep(self.rng.random() * 0.5)
            answers.append(await self.post("/v1/check", body))
        for resp in answers:
            if resp.status_code != 200:
                continue
            answer = resp.json()
            first = self.ledger.keyed.get(key)
            if first is None:
                self.ledger.keyed[key] = answer
                self._consumed(customer, feature, quantity, answer, "keyed consume")
            elif (first["decision"], first.get("usage")) != (answer["decision"], answer.get("usage")):
                self.ledger.fail(f"keyed consume {key} answered {first} then {answer}")

    def _consumed(self, customer: str, feature: str, quantity: int, answer: dict[str, Any], what: str) -> None:
        self.ledger.observe(customer, feature, answer, what)
        if answer["decision"] == "deny":
            self.ledger.denials[customer, feature] += 1
        else:
            self.ledger.allowed[customer, feature] += quantity

    # -- reservations -------------------------------------------------------------------------

    async def reservation(self) -> None:
        customer = self.rng.choice(CUSTOMERS)
        quantity = self.rng.randint(10, 60)
        body = {"customer": customer, "feature": "energy", "quantity": quantity, "ttl_seconds": TTL,
                "idempotency_key": self.next_id("hold")}
        asked = time.monotonic()  # a hold cannot expire sooner than TTL after it was asked for
        resp = await self.post("/v1/reservations", body)
        if self.rng.random() < 0.2:  # the same hold asked again: the same reservation
            again = await self.post("/v1/reservations", body)
            if resp.status_code in (200, 201) and again.status_code in (200, 201):
                first, second = resp.json(), again.json()
                if (first["reservation"] or {}).get("id") != (second["reservation"] or {}).get("id"):
                    self.ledger.fail(f"hold retried: {first} then {second}")
        if resp.status_code not in (200, 201):
            self.ledger.fail(f"hold answered {resp.status_code}: {resp.text[:200]}")
            return
        held = resp.json()
        self.ledger.observe(customer, "energy", held, "hold")
        if held["decision"] == "deny":
            self.ledger.ops["hold denied"] += 1
            self.ledger.denials[customer, "energy"] += 1
            return
        rid = held["reservation"]["id"]
        fate = self.rng.choice(["less", "less", "more", "release", "abandon", "late"])
        self.ledger.ops[f"hold {fate}"] += 1
        if fate == "abandon":
            return
        await asyncio.sleep(TTL + 0.5 if fate == "late" else self.rng.random() * TTL * 0.6)
        if fate == "release":
            resp = await self.post(f"/v1/reservations/{rid}/release", None)
            if resp.status_code == 200:
                self.ledger.observe(customer, "energy", resp.json(), "release")
            elif resp.json().get("type") != "reservation_expired" or time.monotonic() - asked < TTL:
                self.ledger.fail(f"release {rid}: {resp.status_code} {resp.text[:200]}")
            return
        amount = Decimal(quantity) * Decimal(self.rng.choice(["0.5", "0.8", "1"] if fate != "more" else ["1.5", "3"]))
        amount = amount.quantize(Decimal(1))
        key = {"Idempotency-Key": self.next_id("commit")}
        tries = 2 if self.rng.random() < 0.3 else 1
        for _ in range(tries):
            resp = await self.post(f"/v1/reservations/{rid}/commit", {"quantity": int(amount)}, headers=key)
            problem = resp.json().get("type") if resp.status_code != 200 else None
            if resp.status_code == 200:
                self.ledger.observe(customer, "energy", resp.json(), "commit")
                _, previous = self.ledger.committed.setdefault(rid, (customer, amount))
                if previous != amount:
                    self.ledger.fail(f"commit {rid} recorded twice: {previous} and {amount}")
            elif problem == "hard_limit":
                self.ledger.denials[customer, "energy"] += 1
            elif problem == "reservation_expired" and time.monotonic() - asked >= TTL:
                pass  # late, or the servers were slow to answer
            else:
                self.ledger.fail(f"commit {rid} ({fate}): {resp.status_code} {resp.text[:200]}")

    # -- events -------------------------------------------------------------------------------

    async def events(self) -> None:
        customer = self.rng.choice(CUSTOMERS)
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        batch = [{"specversion": "1.0", "id": self.next_id("ev"), "source": SOURCE, "type": "prompt",
                  "subject": f"{customer}-{self.rng.choice('ab')}", "time": now,
                  "data": {"tokens": self.rng.randint(1, 30)}} for _ in range(self.rng.randint(1, 12))]
        self.ledger.ops["event batch"] += 1
        sends = [batch]
        if self.rng.random() < 0.3:
            sends.append(batch)  # resent while the first is in flight
        results = await asyncio.gather(*(self.post("/v1/events", b) for b in sends))
        if self.rng.random() < 0.3:  # resent later, with new events beside the old
            more = [{**e, "id": self.next_id("ev")} for e in batch[: self.rng.randint(1, len(batch))]]
            sends.append(batch[:2] + more)
            results.append(await self.post("/v1/events", sends[-1]))
        for sent, resp in zip(sends, results, strict=True):
            if resp.status_code not in (200, 202):
                continue
            summary = resp.json()
            if summary["rejected"] or summary["accepted"] + summary["duplicates"] != len(sent):
                self.ledger.fail(f"event batch answered {summary} for {len(sent)} events")
                continue
            for e in sent:
                self.ledger.acked[e["id"]] = (customer, e["data"]["tokens"])

    # -- seats --------------------------------------------------------------------------------

    async def seat(self) -> None:
        customer = self.rng.choice(CUSTOMERS)
        item = f"item-{self.rng.randrange(SEAT_ITEMS)}"
        base = f"/v1/customers/{customer}/seats/seats"
        resp = await self.post(f"{base}/activate", {"item": item})
        self.ledger.ops["seat activate"] += 1
        if resp.status_code != 200:
            self.ledger.fail(f"activate {customer}/{item}: {resp.status_code} {resp.text[:200]}")
            return
        answer = resp.json()
        self.ledger.observe(customer, "seats", answer, "activate")
        if answer["decision"] == "deny":
            self.ledger.denials[customer, "seats"] += 1
            return
        for _ in range(self.rng.randint(0, 2)):
            await asyncio.sleep(self.rng.random() * TTL * 0.5)
            resp = await self.post(f"{base}/heartbeat", {"item": item})
            self.ledger.ops["seat heartbeat"] += 1
            if resp.status_code == 200:
                self.ledger.observe(customer, "seats", resp.json(), "heartbeat")
            elif resp.status_code not in (404, 409):  # another client released it meanwhile
                self.ledger.fail(f"heartbeat {customer}/{item}: {resp.status_code} {resp.text[:200]}")
        if self.rng.random() < 0.6:
            resp = await self.post(f"{base}/release", {"item": item})
            self.ledger.ops["seat release"] += 1
            if resp.status_code == 200:
                self.ledger.observe(customer, "seats", resp.json(), "release")
            elif resp.status_code not in (404, 409):
                self.ledger.fail(f"release {customer}/{item}: {resp.status_code} {resp.text[:200]}")

    # -- the run ------------------------------------------------------------------------------

    async def client_loop(self) -> None:
        actions: list[tuple[int, Callable[[], Awaitable[None]]]] = [
            (4, lambda: self.consume("calls", keyed=False)),
            (3, lambda: self.consume("calls", keyed=True)),
            (2, lambda: self.consume("energy", keyed=False)),
            (1, lambda: self.consume("energy", keyed=True)),
            (2, lambda: self.consume("tokens", keyed=False)),
            (3, self.reservation),
            (3, self.events),
            (3, self.seat),
        ]
        weights = [w for w, _ in actions]
        while time.monotonic() < self.deadline:
            await self.rng.choices([a for _, a in actions], weights)[0]()

    async def admin(self) -> None:
        """Grants, an override and a plan change, at fixed points of the run."""
        async def at(fraction: float) -> None:
            await asyncio.sleep(max(0.0, self.deadline - self.seconds * (1 - fraction) - time.monotonic()))

        async def grants() -> None:
            for customer in CUSTOMERS:
                resp = await self.post(f"/v1/customers/{customer}/entitlements/energy/grants", {"amount": 200})
                self.ledger.ops["grant"] += 1
                if resp.status_code != 201:
                    self.ledger.fail(f"grant {customer}: {resp.status_code} {resp.text[:200]}")

        await at(0.2)
        await grants()
        await at(0.35)
        resp = await self.client.put(f"{self.urls[-1]}/v1/customers/c0/entitlements/calls/override",
                                      json={"hard_limit": OVERRIDE})
        self.ledger.status(resp, "PUT override")
        self.ledger.ops["override"] += 1
        await at(0.5)
        await grants()
        await at(0.6)
        subscriptions = (await self.get("/v1/subscriptions", limit=100)).json()["items"]
        for s in subscriptions:
            resp = await self.post(f"/v1/subscriptions/{s['id']}/change-plan", {"plan": "plus"})
            self.ledger.ops["plan change"] += 1
            if resp.status_code != 200:
                self.ledger.fail(f"plan change {s['customer']}: {resp.status_code} {resp.text[:200]}")
        await at(0.8)
        await grants()


def setup(url: str, key: str) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        steps: list[tuple[str, Any]] = [
            ("/v1/meters", {"key": "tokens", "event_type": "prompt", "aggregation": "SUM",
                            "value_property": "$.tokens"}),
            ("/v1/features", {"key": "calls"}),
            ("/v1/features", {"key": "energy"}),
            ("/v1/features", {"key": "tokens", "meter": "tokens"}),
            ("/v1/features", {"key": "seats"}),
            ("/v1/plans", {"key": "team", "name": "Team", "entitlements": plan(TEAM)}),
            ("/v1/plans/team/publish", None),
            ("/v1/plans", {"key": "plus", "name": "Plus", "entitlements": plan(PLUS)}),
            ("/v1/plans/plus/publish", None),
        ]
        for c in CUSTOMERS:
            steps.append(("/v1/customers", {"key": c, "name": c, "subject_keys": [f"{c}-a", f"{c}-b"]}))
            steps.append(("/v1/subscriptions", {"customer": c, "plan": "team"}))
        for path, body in steps:
            resp = client.post(path, json=body)
            if resp.status_code not in (200, 201):
                raise RuntimeError(f"setup {path}: {resp.status_code} {resp.text}")


async def verify(traffic: Traffic, database_url: str) -> list[str]:
    """Settle every hold and lease, then compare the servers' numbers with the ledger."""
    ledger, done = traffic.ledger, []
    await asyncio.sleep(TTL + 1.0)  # every hold and lease the run left has expired
    for c in CUSTOMERS:  # a plain check gives the expired holds back (the worker's scan would too)
        for f in ("calls", "energy", "tokens"):
            resp = await traffic.post("/v1/check", {"customer": c, "feature": f, "quantity": 1})
            answer = resp.json()
            ledger.observe(c, f, answer, "final check")
            if answer["decision"] == "deny":
                ledger.denials[c, f] += 1
    event_tokens: dict[str, int] = defaultdict(int)
    for customer, tokens in ledger.acked.values():
        event_tokens[customer] += tokens
    committed: dict[str, Decimal] = defaultdict(Decimal)
    for rid, (customer, amount) in ledger.committed.items():
        committed[customer] += amount
        got = (await traffic.get(f"/v1/reservations/{rid}")).json()
        if got["status"] != "committed" or Decimal(str(got["committed_quantity"])) != amount:
            ledger.fail(f"reservation {rid} committed {amount} but reads {got}")
    done.append(f"{len(ledger.committed)} commits read back as answered")
    for c in CUSTOMERS:
        states = {f: (await traffic.get(f"/v1/customers/{c}/entitlements/{f}")).json()
                  for f in ("calls", "energy", "tokens", "seats")}
        for f, state in states.items():
            if state.get("reserved"):
                ledger.fail(f"{c}/{f}: reserved {state['reserved']} after every hold ended")
        expected = {
            "calls": ledger.allowed[c, "calls"],
            "energy": ledger.allowed[c, "energy"] + committed[c],
            "tokens": ledger.allowed[c, "tokens"] + event_tokens[c],
            "seats": Decimal(0),
        }
        for f, want in expected.items():
            got = Decimal(str(states[f]["usage"]))
            if got != want:
                ledger.fail(f"{c}/{f}: usage {got}, the answers add up to {want}")
        query = (await traffic.get("/v1/meters/tokens/query", customer=c)).json()
        metered = sum(Decimal(str(row["value"] or 0)) for row in query["data"])
        if metered != event_tokens[c]:
            ledger.fail(f"{c}: meter says {metered} tokens, acknowledged events {event_tokens[c]}")
        holders = (await traffic.get(f"/v1/customers/{c}/seats/seats")).json()["items"]
        if holders:
            ledger.fail(f"{c}: seats still held after every lease expired: {holders}")
        for f in ("calls", "energy", "tokens", "seats"):
            refused = await count_denials(traffic, c, f)
            if refused != ledger.denials[c, f]:
                ledger.fail(f"{c}/{f}: {refused} denials listed, {ledger.denials[c, f]} answered")
    done.append("usage == allowed consumes + commits + acknowledged events, per customer and feature")
    done.append("meter query == acknowledged event tokens; no seat held; reserved 0; denials == refusals")
    for problem in await database_checks(database_url, ledger):
        ledger.fail(problem)
    done.append("database: no open hold, no live lease, reserved 0 on every counter, each event stored once")
    return done


async def count_denials(traffic: Traffic, customer: str, feature: str) -> int:
    count, cursor = 0, None
    while True:
        params: dict[str, Any] = {"customer": customer, "feature": feature, "limit": 1000}
        if cursor:
            params["cursor"] = cursor
        page = (await traffic.get("/v1/denials", **params)).json()
        count += len(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return count


async def database_checks(database_url: str, ledger: Ledger) -> list[str]:
    queries = {
        "open": "SELECT count(*) FROM reservations WHERE status = 'open'",
        "reserved": "SELECT count(*) FROM entitlement_usage WHERE reserved <> 0",
        "events": f"SELECT count(*), count(DISTINCT event_id) FROM events WHERE source = '{SOURCE}'",
        "leases": "SELECT expires_at FROM seat_leases WHERE released_at IS NULL",
    }
    if database_url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as conn:
            rows = {k: conn.execute(q).fetchall() for k, q in queries.items()}
    else:
        conn = await asyncpg.connect(database_url)
        try:
            rows = {k: [tuple(r) for r in await conn.fetch(q)] for k, q in queries.items()}
        finally:
            await conn.close()
    problems = []
    if rows["open"][0][0]:
        problems.append(f"database: {rows['open'][0][0]} reservations still open after their expiry")
    if rows["reserved"][0][0]:
        problems.append(f"database: {rows['reserved'][0][0]} counters still hold reserved units")
    stored, distinct = rows["events"][0]
    if stored != distinct or stored != len(ledger.acked):
        problems.append(f"database: {stored} events stored ({distinct} ids), {len(ledger.acked)} acknowledged")
    now = datetime.now(UTC)
    live = [e for (e,) in rows["leases"] if e is None or _aware(e) > now]
    if live:
        problems.append(f"database: {len(live)} seat leases live after every lease expired")
    return problems


def _aware(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@contextmanager
def servers(database_url: str, ports: list[int], workers: int) -> Iterator[tuple[list[str], str]]:
    """`allotment serve` on each port, one database; yields their URLs and an admin key."""
    env = {**os.environ, "DATABASE_URL": database_url}
    subprocess.run([BIN / "allotment", "migrate"], env=env, check=True, capture_output=True)
    key = subprocess.run([BIN / "allotment", "keys", "create", "--scope", "admin", "--name", "races"],
                         env=env, check=True, capture_output=True, text=True).stdout.strip()
    logs = Path(tempfile.mkdtemp(prefix="allotment-races-"))
    procs = [subprocess.Popen([BIN / "allotment", "serve", "--port", str(p), "--workers", str(workers),
                               "--no-migrate"], env=env, stdout=(logs / f"serve-{p}.log").open("wb"),
                              stderr=subprocess.STDOUT)
             for p in ports]
    print(f"server logs in {logs}")
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for url, proc in zip(urls, procs, strict=True):
            deadline = time.monotonic() + 120
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"server did not start; its log is in {logs}")
                time.sleep(0.1)
        yield urls, key
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


async def run(urls: list[str], key: str, database_url: str, args: argparse.Namespace) -> Ledger:
    ledger = Ledger()
    traffic = Traffic(urls, key, ledger, random.Random(args.seed), args.seconds)
    try:
        started = time.monotonic()
        await asyncio.gather(traffic.admin(), *(traffic.client_loop() for _ in range(args.clients)))
        elapsed = time.monotonic() - started
        checked = await verify(traffic, database_url)
    finally:
        await traffic.client.aclose()
    requests = sum(ledger.statuses.values())
    print(f"{requests} requests in {elapsed:.1f} s over {len(urls)} server(s); statuses {dict(ledger.statuses)}")
    print("operations: " + ", ".join(f"{k} {v}" for k, v in sorted(ledger.ops.items())))
    refused: Counter[str] = Counter()
    for (_, feature), count in ledger.denials.items():
        refused[feature] += count
    print("refused (the hard limits were reached): " + ", ".join(f"{f} {n}" for f, n in sorted(refused.items())))
    print(f"{ledger.answers} answers checked against their hard limits; "
          f"{len(ledger.acked)} events acknowledged; {len(ledger.keyed)} keyed consumes")
    for line in checked:
        print(f"checked: {line}")
    return ledger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--clients", type=int, default=48)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--processes", type=int, default=4, help="PostgreSQL: serve processes")
    parser.add_argument("--base-port", type=int, default=0, help="first port (default: free ones)")
    parser.add_argument("--database-url", help="an empty database to use (default: a fresh one, dropped after)")
    args = parser.parse_args()
    count, workers = (args.processes, 1) if args.backend == "postgresql" else (1, 2)
    ports = [args.base_port + i if args.base_port else free_port() for i in range(count)]
    database_url = args.database_url or fresh_database(args.backend)
    try:
        with servers(database_url, ports, workers) as (urls, key):
            setup(urls[0], key)
            ledger = asyncio.run(run(urls, key, database_url, args))
    finally:
        if not args.database_url:
            drop_database(database_url)
    for problem in ledger.violations:
        print(f"VIOLATION: {problem}")
    print("all invariants held" if not ledger.violations else f"{len(ledger.violations)} violation(s)")
    sys.exit(1 if ledger.violations else 0)


if __name__ == "__main__":
    main()
