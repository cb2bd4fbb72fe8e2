"""Lago events as the official Lago client sends and reads them, against a real server."""

from __future__ import annotations

from lago_python_client.models.event import Event
from tests.api import test_openmeter_sdk as sdk
from tests.api.test_lago_client import lago

live = sdk.live  # the live server, as a fixture here too


def test_an_events_timestamp_is_read_back_to_the_millisecond(live):
    """As Lago answers it (ISO 8601 with milliseconds): a fraction of a second sent is kept."""
    client = lago(live)
    for tx, stamp in (("tx-float", 1714564800.25), ("tx-text", "1714564800.5"), ("tx-int", 1714564800)):
        client.events.create(Event(transaction_id=tx, external_subscription_id="sub-1", code="calls",
                                   timestamp=stamp, properties={}))
    assert [client.events.find(tx).timestamp for tx in ("tx-float", "tx-text", "tx-int")] == [
        "2024-05-01T12:00:00.250Z", "2024-05-01T12:00:00.500Z", "2024-05-01T12:00:00.000Z"]
