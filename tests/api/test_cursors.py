"""A list's cursor pages that list only: another list's cursor, or a garbled one, is a 400."""

from __future__ import annotations

import base64

import pytest
from tests.api.test_bad_input import assert_problem

# Every list that pages with a cursor, but the customers list whose cursor the tests hand them.
OTHER_LISTS = [
    "/v1/meters",
    "/v1/features",
    "/v1/plans",
    "/v1/subscriptions",
    "/v1/denials",
    "/v1/events",
    "/v1/events/rejected",
    "/v1/reservations",
    "/v1/notification-rules",
    "/v1/notifications",
    "/v1/webhook-endpoints",
    "/v1/api-keys",
    "/v1/audit-log",
    "/v1/reports/upsell",
    "/v1/reports/overdraft",
    "/v1/customers/a/entitlements",
    "/v1/customers/a/upsell",
    "/v1/customers/a/seats/seats",
    "/api/v2/events",
]


def _raw(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


async def _customers_cursor(tenant) -> str:  # type: ignore[no-untyped-def]
    for key in ("a", "b"):
        assert (await tenant.client.post("/v1/customers", json={"key": key, "name": key})).status_code == 201
    cursor: str = (await tenant.client.get("/v1/customers", params={"limit": 1})).json()["next_cursor"]
    assert cursor
    return cursor


@pytest.mark.parametrize("path", OTHER_LISTS)
async def test_a_cursor_of_the_customers_list_is_refused_by_another_list(tenant, path):
    """Used on another list, a customers cursor is a 400 naming `cursor`, not a silent jump."""
    resp = await tenant.client.get(path, params={"cursor": await _customers_cursor(tenant)})
    assert_problem(resp, 400, "cursor")
    assert "does not belong to this list" in resp.json()["detail"]


async def test_a_cursor_pages_the_list_that_returned_it(tenant):
    """The customers cursor leads to the customers after the first page."""
    cursor = await _customers_cursor(tenant)
    rest = (await tenant.client.get("/v1/customers", params={"limit": 1, "cursor": cursor})).json()
    assert [c["key"] for c in rest["items"]] == ["b"]


async def test_a_cursor_handed_out_before_cursors_named_their_list_still_pages(tenant):
    """Cursors already in clients' hands, which carry no list, keep their meaning."""
    await _customers_cursor(tenant)
    first = (await tenant.client.get("/v1/customers", params={"limit": 1})).json()["items"][0]
    resp = await tenant.client.get("/v1/customers", params={"cursor": _raw(f"after:{first['id']}")})
    assert [c["key"] for c in resp.json()["items"]] == ["b"]


@pytest.mark.parametrize("path", ["/v1/events", "/v1/events/rejected", "/v1/notifications", "/api/v2/events"])
async def test_a_cursor_with_a_garbled_position_is_refused(tenant, path):
    """A cursor that decodes but whose position is not one this list hands out is a 400, not page one."""
    assert_problem(await tenant.client.get(path, params={"cursor": _raw("after:not-a-position")}), 400, "cursor")


@pytest.mark.parametrize("path", ["/v1/customers", "/v1/events", "/api/v2/events"])
async def test_a_cursor_that_is_not_base64_is_refused(tenant, path):
    """Garbage in `cursor` is a 400 naming it, on every list."""
    assert_problem(await tenant.client.get(path, params={"cursor": "%%%"}), 400, "cursor")
