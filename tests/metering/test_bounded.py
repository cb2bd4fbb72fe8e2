"""Long group and UNIQUE_COUNT values: bounded key texts, folded alike on both backends."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.helpers import event, meter

from allotment import codec
from allotment.metering import queries
from allotment.metering.aggregation import CompiledMeter, parse_group_key
from allotment.metering.bounded import (
    DISTINCT_BYTES,
    GROUP_KEY_BYTES,
    MARK,
    MAX_GROUP_NAMES_CHARS,
    MAX_GROUPS,
    MIN_GROUP_VALUE_BYTES,
    distinct_form,
    group_value_budget,
    group_value_form,
    json_size,
)
from allotment.metering.folding import fold_pending

LONG = "x" * 1100
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=2000) | st.builds(
    lambda c, n: c * n, st.sampled_from(["a", "€", "😀", '"', "\x01"]), st.integers(0, 1500)
)


# --- the forms, pure ---------------------------------------------------------------------


@given(texts, st.integers(MIN_GROUP_VALUE_BYTES, GROUP_KEY_BYTES))
def test_group_value_form_fits_its_budget_and_is_stable(text: str, budget: int) -> None:
    """A group value's form fits the budget as JSON, and mapping the form again keeps it."""
    form = group_value_form(text, budget)
    assert json_size(form) <= budget
    assert group_value_form(form, budget) == form
    assert (form == text) is (json_size(text) <= budget)


@given(texts)
def test_distinct_form_fits_and_is_stable(text: str) -> None:
    """A UNIQUE_COUNT value's form fits DISTINCT_BYTES of UTF-8, and mapping it again keeps it."""
    form = distinct_form(text)
    assert len(form.encode()) <= DISTINCT_BYTES
    assert distinct_form(form) == form
    assert (form == text) is (len(text.encode()) <= DISTINCT_BYTES)


def test_a_bounded_form_is_a_prefix_a_mark_and_a_digest_of_the_whole_text() -> None:
    """The form keeps a readable prefix and 128 bits of the SHA-256 of the full text."""
    text = "€" * 1024
    form = distinct_form(text)
    prefix, mark, digest = form[:-33], form[-33], form[-32:]
    assert mark == MARK and text.startswith(prefix) and prefix
    assert digest == hashlib.sha256(text.encode()).hexdigest()[:32]


@given(st.text(max_size=50), st.text(min_size=1, max_size=5))
def test_long_texts_with_a_common_prefix_stay_distinct(common: str, tail: str) -> None:
    """Texts sharing more than a budget's worth of prefix still map to different forms."""
    first = "p" * 3000 + common
    assert distinct_form(first) != distinct_form(first + tail)
    assert group_value_form(first, 100) != group_value_form(first + tail, 100)


def _widest_meter() -> CompiledMeter:
    names = [f"{chr(ord('a') + i)}" * (MAX_GROUP_NAMES_CHARS // MAX_GROUPS) for i in range(MAX_GROUPS)]
    return CompiledMeter.build(id="m", key="m", event_type="t", aggregation="COUNT", value_property=None,
                               group_by={name: f"$.{name}" for name in names}, filters=[])


def test_meters_within_the_group_limits_leave_each_value_its_minimum() -> None:
    """The most groups, with the longest names allowed, still leave room for a prefix and digest."""
    assert group_value_budget(_widest_meter().group_names) >= MIN_GROUP_VALUE_BYTES


@pytest.mark.parametrize("value", ["€" * 1024, "\x01" * 2000, "a" * 5000, {"nested": ["😀" * 900]}])
def test_a_group_key_of_long_values_stays_within_its_budget(value: Any) -> None:
    """However long the values, the JSON of all of a meter's group values stays within GROUP_KEY_BYTES."""
    compiled = _widest_meter()
    contribution = compiled.contribution(dict.fromkeys(compiled.group_names, value), 0)
    assert contribution is not None
    assert len(contribution.group_key.encode()) <= GROUP_KEY_BYTES
    assert set(parse_group_key(contribution.group_key)) == set(compiled.group_names)


# --- through the service, on both backends -----------------------------------------------


def count_meter(key: str, **extra: Any) -> dict[str, Any]:
    return meter(key, "COUNT", event_type="T", group_by={"g": "$.g"}, **extra)


async def grouped(tenant, key, **params):  # type: ignore[no-untyped-def]
    resp = await tenant.client.get(f"/v1/meters/{key}/query", params={"group_by": "g", **params})
    assert resp.status_code == 200, resp.text
    return [(row["group_by"]["g"], row["value"]) for row in resp.json()["data"]]


async def send(tenant, *events):  # type: ignore[no-untyped-def]
    resp = await tenant.client.post("/v1/events", json=list(events))
    assert resp.status_code == 200 and resp.json()["accepted"] == len(events), resp.text


async def fold_all(db) -> None:  # type: ignore[no-untyped-def]
    stuck: set[int] = set()
    async with db.transaction() as session:
        await fold_pending(session, stuck=stuck)
    assert stuck == set()


async def journal(db, tenant_id):  # type: ignore[no-untyped-def]
    async with db.transaction(readonly=True) as session:
        return await queries.pending_journal(session, tenant_id)


async def test_a_long_group_value_counts_alike_before_and_after_backfill(tenant, db):
    """A 1,100-character group value is counted and grouped, by a meter made before the event
    and by one made after it (backfill), with the same answer."""
    assert (await tenant.client.post("/v1/meters", json=count_meter("before"))).status_code == 201
    await send(tenant, event("s", "T", g=LONG), event("s", "T", g=LONG), event("s", "T", g="short"))
    await fold_all(db)
    after = await tenant.client.post("/v1/meters", json=count_meter("after"))
    assert after.status_code == 201, after.text
    expected = sorted([(group_value_form(LONG, group_value_budget(["g"])), 2), ("short", 1)])
    assert sorted(await grouped(tenant, "before")) == expected
    assert sorted(await grouped(tenant, "after")) == expected


async def test_a_meter_made_after_an_unfolded_long_value_is_created(tenant):
    """Backfill of a long group value, still in the journal, creates the meter (no 500)."""
    await tenant.client.post("/v1/meters", json=count_meter("before"))
    await send(tenant, event("s", "T", g=LONG))
    for path in ("/v1/meters", "/api/v1/meters"):
        body = count_meter("again") if path == "/v1/meters" else {
            "slug": "compat", "aggregation": "COUNT", "eventType": "T", "groupBy": {"g": "$.g"}}
        resp = await tenant.client.post(path, json=body)
        assert resp.status_code == 201, resp.text
    assert [v for _, v in await grouped(tenant, "again")] == [1]


async def test_multibyte_values_within_the_column_lengths_fold(tenant, db):
    """1,024 three-byte characters, with a subject of 256 four-byte ones, fold (PostgreSQL's
    index entries are bounded in bytes, not characters)."""
    await tenant.client.post("/v1/meters", json=count_meter("c"))
    await tenant.client.post("/v1/meters", json=meter("u", "UNIQUE_COUNT", event_type="T", value_property="$.u",
                                                      group_by={"g": "$.g"}))
    subject = "😀" * 256
    await send(tenant, event(subject, "T", g="€" * 1024, u="€" * 1024))
    await fold_all(db)
    assert await journal(db, tenant.id) == []
    assert [v for _, v in await grouped(tenant, "c")] == [1]
    assert [v for _, v in await grouped(tenant, "u")] == [1]


async def test_unique_count_of_long_values_stays_exact(tenant, db):
    """Two 3,000-character values sharing 2,000 characters count as 2; one sent twice as 1."""
    await tenant.client.post("/v1/meters", json=meter("u", "UNIQUE_COUNT", event_type="T", value_property="$.u"))
    common = "c" * 2000
    first, second = common + "a" * 1000, common + "b" * 1000
    await send(tenant, event("s", "T", u=first), event("s", "T", u=second), event("s", "T", u=first))
    unfolded = (await tenant.client.get("/v1/meters/u/query")).json()["data"][0]["value"]
    await fold_all(db)
    folded = (await tenant.client.get("/v1/meters/u/query")).json()["data"][0]["value"]
    later = await tenant.client.post(
        "/v1/meters", json=meter("u2", "UNIQUE_COUNT", event_type="T", value_property="$.u"))
    assert later.status_code == 201, later.text
    backfilled = (await tenant.client.get("/v1/meters/u2/query")).json()["data"][0]["value"]
    assert (unfolded, folded, backfilled) == (2, 2, 2)


async def test_filtering_by_a_full_long_value_finds_its_rows(tenant, db):
    """A group filter naming the whole long value (or its form as shown) matches its rows,
    on the native query (GET and POST) and on OpenMeter's `filterGroupBy`."""
    await tenant.client.post("/v1/meters", json=count_meter("c"))
    await send(tenant, event("s", "T", g=LONG), event("s", "T", g="short"))
    await fold_all(db)
    form = group_value_form(LONG, group_value_budget(["g"]))
    for value in (LONG, form):
        got = await grouped(tenant, "c", filter_group_by=f"g:{value}")
        assert got == [(form, 1)]
        body = {"group_by": ["g"], "filter_group_by": {"g": [value]}}
        resp = await tenant.client.post("/v1/meters/c/query", json=body)
        assert [(r["group_by"]["g"], r["value"]) for r in resp.json()["data"]] == [(form, 1)], resp.text
        compat = await tenant.client.get("/api/v1/meters/c/query", params={"filterGroupBy[g]": value})
        assert compat.status_code == 200, compat.text
        assert [r["value"] for r in compat.json()["data"]] == [1]


async def test_the_folder_leaves_no_long_value_in_the_journal(tenant, db):
    """Long group values and UNIQUE_COUNT values fold: nothing stays in the journal."""
    await tenant.client.post("/v1/meters", json=count_meter("c"))
    await tenant.client.post("/v1/meters", json=meter("u", "UNIQUE_COUNT", event_type="T", value_property="$.u",
                                                      group_by={"g": "$.g"}))
    await send(tenant, event("s", "T", g=LONG, u="u" * 3000), event("s", "T", g={"obj": LONG}, u=7))
    assert len(await journal(db, tenant.id)) == 1
    await fold_all(db)
    assert await journal(db, tenant.id) == []
    assert sum(v for _, v in await grouped(tenant, "c")) == 2


@pytest.mark.parametrize(
    ("group_by", "detail"),
    [
        ({f"g{i}": "$.g" for i in range(MAX_GROUPS + 1)}, f"at most {MAX_GROUPS} group names"),
        ({f"{c}" * 60: "$.g" for c in "abc"}, f"at most {MAX_GROUP_NAMES_CHARS} characters together"),
    ],
)
async def test_a_meter_with_too_many_group_names_is_refused(tenant, group_by, detail):
    """Group names that would leave too little room for each value are refused with a 422."""
    resp = await tenant.client.post("/v1/meters", json=count_meter("c") | {"group_by": group_by})
    assert resp.status_code == 422, resp.text
    assert detail in codec.dumps(resp.json())
