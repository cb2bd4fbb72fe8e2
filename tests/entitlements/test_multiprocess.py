"""Hard limits hold across server processes: 4 workers on PostgreSQL, 64 concurrent clients.

Consumption and seat activation are decided by one conditional statement in the database,
so however the requests spread over processes, exactly `hard` of them succeed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import run_blocking, truncate
from tests.servers import Server

pytestmark = pytest.mark.slow

CLIENTS = 64


@pytest.fixture
def four_workers(postgres_database: str, tmp_path: Path) -> Iterator[Server]:
    """Several server processes share one database in production: PostgreSQL only."""
    run_blocking(truncate(postgres_database))
    running = Server(postgres_database, tmp_path, workers=4)
    running.start()
    yield running
    running.stop()


def _setup(client: httpx.Client, entitlements: list[dict[str, Any]]) -> None:
    for path, body in [
        ("/v1/features", {"key": "api-calls"}),
        ("/v1/features", {"key": "seats"}),
        ("/v1/plans", {"key": "team", "name": "Team", "entitlements": entitlements}),
        ("/v1/plans/team/publish", None),
        ("/v1/customers", {"key": "acme", "name": "Acme"}),
        ("/v1/subscriptions", {"customer": "acme", "plan": "team"}),
    ]:
        resp = client.post(path, json=body)
        assert resp.status_code in (200, 201), resp.text


async def _storm(url: str, key: str, paths_and_bodies: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, limits=limits,
                                 timeout=60) as client:
        async def one(path: str, body: dict[str, Any]) -> dict[str, Any]:
            resp = await client.post(path, json=body)
            assert resp.status_code == 200, resp.text
            return resp.json()  # type: ignore[no-any-return]

        return await asyncio.gather(*(one(p, b) for p, b in paths_and_bodies))


def test_concurrent_consumers_on_four_processes_never_pass_the_hard_limit(four_workers: Server) -> None:
    key = four_workers.first_admin_key()
    with httpx.Client(base_url=four_workers.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        _setup(client, [
            {"feature": "api-calls", "kind": "metered", "usage_period": "MONTH", "included": 30,
             "soft_limit": 30, "hard_limit": 50},
            {"feature": "seats", "kind": "seats", "included": 10, "hard_limit": 12},
        ])
        consume = {"customer": "acme", "feature": "api-calls", "quantity": 1, "consume": True}
        answers = asyncio.run(_storm(four_workers.url, key, [("/v1/check", consume)] * (CLIENTS * 2)))
        decisions = [a["decision"] for a in answers]
        assert decisions.count("allow") == 30 and decisions.count("allow_overdraft") == 20
        assert decisions.count("deny") == CLIENTS * 2 - 50
        state = client.get("/v1/customers/acme/entitlements/api-calls").json()
        assert state["usage"] == 50

        seat_path = "/v1/customers/acme/seats/seats/activate"
        answers = asyncio.run(_storm(four_workers.url, key, [(seat_path, {"item": f"device-{i}"}) for i in range(CLIENTS)]))
        taken = [a for a in answers if a["decision"] != "deny"]
        assert len(taken) == 12
        assert client.get("/v1/customers/acme/entitlements/seats").json()["usage"] == 12
