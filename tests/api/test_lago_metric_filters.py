"""Lago billable metric filters after the fact: a metric updated with a new filter key splits
its whole history by it, as the meter's group-by does natively. Driven by the Lago client."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models import BillableMetric
from lago_python_client.models.billable_metric import BillableMetricFilter, BillableMetricFilters
from lago_python_client.models.event import Event
from tests.api import test_openmeter_sdk as sdk
from tests.api.test_lago_client import lago, native

live = sdk.live  # the live server, as a fixture here too


def _filters(*keys: str) -> BillableMetricFilters:
    return BillableMetricFilters(__root__=[BillableMetricFilter(key=k, values=[]) for k in keys])


def _send(client, tx: str, tokens: int, model: str) -> None:  # type: ignore[no-untyped-def]
    client.events.create(Event(transaction_id=tx, external_subscription_id="sub-1", code="tokens",
                               timestamp=int(datetime.now(UTC).timestamp()),
                               properties={"tokens": tokens, "model": model}))


def test_a_filter_added_later_splits_the_events_sent_before(live):
    client = lago(live)
    client.billable_metrics.create(BillableMetric(
        name="Tokens", code="tokens", aggregation_type="sum_agg", field_name="tokens"))
    _send(client, "t1", 5, "small")
    _send(client, "t2", 7, "large")
    updated = client.billable_metrics.update(BillableMetric(filters=_filters("model")), "tokens")
    assert [f.key for f in updated.filters.__root__] == ["model"]
    start = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    rows = native(live, "GET", f"/v1/meters/tokens/query?group_by=model&from={start}")["data"]
    assert {r["group_by"]["model"]: r["value"] for r in rows} == {"small": 5, "large": 7}


def test_a_filter_a_feature_relies_on_cannot_be_dropped(live):
    client = lago(live)
    client.billable_metrics.create(BillableMetric(
        name="Tokens", code="tokens", aggregation_type="sum_agg", field_name="tokens", filters=_filters("model")))
    native(live, "POST", "/v1/features", {"key": "small-tokens", "name": "Small", "meter": "tokens",
                                          "meter_group_filter": {"model": "small"}})
    with pytest.raises(LagoApiError) as refused:
        client.billable_metrics.update(BillableMetric(filters=_filters()), "tokens")
    assert refused.value.status_code == 422, refused.value.response  # Lago has no 409
    assert list(refused.value.response["error_details"]) == ["filters.model"]
    assert [f.key for f in client.billable_metrics.find("tokens").filters.__root__] == ["model"]
