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


async def test_every_operation_documents_its_problem_responses(anon):
    """Errors are part of the contract: each operation lists the 4xx it may answer and the 503 of
    a database out of reach, as RFC 7807 problems (the OpenMeter surface answers 400 where the
    native API answers 422)."""
    spec = (await anon.get("/openapi.json")).json()
    assert {"type", "title", "status", "detail"} <= set(spec["components"]["schemas"]["Problem"]["required"])
    for path, operations in spec["paths"].items():
        if not path.startswith(("/v1/", "/api/")):
            continue
        for method, operation in operations.items():
            codes = operation["responses"]
            expected = {"400", "401", "403", "404", "503"} | ({"422"} if path.startswith("/v1/") else set())
            assert expected <= set(codes), (method, path, sorted(codes))
            if path.startswith("/api/"):
                assert "422" not in codes, (method, path)
            for code, response in codes.items():
                if code.startswith("4") or code == "503":
                    assert list(response["content"]) == ["application/problem+json"], (method, path, code)


async def test_a_method_a_path_does_not_serve_is_405_naming_the_allowed_ones(tenant):
    for path in ("/v1/meters", "/api/v1/meters"):
        resp = await tenant.client.request("PATCH", path)
        assert resp.status_code == 405, resp.text
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert {"GET", "POST"} <= {m.strip() for m in resp.headers["allow"].split(",")}, resp.headers


async def test_actions_that_change_state_document_the_idempotency_key(anon):
    """Each POST that acts on a resource says it takes an `Idempotency-Key` header."""
    spec = (await anon.get("/openapi.json")).json()
    for path in ("/v1/reservations/{reservation_id}/commit", "/v1/reservations/{reservation_id}/release",
                 "/v1/customers/{customer_key}/seats/{feature_key}/activate",
                 "/v1/customers/{customer_key}/seats/{feature_key}/heartbeat",
                 "/v1/customers/{customer_key}/seats/{feature_key}/release",
                 "/v1/grants/{grant_id}/void", "/v1/plans/{plan_key}/publish", "/v1/api-keys",
                 "/v1/webhook-endpoints/{endpoint_id}/rotate-secret", "/v1/webhook-endpoints/{endpoint_id}/test"):
        parameters = spec["paths"][path]["post"].get("parameters", [])
        assert any(p["in"] == "header" and p["name"] == "Idempotency-Key" for p in parameters), path


async def test_the_key_creation_says_a_replay_cannot_show_the_secret_again(anon):
    spec = (await anon.get("/openapi.json")).json()
    assert "Idempotency-Key" in spec["paths"]["/v1/api-keys"]["post"]["description"]
    assert "null" in spec["components"]["schemas"]["KeyCreated"]["properties"]["secret"]["description"]
