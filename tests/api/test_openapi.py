"""The OpenAPI document is the contract: it is served, and it describes the native API."""

from __future__ import annotations

import re


async def test_openapi_document_lists_the_native_api(anon):
    resp = await anon.get("/openapi.json")
    assert resp.status_code == 200
    spec = resp.json()
    assert spec["openapi"].startswith("3.1")
    for path in ["/v1/events", "/v1/meters", "/v1/meters/{meter_key}/query", "/v1/customers", "/v1/api-keys"]:
        assert path in spec["paths"], path
    body = spec["paths"]["/v1/events"]["post"]["requestBody"]["content"]
    assert "application/cloudevents-batch+json" in body


async def test_interactive_docs_load_nothing_from_the_internet(anon):
    """The docs page and every asset it references are served by Allotment itself."""
    resp = await anon.get("/docs")
    assert resp.status_code == 200 and "openapi.json" in resp.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', resp.text) + re.findall(r"url: '([^']+)'", resp.text)
    assert assets
    for asset in assets:
        assert asset.startswith("/"), asset
        assert (await anon.get(asset)).status_code == 200, asset
