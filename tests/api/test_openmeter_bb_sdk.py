"""OpenMeter behaviours found by using the official SDK as a client would, on every parameter.

The same live server as the other SDK tests (uvicorn in a thread), on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from corehttp.exceptions import HttpResponseError
from tests.api import test_openmeter_sdk as sdk
from tests.api.test_openmeter_sdk import T0, prompt, tokens_meter

live, om = sdk.live, sdk.om

HOUR = timedelta(hours=1)


# --- events ------------------------------------------------------------------------------------


def test_events_list_with_to_before_from_is_a_400_naming_to(om):
    """An empty range is a mistake the client should hear about, as OpenMeter answers it."""
    tokens_meter(om)
    om.events.ingest_event(prompt(at=T0))
    with pytest.raises(HttpResponseError) as err:
        om.events.list(from_parameter=T0 + HOUR, to=T0)
    assert (err.value.status_code, err.value.model.status) == (400, 400)
    assert err.value.model.detail.startswith("to: ")


def test_events_list_with_ingested_at_to_before_from_is_a_400_naming_it(om):
    """The same for the ingestion-time bounds."""
    now = datetime.now(UTC)
    with pytest.raises(HttpResponseError) as err:
        om.events.list(ingested_at_from=now, ingested_at_to=now - HOUR)
    assert (err.value.status_code, err.value.model.status) == (400, 400)
    assert err.value.model.detail.startswith("ingestedAtTo: ")
