"""Meter queries as a user reads them: the errors, and the CSV form of an answer."""

from __future__ import annotations

import csv
import io

import pytest
from tests.helpers import event, meter

from allotment.metering.folding import fold_pending

WEEK = {"from": "2026-03-01T00:00:00Z", "to": "2026-03-08T00:00:00Z"}


@pytest.fixture
async def tokens(tenant):  # type: ignore[no-untyped-def]
    """A meter of tokens grouped by model, with 3 tokens of model a on 2 March."""
    await tenant.client.post("/v1/meters", json=meter(group_by={"model": "$.model"}))
    resp = await tenant.client.post("/v1/events", json=[event(tokens=3, model="a", time="2026-03-02T10:00:00Z")])
    assert resp.json()["accepted"] == 1, resp.text
    return tenant


async def test_a_filter_on_a_group_the_meter_lacks_is_a_422_naming_filter_group_by(tokens):
    """By query parameter or in a body, the error names the filter, not `group_by`."""
    got = await tokens.client.get("/v1/meters/tokens/query", params={**WEEK, "filter_group_by": "region:eu"})
    posted = await tokens.client.post("/v1/meters/tokens/query", json={**WEEK, "filter_group_by": {"region": ["eu"]}})
    for resp in (got, posted):
        assert resp.status_code == 422, resp.text
        assert [e["field"] for e in resp.json()["errors"]] == ["filter_group_by"], resp.text


async def test_a_csv_answer_without_rows_has_a_column_for_each_group_asked_for(tokens):
    resp = await tokens.client.get("/v1/meters/tokens/query", params={
        "from": "2026-04-01T00:00:00Z", "to": "2026-04-02T00:00:00Z", "group_by": "model", "format": "csv"})
    assert resp.status_code == 200, resp.text
    assert list(csv.reader(io.StringIO(resp.text))) == [["window_start", "window_end", "subject", "customer", "model", "value"]]


async def test_a_query_posted_with_accept_text_csv_is_answered_in_csv(tokens):
    resp = await tokens.client.post("/v1/meters/tokens/query", json={**WEEK, "group_by": ["model"]},
                                    headers={"Accept": "text/csv"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv"), resp.text
    assert list(csv.DictReader(io.StringIO(resp.text))) == [{
        "window_start": "2026-03-01T00:00:00Z", "window_end": "2026-03-08T00:00:00Z", "subject": "",
        "customer": "", "model": "a", "value": "3"}]


async def test_latest_of_events_at_one_time_for_several_subjects_is_the_same_before_and_after_folding(tenant, db):
    """Of values of different subjects at the same latest time, the greatest, whichever rollup,
    journal or log part answers."""
    await tenant.client.post("/v1/meters", json=meter("level", "LATEST", value_property="$.level"))
    for i, (subject, level) in enumerate([("m", 5), ("b", 9), ("x", 2), ("a", 7), ("c", 1)]):
        resp = await tenant.client.post("/v1/events", json=[event(subject, id=f"e{i}", level=level,
                                                                   time="2026-03-02T10:00:30Z")])
        assert resp.json()["accepted"] == 1, resp.text
    ranges = [WEEK, {"from": "2026-03-02T10:00:10Z", "to": "2026-03-02T10:00:40Z"}]

    async def answers() -> list[object]:
        return [(await tenant.client.get("/v1/meters/level/query", params=r)).json()["data"][0]["value"] for r in ranges]

    assert await answers() == [9, 9]
    async with db.transaction() as session:
        await fold_pending(session)
    assert await answers() == [9, 9]


async def test_a_customer_without_subjects_gets_a_zero_for_each_window(tokens):
    """A new customer (no subjects yet) is answered like one without usage: a 0 per window."""
    made = await tokens.client.post("/v1/customers", json={"key": "newco", "name": "NewCo"})
    assert made.status_code == 201, made.text
    resp = await tokens.client.get("/v1/meters/tokens/query", params={
        "from": "2026-03-01T00:00:00Z", "to": "2026-03-03T00:00:00Z", "window_size": "DAY", "customer": "newco"})
    assert resp.status_code == 200, resp.text
    assert [(r["window_start"], r["value"], r["customer"]) for r in resp.json()["data"]] == [
        ("2026-03-01T00:00:00Z", 0, "newco"), ("2026-03-02T00:00:00Z", 0, "newco")]


async def test_a_subject_outside_the_customers_asked_for_gets_a_zero_not_no_rows(tokens):
    """Subject and customer filters that leave no subject answer the one window with 0."""
    await tokens.client.post("/v1/customers", json={"key": "acme", "name": "Acme", "subject_keys": ["acme-1"]})
    resp = await tokens.client.get("/v1/meters/tokens/query", params={
        **WEEK, "customer": "acme", "subject": "someone-else"})
    assert resp.status_code == 200, resp.text
    assert [r["value"] for r in resp.json()["data"]] == [0]


async def test_a_small_value_in_csv_is_written_in_plain_decimals(tokens):
    """A millionth is `0.000001` in CSV, as billing sheets read it, not `1e-06`."""
    await tokens.client.post("/v1/events", json=[event(tokens="0.000001", model="b", time="2026-03-03T10:00:00Z")])
    resp = await tokens.client.get("/v1/meters/tokens/query", params={
        "from": "2026-03-03T00:00:00Z", "to": "2026-03-04T00:00:00Z", "format": "csv"})
    assert resp.status_code == 200, resp.text
    assert [row["value"] for row in csv.DictReader(io.StringIO(resp.text))] == ["0.000001"]
