"""Events built and serialised by the CloudEvents Python SDK are ingested unchanged."""

from __future__ import annotations

import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from tests.helpers import meter


def sdk_event(tokens: int, **attributes: str) -> CloudEvent:
    return CloudEvent({"type": "prompt", "source": "sdk", "subject": "user-1", **attributes}, {"tokens": tokens})


@pytest.mark.parametrize("mode", [to_structured, to_binary], ids=["structured", "binary"])
async def test_sdk_event_is_counted_once(tenant, mode):
    await tenant.client.post("/v1/meters", json=meter())
    headers, body = mode(sdk_event(7, id="sdk-1"))
    for _ in range(2):
        resp = await tenant.client.post("/v1/events", content=body, headers=headers)
        assert resp.status_code == 200, resp.text
    assert resp.json()["duplicates"] == 1
    query = await tenant.client.get("/v1/meters/tokens/query")
    assert query.json()["data"][0]["value"] == 7


async def test_binary_mode_without_subject_names_the_header_field(tenant):
    headers, body = to_binary(CloudEvent({"type": "prompt", "source": "sdk"}, {"tokens": 1}))
    resp = await tenant.client.post("/v1/events", content=body, headers=headers)
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "[0].subject"
