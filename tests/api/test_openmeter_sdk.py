"""The OpenMeter surface, driven by the official OpenMeter Python SDK against a real server.

Each test starts uvicorn on 127.0.0.1 in a thread with its own event loop and its own app
(the test loop's engine cannot be shared), on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import csv
import io
import socket
import sys
import threading
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import openmeter
import pytest
import uvicorn
from corehttp.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from openmeter.aio import Client as AsyncClient
from openmeter.models import (
    CustomerCreate,
    CustomerUsageAttribution,
    Event,
    FeatureCreateInputs,
    MeterCreate,
    MeterQueryRequest,
    MeterUpdate,
    SubjectUpsert,
)
from tests.conftest import run_blocking

from allotment.api.app import create_app
from allotment.config import Settings
from allotment.db import Database
from allotment.tenancy import service as tenancy
from allotment.types import utcnow

T0 = datetime(2024, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
MICROSECOND = timedelta(microseconds=1)


# --- a live server -----------------------------------------------------------------------------


class _ServerThread(threading.Thread):
    """uvicorn on an already listening socket: requests queue until it accepts them."""

    def __init__(self, settings: Settings, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.settings, self.sock = settings, sock
        self.created = threading.Event()
        self.server: uvicorn.Server | None = None

    def run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        try:
            app = create_app(self.settings)  # an engine of this thread's loop
            # A client that keeps a request open must not hold the shutdown (and the test) up.
            config = uvicorn.Config(app, log_level="warning", ws="none", access_log=False,
                                    timeout_graceful_shutdown=5)
            self.server = uvicorn.Server(config)
        finally:
            self.created.set()
        await self.server.serve(sockets=[self.sock])

    def where(self) -> str:
        """What the server thread and its tasks are doing (for a shutdown that hangs)."""
        frame = sys._current_frames().get(self.ident or 0)
        out = ["".join(traceback.format_stack(frame)) if frame else "(thread gone)"]
        for task in asyncio.all_tasks(self.loop):
            out.append(f"{task!r}\n" + "".join(traceback.format_list(
                [(f.f_code.co_filename, f.f_lineno, f.f_code.co_name, "") for f in task.get_stack()])))
        return "\n".join(out)

    def stop(self) -> None:
        self.created.wait(10)
        if self.server is not None:
            self.server.should_exit = True
        self.join(30)


@dataclass
class Live:
    url: str
    keys: dict[str, str]  # scope -> secret

    def client(self, scope: str = "admin", *, token: str | None = None) -> openmeter.Client:
        return openmeter.Client(
            endpoint=self.url, token=token or self.keys[scope], retry_total=0, read_timeout=30
        )


async def _tenant_keys(settings: Settings) -> dict[str, str]:
    db = Database(settings)
    try:
        async with db.transaction() as session:
            tenant = await tenancy.create_tenant(session, "openmeter-user", at=utcnow())
            keys = {}
            for scope in ("admin", "read", "ingest"):
                _, keys[scope] = await tenancy.create_key(
                    session, tenant.id, scope=scope, name=scope, at=utcnow()
                )
        return keys
    finally:
        await db.dispose()


@pytest.fixture
def live(settings: Settings) -> Iterator[Live]:
    keys = run_blocking(_tenant_keys(settings))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    thread = _ServerThread(settings, sock)
    thread.start()
    try:
        yield Live(f"http://127.0.0.1:{sock.getsockname()[1]}", keys)
    finally:
        thread.stop()
        sock.close()
    assert not thread.is_alive(), "the server did not stop:\n" + thread.where()


@pytest.fixture
def om(live: Live) -> Iterator[openmeter.Client]:
    with live.client() as client:
        yield client


# --- builders ----------------------------------------------------------------------------------


def prompt(
    subject: str = "cust-1",
    tokens: float = 1,
    model: str = "gpt-4",
    *,
    at: datetime = T0,
    id: str | None = None,
) -> Event:
    return Event(
        id=id or uuid.uuid4().hex,
        source="app",
        specversion="1.0",
        type="prompt",
        subject=subject,
        time=at,
        data={"tokens": tokens, "model": model},
    )


def tokens_meter(om: openmeter.Client, slug: str = "tokens_total") -> Any:
    return om.meters.create(
        MeterCreate(
            slug=slug,
            name="Tokens",
            aggregation="SUM",
            event_type="prompt",
            value_property="$.tokens",
            group_by={"model": "$.model"},
        )
    )


def by(rows: Any, *names: str) -> dict[Any, float]:
    """Query rows keyed by the named groups (`subject` and `customer_id` are the reserved ones)."""

    def part(row: Any, name: str) -> Any:
        return {"subject": row.subject, "customer_id": row.customer_id}.get(
            name, row.group_by.get(name)
        )

    keys = [tuple(part(r, n) for n in names) for r in rows]
    return {(k[0] if len(k) == 1 else k): r.value for k, r in zip(keys, rows, strict=True)}


# --- events and queries ------------------------------------------------------------------------


def test_ingested_events_are_summed_per_model_and_subject(om):
    """Every ingest method counts, and groupBy splits the total by model and by subject."""
    tokens_meter(om)
    om.events.ingest_event(prompt("cust-1", 5, "gpt-4"))
    om.events.ingest_events([prompt("cust-1", 7, "gpt-3"), prompt("cust-2", 11, "gpt-4")])
    om.events.ingest_events_json([prompt("cust-2", 2.5, "gpt-3")])
    window = {"from_parameter": T0, "to": T0 + DAY}

    total = om.meters.query_json("tokens_total", **window)
    assert [r.value for r in total.data] == [25.5]
    assert total.data[0].group_by == {} and total.data[0].subject is None
    assert by(om.meters.query_json("tokens_total", group_by=["model"], **window).data, "model") == {
        "gpt-4": 16,
        "gpt-3": 9.5,
    }
    assert by(
        om.meters.query_json("tokens_total", group_by=["subject", "model"], **window).data,
        "subject",
        "model",
    ) == {
        ("cust-1", "gpt-4"): 5,
        ("cust-1", "gpt-3"): 7,
        ("cust-2", "gpt-4"): 11,
        ("cust-2", "gpt-3"): 2.5,
    }
    only = om.meters.query_json("tokens_total", subject=["cust-2"], **window)
    assert [r.value for r in only.data] == [13.5]


def test_resent_event_counts_once(om):
    """The SDK may re-send after an error: the same source and id is acknowledged, not counted."""
    tokens_meter(om)
    event = prompt(tokens=10, id="evt-1")
    om.events.ingest_event(event)
    om.events.ingest_event(event)
    om.events.ingest_events([event, prompt(tokens=1, id="evt-2")])
    assert [r.value for r in om.meters.query_json("tokens_total", from_parameter=T0).data] == [11]


def test_hour_windows_list_only_hours_with_usage(om):
    tokens_meter(om)
    om.events.ingest_events(
        [
            prompt(tokens=1, at=T0 + timedelta(minutes=5)),
            prompt(tokens=2, at=T0 + timedelta(minutes=55)),
            prompt(tokens=4, at=T0 + timedelta(hours=3, minutes=1)),
        ]
    )
    result = om.meters.query_json(
        "tokens_total", from_parameter=T0, to=T0 + DAY, window_size="HOUR"
    )
    assert result.window_size == "HOUR"
    assert [(r.window_start, r.window_end, r.value) for r in result.data] == [
        (T0, T0 + timedelta(hours=1), 3),
        (T0 + timedelta(hours=3), T0 + timedelta(hours=4), 4),
    ]


def test_day_windows_follow_the_window_time_zone(om):
    """In Budapest (UTC+1 in January) 22:30Z is still Jan 1 and 23:30Z is already Jan 2."""
    tokens_meter(om)
    om.events.ingest_events(
        [
            prompt(tokens=1, at=T0 + timedelta(hours=22, minutes=30)),
            prompt(tokens=2, at=T0 + timedelta(hours=23, minutes=30)),
        ]
    )
    budapest = om.meters.query_json(
        "tokens_total",
        from_parameter=T0 - DAY,
        to=T0 + 2 * DAY,
        window_size="DAY",
        window_time_zone="Europe/Budapest",
    )
    midnight = T0 - timedelta(hours=1)  # local midnight of Jan 1
    assert [(r.window_start, r.window_end, r.value) for r in budapest.data] == [
        (midnight, midnight + DAY, 1),
        (midnight + DAY, midnight + 2 * DAY, 2),
    ]
    utc = om.meters.query_json("tokens_total", from_parameter=T0, to=T0 + DAY, window_size="DAY")
    assert [(r.window_start, r.value) for r in utc.data] == [(T0, 3)]


def test_windows_are_whole_days_of_the_zone_even_from_utc_midnight(om):
    """From 00:00Z, a Budapest day still starts at 23:00Z the evening before; an event before
    `from` in that day is not counted."""
    tokens_meter(om)
    om.events.ingest_events(
        [prompt(tokens=1, at=T0 - timedelta(minutes=30)), prompt(tokens=2, at=T0 + timedelta(hours=10))]
    )
    result = om.meters.query_json(
        "tokens_total", from_parameter=T0, to=T0 + timedelta(hours=12), window_size="DAY",
        window_time_zone="Europe/Budapest",
    )
    midnight = T0 - timedelta(hours=1)
    assert [(r.window_start, r.window_end, r.value) for r in result.data] == [(midnight, midnight + DAY, 2)]
    month = om.meters.query_json(
        "tokens_total", from_parameter=T0 + timedelta(days=3), to=T0 + timedelta(days=5), window_size="MONTH"
    )
    assert month.data == []
    month = om.meters.query_json(
        "tokens_total", from_parameter=T0 + timedelta(hours=1), to=T0 + timedelta(days=5), window_size="MONTH"
    )
    assert [(r.window_start, r.window_end, r.value) for r in month.data] == [
        (T0, datetime(2024, 2, 1, tzinfo=UTC), 2)
    ]


def test_query_csv_answers_csv(om):
    """`query_csv` asks for text/csv on the query route and gets one row per window and group."""
    tokens_meter(om)
    om.events.ingest_events(
        [prompt("cust-1", 5, "gpt-4"), prompt("cust-2", 7, "gpt-3", at=T0 + timedelta(hours=2))]
    )
    text = om.meters.query_csv(
        "tokens_total", from_parameter=T0, to=T0 + DAY, window_size="HOUR", group_by=["subject", "model"]
    )
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["window_start"], r["window_end"], r["subject"], r["model"], float(r["value"])) for r in rows] == [
        ("2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z", "cust-1", "gpt-4", 5),
        ("2024-01-01T02:00:00Z", "2024-01-01T03:00:00Z", "cust-2", "gpt-3", 7),
    ]
    assert om.meters.query_json("tokens_total", from_parameter=T0).data[0].value == 12


def test_query_csv_post_answers_csv(om):
    tokens_meter(om)
    om.events.ingest_events([prompt("cust-1", 5), prompt("cust-2", 7)])
    rows = list(csv.DictReader(io.StringIO(om.meters.query_csv_post("tokens_total"))))
    assert [float(r["value"]) for r in rows] == [12]


def test_query_csv_by_customer_names_the_customer_id(om):
    tokens_meter(om)
    acme = om.customers.create(
        CustomerCreate(
            name="ACME", key="acme", usage_attribution=CustomerUsageAttribution(subject_keys=["cust-1"])
        )
    )
    om.events.ingest_events([prompt("cust-1", 5), prompt("stranger", 1)])
    text = om.meters.query_csv("tokens_total", from_parameter=T0, to=T0 + DAY, group_by=["customer_id"])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sorted((r["customer_id"], float(r["value"])) for r in rows) == [("", 1), (acme.id, 5)]


def test_without_window_size_the_window_is_from_to(om):
    tokens_meter(om)
    om.events.ingest_event(prompt(tokens=3, at=T0 + timedelta(hours=2)))
    start, end = T0 + timedelta(minutes=30), T0 + timedelta(hours=5, seconds=7)
    result = om.meters.query_json("tokens_total", from_parameter=start, to=end)
    assert result.window_size is None and result.from_property == start and result.to == end
    assert [(r.window_start, r.window_end, r.value) for r in result.data] == [(start, end, 3)]


def test_filter_group_by_as_the_sdk_sends_it(om, live):
    """The SDK sends `{'model': 'gpt-4'}` (a Python repr); JSON and `filterGroupBy[model]` work too."""
    tokens_meter(om)
    om.events.ingest_events(
        [prompt(tokens=5, model="gpt-4"), prompt(tokens=7, model="gpt 3.5/turbo")]
    )
    sdk = om.meters.query_json(
        "tokens_total", from_parameter=T0, filter_group_by={"model": "gpt 3.5/turbo"}
    )
    assert [r.value for r in sdk.data] == [7]
    url = f"{live.url}/api/v1/meters/tokens_total/query"
    headers = {"Authorization": f"Bearer {live.keys['read']}"}
    for params in ({"filterGroupBy": '{"model": "gpt-4"}'}, {"filterGroupBy[model]": "gpt-4"}):
        resp = httpx.get(url, params={"from": "2024-01-01T00:00:00Z", **params}, headers=headers)
        assert resp.status_code == 200, resp.text
        assert [row["value"] for row in resp.json()["data"]] == [5]


def test_query_with_a_post_body(om):
    tokens_meter(om)
    om.events.ingest_events(
        [
            prompt(tokens=1, model="gpt-4"),
            prompt(tokens=2, model="gpt-3"),
            prompt(tokens=4, model="claude", at=T0 + DAY),
        ]
    )
    result = om.meters.query(
        "tokens_total",
        MeterQueryRequest(
            window_size="DAY",
            from_property=T0,
            to=T0 + 2 * DAY,
            group_by=["model"],
            filter_group_by={"model": ["gpt-4", "claude"]},
        ),
    )
    assert [(r.window_start, r.group_by["model"], r.value) for r in result.data] == [
        (T0, "gpt-4", 1),
        (T0 + DAY, "claude", 4),
    ]
    plain = om.meters.query("tokens_total", {"from": "2024-01-01T00:00:00Z", "windowSize": None})
    assert [r.value for r in plain.data] == [7]


def test_customer_filter_and_group_use_customer_ids(om):
    """`customer_id` groups by the customer owning each subject, answered with its id."""
    tokens_meter(om)
    acme = om.customers.create(
        CustomerCreate(
            name="ACME",
            key="acme",
            usage_attribution=CustomerUsageAttribution(subject_keys=["cust-1", "cust-2"]),
        )
    )
    om.events.ingest_events([prompt("cust-1", 1), prompt("cust-2", 2), prompt("stranger", 4)])
    grouped = om.meters.query_json("tokens_total", from_parameter=T0, group_by=["customer_id"])
    assert by(grouped.data, "customer_id") == {acme.id: 3, None: 4}
    filtered = om.meters.query_json("tokens_total", from_parameter=T0, filter_customer_id=[acme.id])
    assert [r.value for r in filtered.data] == [3]


def test_a_subject_filter_also_groups_by_subject(om):
    """As in OpenMeter, `subject` both filters and groups: one row per named subject, GET or POST."""
    tokens_meter(om)
    om.events.ingest_events([prompt("cust-1", 1), prompt("cust-2", 2), prompt("cust-1", 4), prompt("cust-3", 8)])
    rows = om.meters.query_json("tokens_total", from_parameter=T0, subject=["cust-1", "cust-2"]).data
    assert by(rows, "subject") == {"cust-1": 5, "cust-2": 2}
    posted = om.meters.query("tokens_total", MeterQueryRequest(from_property=T0, subject=["cust-2"]))
    assert by(posted.data, "subject") == {"cust-2": 2}


def test_a_customer_filter_also_groups_by_customer(om):
    """As in OpenMeter, `filterCustomerId` both filters and groups: each row names its customer."""
    tokens_meter(om)
    acme = om.customers.create(CustomerCreate(
        name="ACME", key="acme", usage_attribution=CustomerUsageAttribution(subject_keys=["cust-1"])))
    globex = om.customers.create(CustomerCreate(
        name="Globex", key="globex", usage_attribution=CustomerUsageAttribution(subject_keys=["cust-2"])))
    om.events.ingest_events([prompt("cust-1", 1), prompt("cust-2", 2), prompt("stranger", 4)])
    rows = om.meters.query_json("tokens_total", from_parameter=T0, filter_customer_id=[acme.id, globex.id]).data
    assert by(rows, "customer_id") == {acme.id: 1, globex.id: 2}


def test_a_group_filter_on_a_group_the_meter_lacks_is_a_400_naming_filter_group_by(om):
    tokens_meter(om)
    with pytest.raises(HttpResponseError) as err:
        om.meters.query_json("tokens_total", filter_group_by={"region": "eu"})
    assert err.value.status_code == 400
    assert [e["field"] for e in err.value.response.json()["errors"]] == ["filterGroupBy.region"]


def test_events_list_shows_what_was_ingested(om):
    acme = om.customers.create(
        {"name": "ACME", "key": "acme", "usageAttribution": {"subjectKeys": ["cust-1"]}}
    )
    om.events.ingest_events([prompt("cust-1", 5, id="a"), prompt("cust-2", 6, id="b")])
    events = om.events.list(from_parameter=T0, limit=10)
    assert sorted(e.event.id for e in events) == ["a", "b"]
    mine = om.events.list(subject="cust-1")
    assert [(e.event.id, e.event.data["tokens"], e.customer_id) for e in mine] == [
        ("a", 5, acme.id)
    ]
    assert mine[0].event.time == T0 and mine[0].ingested_at is not None
    assert [e.event.id for e in om.events.list(customer_id=[acme.id])] == ["a"]


def test_events_list_bounds_are_inclusive(om):
    """An event exactly at `to` (or at `from`) is listed, as OpenMeter's spec says."""
    om.events.ingest_events([prompt(id="start", at=T0), prompt(id="end", at=T0 + HOUR)])
    listed = om.events.list(from_parameter=T0, to=T0 + HOUR)
    assert [e.event.id for e in listed] == ["end", "start"]
    assert [e.event.id for e in om.events.list(from_parameter=T0, to=T0 + HOUR - MICROSECOND)] == ["start"]


def test_events_list_of_an_unknown_customer_is_empty(om):
    """An unknown id in `customerId` matches nothing rather than being refused."""
    acme = om.customers.create(
        {"name": "ACME", "key": "acme", "usageAttribution": {"subjectKeys": ["cust-1"]}}
    )
    om.events.ingest_events([prompt("cust-1", id="a"), prompt("cust-2", id="b")])
    assert om.events.list(customer_id=["01J00000000000000000000000"]) == []
    both = om.events.list(customer_id=["01J00000000000000000000000", acme.id])
    assert [e.event.id for e in both] == ["a"]


def test_events_list_id_matches_part_of_an_event_id(om):
    """Case-sensitive, and found past the first `limit` events (the later pages are read)."""
    om.events.ingest_events([prompt(id="order-123-a"), prompt(id="order-456-b", at=T0 + HOUR)])
    assert [e.event.id for e in om.events.list(id="123")] == ["order-123-a"]
    assert [e.event.id for e in om.events.list(id="123", limit=1)] == ["order-123-a"]
    assert sorted(e.event.id for e in om.events.list(id="order-")) == ["order-123-a", "order-456-b"]
    assert om.events.list(id="ORDER") == []


def test_meter_query_of_an_unknown_customer_has_no_rows(om):
    """As with events: an unknown id in `filterCustomerId` matches nothing, not a 400."""
    tokens_meter(om)
    om.events.ingest_event(prompt("cust-1", 3))
    result = om.meters.query_json(
        "tokens_total", from_parameter=T0, filter_customer_id=["01J00000000000000000000000"]
    )
    assert result.data == []


def test_an_event_a_meter_cannot_read_is_stored_uncounted_with_its_validation_error(om):
    """As in OpenMeter: 204, the meter leaves the event out, and the listing says why; the
    other meters of its type still count it."""
    tokens_meter(om)
    om.meters.create(MeterCreate(slug="prompts", name="Prompts", aggregation="COUNT", event_type="prompt"))
    batch = [prompt(tokens=3, id="a"), prompt(tokens="lots", id="b"), prompt(tokens=4, id="c")]  # type: ignore[arg-type]
    for _ in range(2):  # a retry stores and counts nothing again
        om.events.ingest_events(batch)
    assert [r.value for r in om.meters.query_json("tokens_total", from_parameter=T0).data] == [7]
    assert [r.value for r in om.meters.query_json("prompts", from_parameter=T0).data] == [3]
    errors = {e.event.id: e.validation_error for e in om.events.list(from_parameter=T0)}
    assert errors["a"] is None and errors["c"] is None
    assert "data.tokens" in errors["b"] and "tokens_total" in errors["b"]


def test_an_event_that_is_not_a_cloudevent_is_a_400_naming_index_and_field(om):
    """The good events of the batch are stored; sending the batch again counts them once."""
    tokens_meter(om)
    no_subject = {"id": "x", "source": "s", "specversion": "1.0", "type": "prompt", "data": {"tokens": 9}}
    batch = [prompt(tokens=3, id="a"), no_subject, prompt(tokens=4, id="c")]
    for _ in range(2):
        with pytest.raises(HttpResponseError) as caught:
            om.events.ingest_events_json(batch)
        assert caught.value.status_code == 400
        assert "[1].subject" in caught.value.model.detail and "[0]" not in caught.value.model.detail
        assert "the other 2 stored" in caught.value.model.detail
    assert [r.value for r in om.meters.query_json("tokens_total", from_parameter=T0).data] == [7]


def test_ingest_events_json_with_a_dict_sends_no_body_and_is_refused(om):
    """A known SDK bug sends an empty body for a plain dict; that must be a clear 400."""
    with pytest.raises(HttpResponseError) as caught:
        om.events.ingest_events_json(
            {"id": "x", "source": "s", "specversion": "1.0", "type": "prompt", "subject": "u"}
        )
    assert caught.value.status_code == 400 and "empty" in caught.value.model.detail


# --- meters ------------------------------------------------------------------------------------


def test_meter_lifecycle(om):
    created = tokens_meter(om)
    assert (
        created.slug,
        created.event_type,
        created.value_property,
        created.group_by,
        created.aggregation,
    ) == ("tokens_total", "prompt", "$.tokens", {"model": "$.model"}, "SUM")
    assert created.created_at is not None and created.updated_at is not None
    om.meters.create({"slug": "calls", "aggregation": "COUNT", "eventType": "prompt"})
    assert [m.slug for m in om.meters.list()] == ["tokens_total", "calls"]
    assert om.meters.get("tokens_total").id == created.id == om.meters.get(created.id).id
    assert (
        om.meters.update(
            "tokens_total", {"name": "LLM tokens", "groupBy": {"model": "$.model"}}
        ).name
        == "LLM tokens"
    )
    described = om.meters.update("tokens_total", {"description": "per model"})  # no name: kept
    assert (described.name, described.description) == ("LLM tokens", "per model")
    om.meters.delete("calls")
    assert [m.slug for m in om.meters.list()] == ["tokens_total"]
    with pytest.raises(ResourceNotFoundError):
        om.meters.get("calls")


def test_meter_created_after_events_counts_them(om):
    om.events.ingest_event(prompt(tokens=9))
    tokens_meter(om)
    assert [r.value for r in om.meters.query_json("tokens_total", from_parameter=T0).data] == [9]


def test_meter_subjects_are_those_with_usage(om):
    tokens_meter(om)
    om.events.ingest_events(
        [prompt("b"), prompt("a"), prompt("a"), prompt("late", at=T0 + 3 * DAY)]
    )
    assert om.meters.list_subjects("tokens_total") == ["a", "b", "late"]
    assert om.meters.list_subjects("tokens_total", from_parameter=T0, to=T0 + DAY) == ["a", "b"]
    assert om.meters.list_group_by_values("tokens_total", "model") == ["gpt-4"]


def test_duplicate_meter_is_resource_exists(om):
    tokens_meter(om)
    with pytest.raises(ResourceExistsError):
        tokens_meter(om)


def regional(region: str, tokens: float, model: str = "gpt-4") -> Event:
    return Event(id=uuid.uuid4().hex, source="app", specversion="1.0", type="prompt", subject="cust-1",
                 time=T0, data={"tokens": tokens, "model": model, "region": region})


def test_meter_group_by_update_covers_events_ingested_before_it(om):
    """`meters.update` with a new groupBy regroups the history: a query by it counts earlier events."""
    tokens_meter(om)
    om.events.ingest_events([regional("eu", 5), regional("us", 7), regional("eu", 2.5, "gpt-3")])
    both = {"model": "$.model", "region": "$.region"}
    assert om.meters.update("tokens_total", MeterUpdate(name="Tokens", group_by=both)).group_by == both
    window = {"from_parameter": T0, "to": T0 + DAY}
    assert by(om.meters.query_json("tokens_total", group_by=["region"], **window).data, "region") == {
        "eu": 7.5,
        "us": 7,
    }
    om.events.ingest_event(regional("us", 1, "gpt-3"))
    assert by(
        om.meters.query_json("tokens_total", group_by=["model", "region"], **window).data, "model", "region"
    ) == {("gpt-4", "eu"): 5, ("gpt-4", "us"): 7, ("gpt-3", "eu"): 2.5, ("gpt-3", "us"): 1}


def test_meter_group_by_update_with_a_bad_jsonpath_is_a_400_naming_it(om):
    tokens_meter(om)
    with pytest.raises(HttpResponseError) as caught:
        om.meters.update("tokens_total", MeterUpdate(group_by={"model": "$.model", "region": "region"}))
    assert caught.value.status_code == 400
    assert caught.value.model.detail.startswith("groupBy.region"), caught.value.model.detail
    assert om.meters.get("tokens_total").group_by == {"model": "$.model"}


def test_meter_group_by_update_dropping_a_group_a_feature_filters_on_is_a_conflict(om, live):
    tokens_meter(om)
    om.features.create(
        FeatureCreateInputs(key="gpt4", name="GPT-4", meter_slug="tokens_total", meter_group_by_filters={"model": "gpt-4"})
    )
    resp = httpx.put(f"{live.url}/api/v1/meters/tokens_total", json={"groupBy": {"region": "$.region"}},
                     headers={"Authorization": f"Bearer {live.keys['admin']}"})
    assert resp.status_code == 409, resp.text
    assert [e["field"] for e in resp.json()["errors"]] == ["groupBy.model"]
    assert "'gpt4'" in resp.json()["detail"]
    with pytest.raises(ResourceExistsError):
        om.meters.update("tokens_total", MeterUpdate(group_by={}))


# --- subjects and customers --------------------------------------------------------------------


def test_subjects_upsert_list_get_delete(om):
    first = om.subjects.upsert(
        [SubjectUpsert(key="cust-1", display_name="C1", metadata={"tier": 1}), {"key": "cust-2"}]
    )
    assert [(s.key, s.display_name) for s in first] == [("cust-1", "C1"), ("cust-2", None)]
    again = om.subjects.upsert([{"key": "cust-1", "displayName": "Customer one"}])
    assert again[0].id == first[0].id and again[0].display_name == "Customer one"
    assert [s.key for s in om.subjects.list()] == ["cust-1", "cust-2"]
    assert om.subjects.get("cust-2").id == first[1].id
    om.subjects.delete("cust-2")
    with pytest.raises(ResourceNotFoundError):
        om.subjects.get("cust-2")
    assert [s.key for s in om.subjects.list()] == ["cust-1"]


def test_subject_keys_may_contain_a_slash(om):
    """The SDK sends `team/a` as `team%2Fa`, which reaches the router decoded."""
    om.subjects.upsert([{"key": "team/a", "displayName": "Team A"}])
    assert om.subjects.get("team/a").display_name == "Team A"
    om.subjects.delete("team/a")
    assert om.subjects.list() == []


def test_a_subject_only_seen_in_events_is_neither_listed_nor_found(om):
    """As in OpenMeter, events do not make subjects: list and get agree that there is none."""
    tokens_meter(om)
    om.events.ingest_event(prompt("only-in-events", 3))
    assert "only-in-events" not in [s.key for s in om.subjects.list()]
    with pytest.raises(ResourceNotFoundError):
        om.subjects.get("only-in-events")


def test_a_subject_is_found_by_the_id_the_list_gives(om):
    """`subjects.get` takes the id or the key, as OpenMeter's `subjectIdOrKey` does."""
    om.subjects.upsert([{"key": "cust-1", "displayName": "C1"}])
    listed = om.subjects.list()[0]
    assert om.subjects.get(listed.id).key == "cust-1"


def test_customer_lifecycle(om):
    created = om.customers.create(
        CustomerCreate(
            name="ACME",
            key="acme",
            currency="USD",
            primary_email="billing@acme.test",
            metadata={"tier": "gold"},
            usage_attribution=CustomerUsageAttribution(subject_keys=["cust-1"]),
        )
    )
    assert (
        created.key,
        created.name,
        created.currency,
        created.primary_email,
        created.metadata,
    ) == ("acme", "ACME", "USD", "billing@acme.test", {"tier": "gold"})
    assert created.usage_attribution.subject_keys == ["cust-1"]
    assert om.customers.get("acme").id == created.id == om.customers.get(created.id).id
    om.customers.create({"name": "Globex", "key": "globex"})
    page = om.customers.list(page=1, page_size=10)
    assert (page.total_count, page.page, page.page_size) == (2, 1, 10)
    assert [c.key for c in page.items_property] == ["acme", "globex"]
    assert [c.key for c in om.customers.list(subject="cust-1").items_property] == ["acme"]
    assert [c.key for c in om.customers.list(name="glob").items_property] == ["globex"]
    assert [c.key for c in om.customers.list(order="DESC", order_by="name").items_property] == [
        "globex",
        "acme",
    ]
    updated = om.customers.update(
        "acme", {"name": "ACME Corp", "usageAttribution": {"subjectKeys": ["cust-1", "cust-9"]}}
    )
    assert updated.name == "ACME Corp" and updated.usage_attribution.subject_keys == [
        "cust-1",
        "cust-9",
    ]
    renamed = om.customers.update("acme", {"name": "ACME Inc"})  # no usageAttribution: kept
    assert (renamed.name, renamed.usage_attribution.subject_keys) == ("ACME Inc", ["cust-1", "cust-9"])
    om.customers.delete("acme")
    with pytest.raises(ResourceNotFoundError):
        om.customers.get("acme")
    assert om.customers.list().total_count == 1


def test_customer_key_and_subject_filters_match_part_of_them_ignoring_case(om):
    """As the SDK documents for every customer list filter: a case-insensitive partial match."""
    om.customers.create({"name": "ACME", "key": "acme-corp", "usageAttribution": {"subjectKeys": ["Acme-Key-1"]}})
    om.customers.create({"name": "Globex", "key": "globex", "usageAttribution": {"subjectKeys": ["globex-key"]}})
    assert [c.key for c in om.customers.list(key="ACME").items_property] == ["acme-corp"]
    assert [c.key for c in om.customers.list(subject="key-1").items_property] == ["acme-corp"]
    assert [c.key for c in om.customers.list(subject="KEY").items_property] == ["acme-corp", "globex"]


def test_customer_refused_for_a_taken_subject_leaves_nothing_behind(om):
    """The 409 is answered after the unit of work is rolled back: no half-created customer."""
    om.customers.create(
        {"name": "ACME", "key": "acme", "usageAttribution": {"subjectKeys": ["cust-1"]}}
    )
    with pytest.raises(ResourceExistsError):
        om.customers.create(
            {"name": "Globex", "key": "globex", "usageAttribution": {"subjectKeys": ["cust-1"]}}
        )
    assert [c.key for c in om.customers.list().items_property] == ["acme"]


# --- errors and auth ---------------------------------------------------------------------------


def test_unknown_meter_is_resource_not_found(om):
    with pytest.raises(ResourceNotFoundError) as caught:
        om.meters.query_json("missing")
    assert caught.value.status_code == 404


def test_bad_token_is_client_authentication_error(live):
    with (
        live.client(token="alm_not-a-key") as client,
        pytest.raises(ClientAuthenticationError) as caught,
    ):
        client.meters.list()
    assert caught.value.status_code == 401 and caught.value.model.instance == "/api/v1/meters"


def test_scopes_are_the_native_ones(live, om):
    tokens_meter(om)
    with live.client("ingest") as ingest, live.client("read") as read:
        ingest.events.ingest_event(prompt(tokens=2))
        assert [
            r.value for r in read.meters.query_json("tokens_total", from_parameter=T0).data
        ] == [2]
        with pytest.raises(HttpResponseError) as caught:
            read.meters.create({"slug": "calls", "aggregation": "COUNT", "eventType": "prompt"})
    assert caught.value.status_code == 403


@pytest.mark.parametrize(
    "call, field",
    [
        (
            lambda om: om.meters.create(
                {
                    "slug": "x",
                    "aggregation": "MEDIAN",
                    "eventType": "prompt",
                    "valueProperty": "$.v",
                }
            ),
            "aggregation",
        ),
        (lambda om: om.meters.create({"aggregation": "SUM", "eventType": "prompt"}), "slug"),
        (
            lambda om: om.meters.query_json("tokens_total", window_time_zone="Mars/Olympus"),
            "windowTimeZone",
        ),
        (lambda om: om.meters.query_json("tokens_total", group_by=["region"]), "groupBy"),
        (lambda om: om.meters.query_json("tokens_total", from_parameter=T0, to=T0), "from"),
        (lambda om: om.customers.create({"name": "ACME", "currency": "dollars"}), "currency"),
    ],
)
def test_bad_request_is_a_400_problem_naming_the_field(om, call, field):
    tokens_meter(om)
    with pytest.raises(HttpResponseError) as caught:
        call(om)
    problem = caught.value.model
    assert caught.value.status_code == 400 and problem.status == 400
    assert problem.title == "Bad Request" and problem.instance.startswith("/api/v1/")
    assert problem.detail.startswith(field) or f" {field}" in problem.detail, problem.detail


def test_malformed_filter_group_by_is_a_400(om, live):
    tokens_meter(om)
    resp = httpx.get(
        f"{live.url}/api/v1/meters/tokens_total/query",
        params={"filterGroupBy": "{'model': "},
        headers={"Authorization": f"Bearer {live.keys['read']}"},
    )
    assert resp.status_code == 400 and resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["errors"][0]["field"] == "filterGroupBy"


# --- the async client --------------------------------------------------------------------------


async def test_async_client_ingests_and_queries(live):
    async with AsyncClient(endpoint=live.url, token=live.keys["admin"], retry_total=0) as client:
        await client.meters.create(
            {
                "slug": "tokens_total",
                "aggregation": "SUM",
                "eventType": "prompt",
                "valueProperty": "$.tokens",
                "groupBy": {"model": "$.model"},
            }
        )
        await client.events.ingest_events(
            [prompt(tokens=5, model="gpt 4"), prompt(tokens=6, model="gpt-3")]
        )
        result = await client.meters.query_json(
            "tokens_total",
            from_parameter=T0 - DAY,
            group_by=["model"],
            filter_group_by={"model": "gpt 4"},
            window_time_zone="Europe/Budapest",
            window_size="DAY",
        )
    assert [(r.group_by["model"], r.value, r.window_start) for r in result.data] == [
        ("gpt 4", 5, T0 - timedelta(hours=1))
    ]


# --- events, v2 listing ------------------------------------------------------------------------


def test_events_v2_list_pages_with_a_cursor_and_filters(om):
    """Every event once over the pages, newest arrival first; filters on subject, id and time.
    (The SDK sends `filter` with `json.dumps`, so it takes a plain dict with times as text.)"""
    om.events.ingest_events([prompt("cust-1", id=f"e-{i}", at=T0 + i * HOUR) for i in range(5)])
    om.events.ingest_events([prompt("cust-2", id="other", at=T0)])
    assert [e.event.id for e in om.events_v2.list(limit=2)] == ["other", "e-4", "e-3", "e-2", "e-1", "e-0"]
    window = {"$gte": (T0 + HOUR).isoformat(), "$lt": (T0 + 3 * HOUR).isoformat()}
    by_subject = om.events_v2.list(filter={"subject": {"$eq": "cust-1"}, "time": window})
    assert [e.event.id for e in by_subject] == ["e-2", "e-1"]
    liked = om.events_v2.list(filter={"id": {"$like": "e-%"}, "subject": {"$in": ["cust-1"]}})
    assert len(list(liked)) == 5
    one_at_a_time = om.events_v2.list(limit=1, filter={"id": {"$like": "e-%"}})
    assert [e.event.id for e in one_at_a_time] == ["e-4", "e-3", "e-2", "e-1", "e-0"]
    assert list(om.events_v2.list(filter={"id": {"$ne": "other"}, "type": {"$eq": "nope"}})) == []


def test_events_v2_list_refuses_an_operator_it_does_not_have_naming_it(live, om):
    resp = httpx.get(f"{live.url}/api/v2/events", params={"filter": '{"subject": {"$regex": "x"}}'},
                     headers={"Authorization": f"Bearer {live.keys['admin']}"})
    assert resp.status_code == 400 and "filter.subject.$regex" in resp.text
    resp = httpx.get(f"{live.url}/api/v2/events", params={"filter": "not json"},
                     headers={"Authorization": f"Bearer {live.keys['admin']}"})
    assert resp.status_code == 400 and "filter" in resp.text
