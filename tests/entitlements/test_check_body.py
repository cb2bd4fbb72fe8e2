"""What `POST /v1/check` does with a body no other endpoint would take: too large, or not JSON."""

from __future__ import annotations

import pytest

from allotment.config import Settings
from tests.api.native import SPEC
from tests.entitlements.catalogue import customer, feature, ok

LIMIT = 4096


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, key_cache_seconds=0.0, max_body_bytes=LIMIT)


async def _entitled(c):  # type: ignore[no-untyped-def]
    await feature(c, "api-calls")
    await customer(c, "acme")
    body = {"feature": "api-calls", "kind": "metered", "included": 10}
    await ok(await c.post("/v1/customers/acme/entitlements", json=body), 201)


def _problem(resp, status, field):  # type: ignore[no-untyped-def]
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert field in [e["field"] for e in resp.json().get("errors", [])], resp.json()
    return resp.json()


async def test_a_check_body_larger_than_the_body_limit_is_413(tenant):
    """A check body past the server's body limit is refused as every other endpoint refuses it."""
    await _entitled(tenant.client)
    body = b'{"customer": "acme", "feature": "api-calls", "idempotency_key": "' + b"k" * LIMIT + b'"}'
    resp = await tenant.client.post("/v1/check", content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 413, resp.text
    assert resp.json()["type"] == "payload_too_large"


async def test_a_check_body_sent_in_pieces_past_the_limit_is_413(tenant):
    """The limit holds for a body streamed without a declared length, too."""
    await _entitled(tenant.client)

    async def pieces():  # type: ignore[no-untyped-def]
        yield b'{"customer": "acme", "feature": "api-calls", "idempotency_key": "'
        for _ in range(4):
            yield b"k" * (LIMIT // 2)
        yield b'"}'

    resp = await tenant.client.post("/v1/check", content=pieces(), headers={"Content-Type": "application/json"})
    assert resp.status_code == 413, resp.text
    assert resp.json()["type"] == "payload_too_large"


async def test_a_check_body_within_the_limit_is_answered(tenant):
    """A body of ordinary size is unaffected by the limit."""
    await _entitled(tenant.client)
    resp = await tenant.client.post("/v1/check", json={"customer": "acme", "feature": "api-calls", "quantity": 3})
    assert (await ok(resp))["decision"] == "allow"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_a_check_body_declared_as_anything_but_json_is_415(tenant, content_type):
    """As on every other endpoint, a body declared as another media type is a 415 naming Content-Type."""
    await _entitled(tenant.client)
    body = b'{"customer": "acme", "feature": "api-calls", "quantity": 1, "consume": true}'
    resp = await tenant.client.post("/v1/check", content=body, headers={"Content-Type": content_type})
    assert _problem(resp, 415, "Content-Type")["type"] == "unsupported_media_type"
    state = await ok(await tenant.client.get("/v1/customers/acme/entitlements/api-calls"))
    assert state["usage"] == 0


async def test_a_check_body_declared_as_json_with_a_charset_is_answered(tenant):
    """`application/json; charset=utf-8` is JSON."""
    await _entitled(tenant.client)
    body = b'{"customer": "acme", "feature": "api-calls"}'
    resp = await tenant.client.post("/v1/check", content=body,
                                    headers={"Content-Type": "application/json; charset=utf-8"})
    assert (await ok(resp))["decision"] == "allow"


def test_the_check_documents_its_415():
    """The OpenAPI document lists the 415 the check may answer."""
    assert "415" in SPEC["paths"]["/v1/check"]["post"]["responses"]
