"""Keys: missing, wrong, revoked and under-scoped keys are refused with a clear answer."""

from __future__ import annotations

from tests.helpers import event


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
