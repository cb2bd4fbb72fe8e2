"""Ingest over the native API: de-duplication, per-event rejection, durability of the rest."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import orjson
import pytest
from tests.helpers import event, meter

from allotment.metering import ingest, meters, queries
from allotment.metering.schemas import MeterCreate
from allotment.metering.wire import decode
from allotment.types import to_micros, utcnow


async def total(tenant, key="tokens", **params):  # type: ignore[no-untyped-def]
    resp = await tenant.client.get(f"/v1/meters/{key}/query", params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()["data"][0]["value"]


async def test_batch_is_counted_and_retry_counts_once(tenant):
    """A retried batch is acknowledged again but adds nothing."""
    await tenant.client.post("/v1/meters", json=meter())
    batch = [event(tokens=10), event(tokens=5)]
    first = await tenant.client.post("/v1/events", json=batch)
    assert first.json() == {"accepted": 2, "duplicates": 0, "rejected": 0, "errors": []}
    again = await tenant.client.post("/v1/events", json=batch)
    assert again.json()["accepted"] == 0 and again.json()["duplicates"] == 2
    assert await total(tenant) == 15


async def test_duplicate_within_one_batch_counts_once(tenant):
    await tenant.client.post("/v1/meters", json=meter())
    resp = await tenant.client.post("/v1/events", json=[event(id="a", tokens=3), event(id="a", tokens=3)])
    assert resp.json()["accepted"] == 1 and resp.json()["duplicates"] == 1
    assert await total(tenant) == 3


async def test_same_id_from_another_source_is_another_event(tenant):
    await tenant.client.post("/v1/meters", json=meter())
    await tenant.client.post("/v1/events", json=[event(id="a", source="s1", tokens=1), event(id="a", source="s2", tokens=2)])
    assert await total(tenant) == 3


async def test_bad_event_is_reported_by_index_and_the_rest_is_kept(tenant):
    await tenant.client.post("/v1/meters", json=meter())
    batch = [event(tokens=1), {"id": "x", "source": "s", "type": "prompt"}, event(tokens="lots"), event(tokens=2)]
    resp = await tenant.client.post("/v1/events", json=batch)
    assert resp.status_code == 200
    body = resp.json()
    assert body["accepted"] == 2 and body["rejected"] == 2
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(1, "subject"), (2, "data.tokens")]
    assert await total(tenant) == 3
    rejected = (await tenant.client.get("/v1/events/rejected")).json()["items"]
    assert {r["index"] for r in rejected} == {1, 2}


async def test_every_rejected_event_can_be_paged_through(tenant):
    """Rejections are listed newest first, page by page, each exactly once."""
    await tenant.client.post("/v1/meters", json=meter())
    for n in range(3):
        await tenant.client.post("/v1/events", json=[event(tokens=1)] + [event(tokens=f"bad{n}-{i}") for i in range(2)])
    seen, cursor = [], None
    while True:
        params = {"limit": 4} | ({"cursor": cursor} if cursor else {})
        body = (await tenant.client.get("/v1/events/rejected", params=params)).json()
        assert len(body["items"]) <= 4
        seen += [orjson.loads(r["raw"])["data"]["tokens"] for r in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"bad{n}-{i}" for n in (2, 1, 0) for i in (1, 0)]
    bad = await tenant.client.get("/v1/events/rejected", params={"cursor": "nope"})
    assert bad.status_code == 400 and bad.json()["detail"].startswith("cursor:")


async def test_nul_characters_are_rejected_by_index_and_the_rest_is_kept(tenant):
    """PostgreSQL text cannot hold NUL: refused per event and field, never a 500 or a fold
    that can never be stored (in attributes as one of the control characters CloudEvents forbids)."""
    c = tenant.client
    await c.post("/v1/meters", json=meter())
    await c.post("/v1/meters", json=meter("users", "UNIQUE_COUNT", value_property="$.user"))
    batch = [event(tokens=1, user="a"), event(id="bad\u0000id", tokens=5), event(subject="u\u0000", tokens=5),
             event(tokens=5, user="x\u0000y"), event(tokens=2, user="b")]
    resp = await c.post("/v1/events", json=batch)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["accepted"], body["rejected"]) == (2, 3)
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(1, "id"), (2, "subject"), (3, "data.user")]
    assert [e["message"].split(" (")[0] for e in body["errors"]] == [
        "must not contain control characters", "must not contain control characters",
        "must not contain the NUL character"]
    assert await total(tenant) == 3
    assert await total(tenant, "users") == 2


async def test_control_characters_in_attributes_are_rejected_and_the_rest_is_kept(tenant):
    """CloudEvents forbids U+0000-U+001F and U+007F-U+009F in its attributes: each such event is
    refused by index and field; other characters beyond ASCII are fine anywhere."""
    c = tenant.client
    await c.post("/v1/meters", json=meter())
    batch = [event(id="tab\there", tokens=1), event(source="s\u001e", tokens=2), event(tokens=4),
             event(subject="u\u001f", tokens=8), event(type="prompt\u0085", tokens=16),
             event(id="caf\u00e9 \u2028 \u00a0 \U0001f600", subject="\u00fcber", tokens=32)]
    resp = await c.post("/v1/events", json=batch)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["accepted"], body["rejected"]) == (2, 4)
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(0, "id"), (1, "source"), (3, "subject"),
                                                                  (4, "type")]
    assert all(e["message"].startswith("must not contain control characters") for e in body["errors"])
    assert await total(tenant) == 36
    listed = (await c.get("/v1/events", params={"subject": "\u00fcber"})).json()["items"]
    assert [e["id"] for e in listed] == ["caf\u00e9 \u2028 \u00a0 \U0001f600"]


async def test_all_rejected_is_422_naming_each_field(tenant):
    resp = await tenant.client.post("/v1/events", json=[{"id": 1, "source": "s", "type": "t", "subject": "u"}])
    assert resp.status_code == 422
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert resp.json()["errors"] == [{"field": "[0].id", "message": "expected `str`, got `int`"}]


async def test_an_event_missing_several_attributes_names_every_one(tenant):
    """The sender learns all it left out at once, not one attribute per retry."""
    resp = await tenant.client.post("/v1/events", json=[event(tokens=1), {"source": "s", "data": {}}])
    assert resp.status_code == 200
    assert resp.json()["rejected"] == 1
    [error] = resp.json()["errors"]
    assert (error["index"], error["field"]) == (1, "id")
    assert error["message"] == "is required, as are `type` and `subject`"


async def test_single_cloudevent_with_its_content_type(tenant):
    await tenant.client.post("/v1/meters", json=meter())
    import orjson

    resp = await tenant.client.post(
        "/v1/events", content=orjson.dumps(event(tokens=7)), headers={"content-type": "application/cloudevents+json"}
    )
    assert resp.json()["accepted"] == 1
    assert await total(tenant) == 7


async def test_time_without_offset_is_rejected(tenant):
    resp = await tenant.client.post("/v1/events", json=[event(time="2026-01-01T00:00:00", tokens=1)])
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "[0].time"


async def test_malformed_json_is_400(tenant):
    resp = await tenant.client.post("/v1/events", content=b'[{"id": ', headers={"content-type": "application/json"})
    assert resp.status_code == 400
    assert "JSON" in resp.json()["detail"]


async def test_empty_body_is_400(tenant):
    resp = await tenant.client.post("/v1/events", content=b"")
    assert resp.status_code == 400


async def test_too_many_events_is_413(tenant):
    resp = await tenant.client.post("/v1/events", json=[event(tokens=1) for _ in range(10_001)])
    assert resp.status_code == 413


async def test_late_event_lands_in_its_own_window(tenant):
    await tenant.client.post("/v1/meters", json=meter())
    await tenant.client.post("/v1/events", json=[event(time="2026-03-02T10:00:00Z", tokens=4)])
    await tenant.client.post("/v1/events", json=[event(time="2026-03-01T10:00:00Z", tokens=6)])
    resp = await tenant.client.get(
        "/v1/meters/tokens/query",
        params={"from": "2026-03-01T00:00:00Z", "to": "2026-03-03T00:00:00Z", "window_size": "DAY"},
    )
    assert [r["value"] for r in resp.json()["data"]] == [6, 4]


async def test_events_before_meter_are_backfilled(tenant):
    """A meter created after events arrived counts the stored events."""
    await tenant.client.post("/v1/events", json=[event(tokens=4), event(tokens=6), event(type="other", tokens=100)])
    resp = await tenant.client.post("/v1/meters", json=meter())
    assert resp.status_code == 201 and resp.json()["backfilled_events"] == 2
    assert await total(tenant) == 10


async def test_a_query_for_one_customer_or_subject_names_it_on_every_row(tenant):
    c = tenant.client
    await c.post("/v1/meters", json=meter())
    made = (await c.post("/v1/customers", json={"key": "acme", "name": "Acme", "subject_keys": ["a1", "a2"]})).json()
    await c.post("/v1/events", json=[event("a1", tokens=1), event("a2", tokens=2), event("other", tokens=4)])
    for params in ({"customer": "acme"}, {"customer": made["id"]}, {"customer": ["acme", "acme"]}):
        rows = (await c.get("/v1/meters/tokens/query", params=params)).json()["data"]
        assert [(r["customer"], r["subject"], r["value"]) for r in rows] == [("acme", None, 3)], params
    rows = (await c.get("/v1/meters/tokens/query", params={"subject": "a2"})).json()["data"]
    assert [(r["customer"], r["subject"], r["value"]) for r in rows] == [(None, "a2", 2)]
    rows = (await c.get("/v1/meters/tokens/query", params={"subject": ["a1", "a2"]})).json()["data"]
    assert [(r["customer"], r["subject"], r["value"]) for r in rows] == [(None, None, 3)]


async def test_subject_and_customer_filters_combine(tenant):
    """Both named: the named subjects the customers own, nothing of the customers' others (a
    subject the customer does not own has used nothing of it: 0, as any customer without usage)."""
    c = tenant.client
    await c.post("/v1/meters", json=meter())
    await c.post("/v1/customers", json={"key": "acme", "name": "Acme", "subject_keys": ["a1", "a2"]})
    await c.post("/v1/events", json=[event("a1", tokens=60), event("a2", tokens=1), event("other", tokens=4)])
    rows = (await c.get("/v1/meters/tokens/query", params={"customer": "acme", "subject": "a1"})).json()["data"]
    assert [(r["customer"], r["subject"], r["value"]) for r in rows] == [("acme", "a1", 60)]
    rows = (await c.get("/v1/meters/tokens/query", params={"customer": "acme", "subject": "other"})).json()["data"]
    assert [r["value"] for r in rows] == [0]


async def test_unattributed_events_are_listed_with_reasons(tenant):
    await tenant.client.post("/v1/meters", json=meter())
    await tenant.client.post("/v1/customers", json={"key": "acme", "name": "Acme", "subject_keys": ["owned"]})
    await tenant.client.post("/v1/events", json=[event("owned", tokens=1), event("stray", tokens=1), event("owned", type="nometer")])
    resp = await tenant.client.get("/v1/events", params={"status": "unattributed"})
    items = resp.json()["items"]
    assert sorted((i["subject"], i["type"]) for i in items) == [("owned", "nometer"), ("stray", "prompt")]
    stray = next(i for i in items if i["subject"] == "stray")
    assert stray["problems"] == ["subject 'stray' belongs to no customer"]
    counted = (await tenant.client.get("/v1/events", params={"status": "counted"})).json()["items"]
    assert [(i["subject"], i["customer"], i["meters"]) for i in counted] == [("owned", "acme", ["tokens"])]


async def test_listed_events_show_how_often_they_came_again(tenant):
    """Retries are visible: each stored event says how many duplicates of it arrived (within
    one batch, in later requests, in batches stored together) and when the last one did;
    `status=duplicate` lists the events that had any, and nothing counts twice."""
    await tenant.client.post("/v1/meters", json=meter())
    first = [event(id="a", tokens=1), event(id="a", tokens=1), event(id="b", tokens=2)]
    assert (await tenant.client.post("/v1/events", json=first)).json()["duplicates"] == 1
    again = [event(id="a", tokens=1), event(id="c", tokens=4)]
    together = await asyncio.gather(*(tenant.client.post("/v1/events", json=again) for _ in range(3)))
    assert sorted(r.json()["duplicates"] for r in together) == [1, 2, 2]
    items = {i["id"]: i for i in (await tenant.client.get("/v1/events")).json()["items"]}
    assert {k: (i["duplicates"], i["status"]) for k, i in items.items()} == {
        "a": (4, "unattributed"), "b": (0, "unattributed"), "c": (2, "unattributed")}
    assert items["b"]["last_duplicate_at"] is None
    assert items["a"]["last_duplicate_at"] >= items["c"]["received_at"]
    retried = (await tenant.client.get("/v1/events", params={"status": "duplicate"})).json()["items"]
    assert sorted(i["id"] for i in retried) == ["a", "c"]
    assert await total(tenant) == 7


async def test_known_events_between_new_ones_leave_exactly_the_new_ones_stored(tenant, monkeypatch):
    """Known identities anywhere in a batch, in one batch after another: each answer counts
    the new events, each new event is stored once and nothing known counts again, whether
    the batch came while the insert expected only new events or after it met known ones."""
    monkeypatch.setattr(queries, "_CAREFUL_AFTER_CONFLICT", 1)
    await tenant.client.post("/v1/meters", json=meter())
    sent = [
        ([event(id="k1", tokens=1), event(id="k2", tokens=2)], (2, 0)),
        ([event(id="n1", tokens=10), event(id="k2", tokens=2), event(id="n2", tokens=20),
          event(id="k1", tokens=1)], (2, 2)),
        ([event(id="n3", tokens=100)], (1, 0)),
        ([event(id="n4", tokens=1000), event(id="n3", tokens=100)], (1, 1)),
        ([event(id="n5", tokens=10000)], (1, 0)),
    ]
    for batch, (accepted, duplicates) in sent:
        body = (await tenant.client.post("/v1/events", json=batch)).json()
        assert (body["accepted"], body["duplicates"]) == (accepted, duplicates), batch
    assert await total(tenant) == 11133
    listed = (await tenant.client.get("/v1/events", params={"limit": 100})).json()["items"]
    assert sorted(i["id"] for i in listed) == ["k1", "k2", "n1", "n2", "n3", "n4", "n5"]


async def test_integers_beyond_64_bits_in_data_are_kept(tenant):
    """Data is stored as sent, whatever the size of its integers; a meter refuses what it cannot add."""
    await tenant.client.post("/v1/meters", json=meter())
    big = 2**70
    resp = await tenant.client.post("/v1/events", json=[event(tokens=1, trace=big), event(tokens=big)])
    assert resp.status_code == 200
    assert resp.json()["accepted"] == 1
    assert resp.json()["errors"][0]["field"] == "data.tokens"
    items = (await tenant.client.get("/v1/events")).json()["items"]
    assert items[0]["data"]["trace"] == big


async def test_meter_created_between_batches_counts_the_next_batch(tenant):
    """A batch prepared against yesterday's meters is re-checked: new meters count it."""
    await tenant.client.post("/v1/events", json=[event(tokens=1)])
    await tenant.client.post("/v1/meters", json=meter())
    await tenant.client.post("/v1/events", json=[event(tokens=2)])
    await tenant.client.post("/v1/meters", json=meter("calls", "COUNT"))
    await tenant.client.post("/v1/events", json=[event(tokens=4)])
    await tenant.client.delete("/v1/meters/tokens")
    resp = await tenant.client.post("/v1/events", json=[event(tokens=8)])
    assert resp.json()["accepted"] == 1
    assert await total(tenant, "calls") == 4


async def test_concurrent_batches_are_each_answered_with_their_own_counts(tenant):
    """Batches that arrive together are stored together; each answer is still its own, and an
    event sent in two of them counts once."""
    import asyncio

    await tenant.client.post("/v1/meters", json=meter())
    shared = [event(id=f"shared-{i}", tokens=1) for i in range(5)]
    batches = [[*shared, *(event(id=f"own-{n}-{i}", tokens=10) for i in range(3))] for n in range(8)]
    answers = await asyncio.gather(*(tenant.client.post("/v1/events", json=b) for b in batches))
    bodies = [a.json() for a in answers]
    assert all(a.status_code == 200 for a in answers)
    assert all(b["accepted"] + b["duplicates"] == 8 and b["accepted"] >= 3 for b in bodies)
    assert sum(b["accepted"] for b in bodies) == 5 + 8 * 3
    assert await total(tenant) == 5 + 8 * 3 * 10


async def test_batches_stored_again_after_their_shared_transaction_failed_count_once(tenant, db):
    """Batches stored together whose transaction fails are stored again one at a time
    (allotment/batching.py): each then counts what it would have counted alone."""
    await tenant.client.post("/v1/meters", json=meter())
    async with db.transaction(readonly=True) as session:
        catalogue = await meters.load_catalogue(session, tenant.id, await meters.catalogue_version(session, tenant.id))

    def batch(*events: dict[str, object]) -> ingest.Batch:
        decoded = decode(orjson.dumps(list(events)), max_events=100)
        received_us = to_micros(utcnow())
        return ingest.Batch(decoded, received_us, ingest.prepare(decoded, catalogue, received_us=received_us))

    first = batch(event(id="a", tokens=1), event(id="b", tokens=2))
    second = batch(event(id="c", tokens=4))
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            together = await ingest.ingest(session, tenant.id, [first, second])
            assert [(r.accepted, r.duplicates) for r in together] == [(2, 0), (1, 0)]
            raise RuntimeError("the shared transaction fails")
    nothing = await tenant.client.get("/v1/meters/tokens/query")
    assert nothing.json()["data"] == []
    answers = []
    for alone in (batch(event(id="b", tokens=2), event(id="d", tokens=8)), first, second):
        async with db.transaction() as session:
            [result] = await ingest.ingest(session, tenant.id, [alone])
            answers.append((result.accepted, result.duplicates))
    assert answers == [(2, 0), (1, 1), (1, 0)]
    assert await total(tenant) == 1 + 2 + 4 + 8


async def test_a_fraction_with_more_digits_than_a_double_holds_is_counted_exactly(tenant):
    """1234567890123.456789 has 19 significant digits, more than a double keeps: it is summed,
    stored and listed back as sent, not rounded to 1234567890123.4568."""
    import json
    from decimal import Decimal

    await tenant.client.post("/v1/meters", json=meter())
    body = (b'[{"specversion": "1.0", "id": "long", "source": "s", "type": "prompt", "subject": "u",'
            b' "data": {"tokens": 1234567890123.456789}},'
            b' {"specversion": "1.0", "id": "short", "source": "s", "type": "prompt", "subject": "u",'
            b' "data": {"tokens": 0.000001}}]')
    resp = await tenant.client.post("/v1/events", content=body, headers={"content-type": "application/json"})
    assert resp.json()["accepted"] == 2, resp.text
    query = await tenant.client.get("/v1/meters/tokens/query")
    assert json.loads(query.text, parse_float=Decimal)["data"][0]["value"] == Decimal("1234567890123.45679")
    openmeter = await tenant.client.get("/api/v1/meters/tokens/query")
    assert json.loads(openmeter.text, parse_float=Decimal)["data"][0]["value"] == Decimal("1234567890123.45679")
    for path in ("/v1/events", "/api/v1/events"):
        listed = json.loads((await tenant.client.get(path)).text, parse_float=Decimal)
        shown = [e.get("event", e) for e in (listed["items"] if isinstance(listed, dict) else listed)]
        assert {e["id"]: e["data"]["tokens"] for e in shown} == {
            "long": Decimal("1234567890123.456789"), "short": Decimal("0.000001")}, path


async def test_a_lago_event_with_more_digits_than_a_double_is_kept_exactly(tenant):
    """Lago's events endpoint reads numbers as the CloudEvents one does."""
    import json
    from decimal import Decimal

    body = (b'{"event": {"transaction_id": "tx-long", "external_subscription_id": "sub-1",'
            b' "code": "prompt", "properties": {"tokens": 1234567890123.456789}}}')
    resp = await tenant.client.post("/lago/api/v1/events", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 200, resp.text
    shown = await tenant.client.get("/lago/api/v1/events/tx-long")
    assert json.loads(shown.text, parse_float=Decimal)["event"]["properties"]["tokens"] == Decimal(
        "1234567890123.456789")


async def test_a_meter_created_by_a_process_whose_clock_is_behind_counts_the_events_that_follow(tenant, db):
    """Another meter is created and one retired, both stamped in the past: ingest still sees the change."""
    at = "2026-05-01T10:00:00Z"
    await tenant.client.post("/v1/meters", json=meter("old", "COUNT"))
    await tenant.client.post("/v1/meters", json=meter("calls", "COUNT"))
    await tenant.client.post("/v1/events", json=[event(time=at)])  # this process now holds the meters as they are
    earlier = utcnow() - timedelta(hours=1)
    async with db.transaction() as session:
        await meters.create(session, tenant.id, MeterCreate(**meter("late", "COUNT")), at=earlier)
        await meters.delete(session, tenant.id, "old", at=earlier)
    assert (await tenant.client.post("/v1/events", json=[event(time=at), event(time=at)])).json()["accepted"] == 2
    day = {"from": "2026-05-01T00:00:00Z", "to": "2026-05-02T00:00:00Z"}
    assert await total(tenant, "late", **day) == 3
