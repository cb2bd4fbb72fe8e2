"""Keys: missing, wrong, revoked and under-scoped keys are refused with a clear answer."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import update
from tests.conftest import make_tenant
from tests.helpers import event

from allotment.api.app import create_app
from allotment.config import Settings
from allotment.db import Database
from allotment.tenancy.models import ApiKey
from allotment.types import utcnow


async def test_missing_key_is_401(anon):
    resp = await anon.get("/v1/meters")
    assert resp.status_code == 401
    assert "Authorization" in resp.json()["detail"]


async def test_wrong_key_is_401(anon):
    resp = await anon.get("/v1/meters", headers={"Authorization": "Bearer alm_nope"})
    assert resp.status_code == 401


async def test_revoked_key_is_401(tenant, db):
    read = await tenant.key("read", db)
    keys = (await tenant.client.get("/v1/api-keys")).json()["items"]
    read_id = next(k["id"] for k in keys if k["scope"] == "read")
    assert (await tenant.client.get("/v1/meters", headers={"Authorization": f"Bearer {read}"})).status_code == 200
    await tenant.client.post(f"/v1/api-keys/{read_id}/revoke")
    resp = await tenant.client.get("/v1/meters", headers={"Authorization": f"Bearer {read}"})
    assert resp.status_code == 401 and "revoked" in resp.json()["detail"]


async def test_read_key_cannot_write_and_ingest_key_cannot_read(tenant, db):
    read = {"Authorization": f"Bearer {await tenant.key('read', db)}"}
    ingest = {"Authorization": f"Bearer {await tenant.key('ingest', db)}"}
    assert (await tenant.client.post("/v1/events", json=[event()], headers=read)).status_code == 403
    assert (await tenant.client.post("/v1/events", json=[event()], headers=ingest)).status_code == 200
    resp = await tenant.client.get("/v1/meters", headers=ingest)
    assert resp.status_code == 403 and "'read'" in resp.json()["detail"]


async def test_created_key_secret_is_shown_once(tenant):
    created = (await tenant.client.post("/v1/api-keys", json={"scope": "ingest", "name": "collector"})).json()
    assert created["secret"].startswith("alm_")
    listed = (await tenant.client.get("/v1/api-keys")).json()["items"]
    assert all("secret" not in k for k in listed)
    assert any(created["secret"].startswith(k["hint"]) for k in listed)


async def test_a_key_request_with_a_field_the_api_does_not_know_is_refused(tenant):
    """An expiry the API does not support must not yield a key that never expires unnoticed."""
    resp = await tenant.client.post("/v1/api-keys", json={"scope": "read", "expires_at": "2027-01-01T00:00:00Z"})
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "expires_at"


async def test_a_remembered_key_is_checked_again_in_the_background_before_it_lapses(database_url):
    """Past half its cache time a key is still answered at once (nobody waits on a lookup)
    while it is looked up again, so a revocation made elsewhere shows before the time is up."""
    cache_seconds = 6.0
    settings = Settings(database_url=database_url, key_cache_seconds=cache_seconds)
    db = Database(settings)
    tenant = await make_tenant(db, create_app(settings, db=db), "acme-vendor")
    try:
        read = {"Authorization": f"Bearer {await tenant.key('read', db)}"}
        assert (await tenant.client.get("/v1/meters", headers=read)).status_code == 200
        remembered_at = time.monotonic()
        async with db.transaction() as session:  # as another process would: this one is not told
            await session.execute(update(ApiKey).where(ApiKey.scope == "read").values(revoked_at=utcnow()))
        assert (await tenant.client.get("/v1/meters", headers=read)).status_code == 200
        await asyncio.sleep(cache_seconds / 2 - (time.monotonic() - remembered_at) + 0.05)
        # Due for renewal: still answered from memory, and the lookup starts.
        assert (await tenant.client.get("/v1/meters", headers=read)).status_code == 200
        while (resp := await tenant.client.get("/v1/meters", headers=read)).status_code == 200:
            await asyncio.sleep(0.02)
        assert resp.status_code == 401 and "revoked" in resp.json()["detail"]
        # Well before the key would have lapsed and been looked up anyway.
        assert time.monotonic() - remembered_at < cache_seconds - 1
    finally:
        await tenant.client.aclose()
        await db.dispose()


async def test_keys_are_listed_in_pages_with_a_cursor(tenant):
    """`limit` and `cursor` page through every key in a stable order, as other lists do."""
    for i in range(4):
        await tenant.client.post("/v1/api-keys", json={"scope": "read", "name": f"k{i}"})
    first = (await tenant.client.get("/v1/api-keys", params={"limit": 3})).json()
    rest = (await tenant.client.get("/v1/api-keys", params={"limit": 3, "cursor": first["next_cursor"]})).json()
    every = (await tenant.client.get("/v1/api-keys")).json()
    assert len(first["items"]) == 3 and rest["next_cursor"] is None and every["next_cursor"] is None
    assert [k["id"] for k in first["items"] + rest["items"]] == [k["id"] for k in every["items"]]
    assert [k["id"] for k in every["items"]] == sorted(k["id"] for k in every["items"]) and len(every["items"]) == 5


async def test_a_key_list_page_out_of_bounds_or_a_bad_cursor_is_refused(tenant):
    for limit in (0, 1001):
        resp = await tenant.client.get("/v1/api-keys", params={"limit": limit})
        assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "limit"
    resp = await tenant.client.get("/v1/api-keys", params={"cursor": "nope"})
    assert resp.status_code == 400 and resp.json()["errors"][0]["field"] == "cursor"
