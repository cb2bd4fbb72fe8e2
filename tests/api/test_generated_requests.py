"""Requests generated from the OpenAPI document, as an outside client would send them, never
get a server error, and the native API answers them as its document says.

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


def _schemathesis(server: Server, tmp_path: Path, config: str, *options: str) -> str:
    """Run schemathesis on the server's document with `config` (TOML) after the parameters
    naming the tenant's resources; its output, once it passed."""
    key = server.first_admin_key()
    parameters = _existing_resources(server.url, key)
    path = tmp_path / "schemathesis.toml"
    path.write_text("[parameters]\n" + "".join(f'{name} = "{value}"\n' for name, value in parameters.items())
                    + config)
    result = subprocess.run(
        [SCHEMATHESIS, "--config-file", str(path), "run", f"{server.url}/openapi.json",
         "--header", f"Authorization: Bearer {key}", "--seed", str(SEED), "--generation-database", "none",
         "--exclude-method", "DELETE", "--exclude-path-regex", "^/v1/api-keys", "--workers", "1",
         "--no-color", *options],
        cwd=tmp_path, check=False, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    return result.stdout


def test_no_generated_request_gets_a_server_error(server: Server, tmp_path: Path) -> None:
    """Every operation, fed valid and invalid input, answers with anything but a 5xx.

    Deleting is left out (the first deletion would leave the rest nothing to reach) and so
    are the API key operations (revoking the key in use would answer every later request 401)."""
    output = _schemathesis(server, tmp_path, "", "--checks", "not_a_server_error", "--phases", "coverage,fuzzing",
                           "--max-examples", str(EXAMPLES_PER_OPERATION))
    tested = re.search(r"Tested: (\d+)", output)
    assert tested is not None and int(tested.group(1)) >= 100, output[-3000:]


# Every check schemathesis has is on (its default; naming them on the command line would
# override what follows), except where one expects what the native API rightly does not do.
CONFORMANCE_CONFIG = """
# A cursor is opaque: only a value a list handed out is one, which no schema can say. The first
# page is asked for, so that the other parameters are what is judged.
"query.cursor" = ""

# Seats are activated on a seats feature: `tokens` is metered, and asking for its seats is a 422.
[[operations]]
include-path-regex = "/seats/"
parameters = { feature_key = "seats" }

# Valid data refused, where the schema cannot state the rule the server checks:
# - one field constrains another (`from` before `to`, `expires_at` after `effective_at`, the body's
#   `idempotency_key` equal to the header's, `value_property` needed by the aggregation, thresholds
#   only for threshold rules, a group filter only with a meter, the fields of each entitlement kind);
# - the rule depends on what is stored (an override's fields follow its entitlement's kind);
# - a JSONPath's grammar (meter values and groups), and a JSON number with more than six digits
#   after the point (quantities), which JSON Schema's `multipleOf` cannot state exactly in binary.
[[operations]]
include-name = [
  "GET /v1/denials", "GET /v1/events", "GET /v1/reports/overdraft", "GET /v1/meters/{meter_key}/query",
  "POST /v1/meters/{meter_key}/query", "POST /v1/customers/{customer_key}/entitlements/{feature_key}/grants",
  "POST /v1/check", "POST /v1/reservations", "POST /v1/reservations/{reservation_id}/commit",
  "POST /v1/meters", "PATCH /v1/meters/{meter_key}", "POST /v1/notification-rules",
  "PATCH /v1/notification-rules/{rule_id}", "POST /v1/features", "PATCH /v1/features/{feature_key}",
  "POST /v1/customers/{customer_key}/entitlements", "POST /v1/plans",
  "PUT /v1/customers/{customer_key}/entitlements/{feature_key}/override",
]
checks.positive_data_acceptance.enabled = false

# The stateful phase links operations by the names of their fields: it sends one list's
# `next_cursor` to another list, which refuses it (400 naming the list it belongs to).
[phases.stateful.checks.positive_data_acceptance]
enabled = false
"""


def test_generated_requests_get_the_answers_the_document_promises(server: Server, tmp_path: Path) -> None:
    """Every native operation answers as its OpenAPI document says: a status code, content type,
    headers and body it documents; what the schema calls invalid refused, what it calls valid
    taken (but where the configuration above says why the schema cannot tell).

    Operations with state (`stateful`) run their links too: what was created can be read."""
    output = _schemathesis(server, tmp_path, CONFORMANCE_CONFIG, "--include-path-regex", "^/v1/", "--max-examples", str(EXAMPLES_PER_OPERATION))
    tested = re.search(r"Tested: (\d+)", output)
    assert tested is not None and int(tested.group(1)) >= 60, output[-3000:]
