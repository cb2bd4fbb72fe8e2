"""Webhook endpoints: create, read, change, delete, rotate, and what bad input gets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from allotment.types import utcnow
from tests.notifications.conftest import drain, endpoint, ok

URL = "https://hooks.example.com/allotment"


async def test_created_endpoint_shows_a_generated_secret_once(tenant):
    """Create answers with a usable `whsec_` secret; reads never show it."""
    created = await endpoint(tenant, URL, description="billing team")
    assert created["id"].startswith("whe_") and created["enabled"] is True
    assert created["secret"].startswith("whsec_")
    Webhook(created["secret"])  # decodes as a Standard Webhooks secret
    read = await ok(await tenant.client.get(f"/v1/webhook-endpoints/{created['id']}"))
    assert "secret" not in read and read["description"] == "billing team"


async def test_given_secret_is_kept(tenant):
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    assert (await endpoint(tenant, URL, secret=secret))["secret"] == secret


async def test_endpoints_list_with_cursor(tenant):
    """Lists are `{items, next_cursor}` in a stable order."""
    ids = [(await endpoint(tenant, f"{URL}/{i}"))["id"] for i in range(3)]
    first = await ok(await tenant.client.get("/v1/webhook-endpoints", params={"limit": 2}))
    rest = await ok(await tenant.client.get("/v1/webhook-endpoints", params={"cursor": first["next_cursor"]}))
    assert [e["id"] for e in first["items"] + rest["items"]] == sorted(ids)
    assert rest["next_cursor"] is None


async def test_endpoint_update_changes_url_types_and_enabled(tenant):
    created = await endpoint(tenant, URL)
    path = f"/v1/webhook-endpoints/{created['id']}"
    body = {"url": "http://10.0.0.5:8080/in", "event_types": ["entitlement.usage_denied"], "enabled": False}
    updated = await ok(await tenant.client.patch(path, json=body))
    assert updated["url"] == body["url"] and updated["event_types"] == ["entitlement.usage_denied"]
    assert updated["enabled"] is False and updated["disabled_reason"] == "disabled by an operator"
    enabled = await ok(await tenant.client.patch(path, json={"enabled": True}))
    assert enabled["enabled"] is True and enabled["disabled_reason"] is None


async def test_deleted_endpoint_is_gone(tenant):
    created = await endpoint(tenant, URL)
    path = f"/v1/webhook-endpoints/{created['id']}"
    assert (await tenant.client.delete(path)).status_code == 204
    assert (await tenant.client.get(path)).status_code == 404
    assert (await ok(await tenant.client.get("/v1/webhook-endpoints")))["items"] == []


async def test_rotated_secret_replaces_the_old_one_which_signs_for_a_day_more(tenant):
    created = await endpoint(tenant, URL)
    before = datetime.now(UTC)
    rotated = await ok(await tenant.client.post(f"/v1/webhook-endpoints/{created['id']}/rotate-secret"))
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]
    until = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    assert before + timedelta(hours=24) <= until <= datetime.now(UTC) + timedelta(hours=24)


async def test_a_retried_rotation_rotates_once(db, tenant, receiver, sender):
    """The retry answers with the secret the first rotation made, and that one signs from then on."""
    hook = await endpoint(tenant, receiver.url)
    path, headers = f"/v1/webhook-endpoints/{hook['id']}/rotate-secret", {"Idempotency-Key": "rotate-1"}
    first = await ok(await tenant.client.post(path, json={"keep_previous_seconds": 0}, headers=headers))
    again = await tenant.client.post(path, json={"keep_previous_seconds": 0}, headers=headers)
    assert (again.json(), again.headers["idempotent-replayed"]) == (first, "true")
    await ok(await tenant.client.post(f"/v1/webhook-endpoints/{hook['id']}/test"), 202)
    await drain(db, sender, at=utcnow())
    [got] = receiver.received
    assert Webhook(first["secret"]).verify(got.body, got.headers)["type"] == "webhook.test"
    other = await tenant.client.post(path, json={"keep_previous_seconds": 60}, headers=headers)
    assert (other.status_code, other.json()["type"]) == (409, "idempotency_conflict")


async def test_a_retried_test_ping_queues_one_notification(tenant):
    hook = await endpoint(tenant, URL)
    path, headers = f"/v1/webhook-endpoints/{hook['id']}/test", {"Idempotency-Key": "ping-1"}
    first = await tenant.client.post(path, headers=headers)
    again = await tenant.client.post(path, headers=headers)
    assert (first.status_code, again.status_code, again.json()) == (202, 202, first.json())
    assert again.headers["idempotent-replayed"] == "true"
    sent = await ok(await tenant.client.get("/v1/notifications", params={"type": "webhook.test"}))
    assert [n["id"] for n in sent["items"]] == [first.json()["notification_id"]]


@pytest.mark.parametrize("keep", [-1, 7 * 86400 + 1, "soon", 1.5])
async def test_rotation_overlap_out_of_range_is_a_422_naming_it(tenant, keep):
    created = await endpoint(tenant, URL)
    resp = await tenant.client.post(f"/v1/webhook-endpoints/{created['id']}/rotate-secret",
                                    json={"keep_previous_seconds": keep})
    assert resp.status_code == 422, resp.text
    assert [e["field"] for e in resp.json()["errors"]] == ["keep_previous_seconds"]


@pytest.mark.parametrize("url", ["ftp://files.example.com/x", "mailto:ops@example.com", "example.com/hook",
                                 "http://", "javascript:alert(1)", ""])
async def test_endpoint_url_must_be_http_or_https(tenant, url):
    """A URL that could never receive a POST is a 422 naming `url`."""
    resp = await tenant.client.post("/v1/webhook-endpoints", json={"url": url})
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in resp.json()["errors"]] == ["url"]


async def test_unknown_event_type_is_refused_naming_the_field(tenant):
    body = {"url": URL, "event_types": ["entitlement.usage_denied", "entitlement.exploded"]}
    resp = await tenant.client.post("/v1/webhook-endpoints", json=body)
    assert resp.status_code == 422, resp.text
    error = resp.json()["errors"][0]
    assert error["field"] == "event_types[1]" and "entitlement.exploded" in error["message"]


async def test_unknown_event_type_is_refused_on_update(tenant):
    created = await endpoint(tenant, URL)
    resp = await tenant.client.patch(f"/v1/webhook-endpoints/{created['id']}", json={"event_types": ["nope"]})
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "event_types[0]"


@pytest.mark.parametrize("secret", ["plain-text", "whsec_not base64!", "whsec_c2hvcnQ="])
async def test_unusable_secret_is_refused(tenant, secret):
    resp = await tenant.client.post("/v1/webhook-endpoints", json={"url": URL, "secret": secret})
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "secret"


async def test_endpoints_need_an_admin_key_to_change(tenant, db):
    reader = await tenant.key("read", db)
    headers = {"Authorization": f"Bearer {reader}"}
    resp = await tenant.client.post("/v1/webhook-endpoints", json={"url": URL}, headers=headers)
    assert resp.status_code == 403
    assert (await tenant.client.get("/v1/webhook-endpoints", headers=headers)).status_code == 200


async def test_custom_header_values_are_shown_only_to_admin_keys(tenant, db):
    """A read key sees which headers an endpoint sends, never their values (they may be credentials)."""
    created = await endpoint(tenant, URL, headers={"Authorization": "Bearer s3cret", "X-Team": "billing"})
    assert created["headers"] == {"Authorization": "Bearer s3cret", "X-Team": "billing"}
    path = f"/v1/webhook-endpoints/{created['id']}"
    reader = {"Authorization": f"Bearer {await tenant.key('read', db)}"}
    redacted = {"Authorization": "<redacted>", "X-Team": "<redacted>"}
    assert (await ok(await tenant.client.get(path, headers=reader)))["headers"] == redacted
    [listed] = (await ok(await tenant.client.get("/v1/webhook-endpoints", headers=reader)))["items"]
    assert listed["headers"] == redacted and "s3cret" not in str(listed)
    assert (await ok(await tenant.client.get(path)))["headers"] == created["headers"]
    [mine] = (await ok(await tenant.client.get("/v1/webhook-endpoints")))["items"]
    assert mine["headers"] == created["headers"]


async def test_other_tenant_cannot_see_or_change_endpoints(tenant, other_tenant):
    """Another tenant's endpoint answers 404 to every call, as if it did not exist."""
    created = await endpoint(tenant, URL)
    path = f"/v1/webhook-endpoints/{created['id']}"
    b = other_tenant.client
    assert (await b.get(path)).status_code == 404
    assert (await b.patch(path, json={"url": "http://evil.example.com"})).status_code == 404
    assert (await b.delete(path)).status_code == 404
    for action in ("rotate-secret", "test"):
        assert (await b.post(f"{path}/{action}")).status_code == 404
    assert (await b.get(f"{path}/deliveries")).status_code == 404
    assert (await ok(await b.get("/v1/webhook-endpoints")))["items"] == []
    assert (await ok(await tenant.client.get(path)))["url"] == URL
