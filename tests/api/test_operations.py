"""Operations endpoints: liveness, readiness against the migrations, Prometheus metrics."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import Tenant
from tests.helpers import event, meter

from allotment.api.app import create_app
from allotment.config import Settings
from allotment.db import Database
from allotment.migrate import head_revision

INGEST_SERIES = (
    "allotment_events_accepted_total",
    "allotment_events_duplicate_total",
    "allotment_events_rejected_total",
    "allotment_ingest_seconds_count",
)


async def scrape(client: httpx.AsyncClient) -> dict[str, float]:
    resp = await client.get("/metrics")
    assert resp.status_code == 200
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(resp.text)
        for sample in family.samples
        if not sample.labels
    }


async def test_healthz_answers_ok(anon: httpx.AsyncClient) -> None:
    """/healthz is 200 without credentials."""
    resp = await anon.get("/healthz")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}


async def test_readyz_names_the_migration_when_migrated(anon: httpx.AsyncClient) -> None:
    """/readyz is 200 and reports the schema's revision once the database is migrated."""
    resp = await anon.get("/readyz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ready", "migration": head_revision()}


async def test_readyz_is_503_on_a_database_that_is_not_migrated(tmp_path: Path) -> None:
    """An app pointed at an empty database is alive but not ready."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}")
    db = Database(settings)
    app = create_app(settings, db=db)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            assert (await client.get("/healthz")).status_code == 200
            resp = await client.get("/readyz")
    finally:
        await db.dispose()
    assert resp.status_code == 503
    assert resp.json() == {"status": "migrations_pending", "current": None, "head": head_revision()}


async def test_metrics_expose_the_ingest_series(anon: httpx.AsyncClient) -> None:
    """/metrics is Prometheus text with the ingest counters and latency histogram."""
    series = await scrape(anon)
    assert set(INGEST_SERIES) <= set(series)
    assert "allotment_ingest_seconds_bucket" in (await anon.get("/metrics")).text


async def test_ingest_moves_the_counters(tenant: Tenant, anon: httpx.AsyncClient) -> None:
    """A batch with accepted, duplicate and rejected events moves each counter by its share."""
    await tenant.client.post("/v1/meters", json=meter())
    before = await scrape(anon)
    batch = [event(id="m1", tokens=1), event(id="m1", tokens=1), event(id="m2", tokens=2), event(tokens="x")]
    resp = await tenant.client.post("/v1/events", json=batch)
    assert resp.status_code == 200, resp.text
    after = await scrape(anon)
    moved = {name: after[name] - before[name] for name in INGEST_SERIES}
    assert moved == {
        "allotment_events_accepted_total": 2,
        "allotment_events_duplicate_total": 1,
        "allotment_events_rejected_total": 1,
        "allotment_ingest_seconds_count": 1,
    }


UNREACHABLE = {
    "postgresql": "postgresql://postgres@127.0.0.1:1/none",  # nothing listens on port 1
    "sqlite": "sqlite:////nonexistent-folder/allotment.db",
}


@pytest.mark.parametrize("kind", sorted(UNREACHABLE))
@pytest.mark.parametrize("path", ["/v1/customers", "/api/v1/meters", "/lago/api/v1/customers"])
async def test_requests_while_the_database_is_unreachable_are_503(kind: str, path: str) -> None:
    """With the database gone, requests answer 503 with Retry-After, not an internal error."""
    settings = Settings(database_url=UNREACHABLE[kind], key_cache_seconds=0.0, delivery_enabled=False)
    db = Database(settings)
    app = create_app(settings, db=db)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            resp = await client.get(path, headers={"Authorization": "Bearer alm_whatever"})
            ready = await client.get("/readyz")
    finally:
        await db.dispose()
    assert resp.status_code == 503, resp.text
    assert "Retry-After" in resp.headers
    assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
