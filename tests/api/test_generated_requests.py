"""Requests generated from the OpenAPI document, as an outside client would send them, never
get a server error.

Schemathesis reads `/openapi.json` of a real `allotment serve` and sends each operation
boundary values and generated bodies, headers and parameters, valid and not. The path
parameters name resources that exist (a customer on a plan, with a grant, a hold, a webhook
endpoint), so the requests reach past the look-ups. Its seed is fixed, so that a run can be
repeated request for request and a failure sent again.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.servers import Server

pytestmark = pytest.mark.slow

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
SEED = 20261203
EXAMPLES_PER_OPERATION = 8


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    running = Server(database_url, tmp_path)
    running.start()
    yield running
    running.stop()


def _existing_resources(url: str, key: str) -> dict[str, str]:
    """A small tenant, as the README's walkthrough makes it; the path parameters naming it."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:

        def post(path: str, body: object = None) -> dict[str, object]:
            resp = client.post(path, json=body)
            assert resp.status_code in (200, 201), (path, resp.text)
            return resp.json()  # type: ignore[no-any-return]

        post("/v1/meters", {"key": "tokens", "event_type": "prompt", "aggregation": "SUM",
                            "value_property": "$.tokens", "group_by": {"model": "$.model"}})
        post("/v1/customers", {"key": "acme", "name": "Acme", "subject_keys": ["acme-key"]})
        post("/v1/events", [{"specversion": "1.0", "id": "e1", "source": "gateway", "type": "prompt",
                             "subject": "acme-key", "data": {"tokens": 5, "model": "large"}}])
        post("/v1/features", {"key": "tokens", "name": "Tokens", "meter": "tokens"})
        post("/v1/features", {"key": "seats", "name": "Seats"})
        post("/v1/plans", {"key": "starter", "name": "Starter", "entitlements": [
            {"feature": "tokens", "kind": "metered", "usage_period": "MONTH", "included": 1000,
             "soft_limit": 1000, "hard_limit": 1500},
            {"feature": "seats", "kind": "seats", "included": 10, "soft_limit": 10, "hard_limit": 12}]})
        post("/v1/plans/starter/publish")
        subscription = post("/v1/subscriptions", {"customer": "acme", "plan": "starter"})
        grant = post("/v1/customers/acme/entitlements/tokens/grants",
                     {"amount": 500, "expires_at": "2099-01-01T00:00:00Z"})
        hold = post("/v1/reservations", {"customer": "acme", "feature": "tokens", "quantity": 30,
                                         "ttl_seconds": 3600, "idempotency_key": "hold-1"})
        endpoint = post("/v1/webhook-endpoints", {"url": "http://127.0.0.1:9/hook"})
    return {
        "customer_key": "acme", "customer_id_or_key": "acme", "feature_key": "tokens",
        "entitlement_id_or_feature_key": "tokens", "meter_key": "tokens", "meter_id_or_slug": "tokens",
        "plan_key": "starter", "subject_key": "acme-key", "group_by_key": "model",
        "subscription_id": str(subscription["id"]), "grant_id": str(grant["id"]),
        "reservation_id": str(hold["reservation"]["id"]),  # type: ignore[index]
        "endpoint_id": str(endpoint["id"]),
    }


def test_no_generated_request_gets_a_server_error(server: Server, tmp_path: Path) -> None:
    """Every operation, fed valid and invalid input, answers with anything but a 5xx.

    Deleting is left out (the first deletion would leave the rest nothing to reach) and so
    are the API key operations (revoking the key in use would answer every later request 401)."""
    key = server.first_admin_key()
    parameters = _existing_resources(server.url, key)
    config = tmp_path / "schemathesis.toml"
    config.write_text("[parameters]\n" + "".join(f'{name} = "{value}"\n' for name, value in parameters.items()))
    result = subprocess.run(
        [SCHEMATHESIS, "--config-file", str(config), "run", f"{server.url}/openapi.json",
         "--header", f"Authorization: Bearer {key}", "--checks", "not_a_server_error",
         "--phases", "coverage,fuzzing", "--max-examples", str(EXAMPLES_PER_OPERATION),
         "--seed", str(SEED), "--generation-database", "none",
         "--exclude-method", "DELETE", "--exclude-path-regex", "^/v1/api-keys", "--workers", "1",
         "--no-color"],
        cwd=tmp_path, check=False, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    tested = re.search(r"Tested: (\d+)", result.stdout)
    assert tested is not None and int(tested.group(1)) >= 100, result.stdout[-3000:]
