"""Bad input gets a 4xx problem naming the field and the reason; never a 500."""

from __future__ import annotations

import pytest
from tests.helpers import event, meter


def assert_problem(resp, status, field=None):  # type: ignore[no-untyped-def]
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["status"] == status and body["detail"] and body["type"] and body["title"], body
    if field is not None:
        assert field in [e["field"] for e in body.get("errors", [])], body


async def test_meter_without_value_property_for_sum(tenant):
    body = meter()
    del body["value_property"]
    assert_problem(await tenant.client.post("/v1/meters", json=body), 422, "value_property")


async def test_meter_with_unknown_aggregation(tenant):
    assert_problem(await tenant.client.post("/v1/meters", json=meter(aggregation="MEDIAN")), 422, "aggregation")


async def test_meter_with_invalid_jsonpath(tenant):
    resp = await tenant.client.post("/v1/meters", json=meter(value_property="tokens"))
    assert_problem(resp, 422, "value_property")


async def test_meter_with_bad_key(tenant):
    assert_problem(await tenant.client.post("/v1/meters", json=meter(key="Bad Key!")), 422, "key")


async def test_meter_with_unknown_field(tenant):
    assert_problem(await tenant.client.post("/v1/meters", json={**meter(), "colour": "red"}), 422, "colour")


async def test_duplicate_meter_is_409(tenant):
    await tenant.client.post("/v1/meters", json=meter())
    assert_problem(await tenant.client.post("/v1/meters", json=meter()), 409)


async def test_meter_body_not_json(tenant):
    resp = await tenant.client.post("/v1/meters", content=b"{nope", headers={"content-type": "application/json"})
    assert_problem(resp, 400)


async def test_query_unknown_meter_is_404(tenant):
    resp = await tenant.client.get("/v1/meters/nope/query")
    assert_problem(resp, 404)
    assert resp.json()["type"] == "meter_not_found"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"window_size": "WEEKLY"}, "window_size"),
        ({"window_time_zone": "Mars/Olympus"}, "window_time_zone"),
        ({"from": "yesterday"}, "from"),
        ({"group_by": "colour"}, "group_by"),
        ({"filter_group_by": "model"}, "filter_group_by"),
        ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),
        ({"window_size": "MINUTE", "from": "2000-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "window_size"),
    ],
)
async def test_bad_query_parameters(tenant, params, field):
    await tenant.client.post("/v1/meters", json=meter(group_by={"model": "$.model"}))
    assert_problem(await tenant.client.get("/v1/meters/tokens/query", params=params), 422, field)


async def test_customer_subject_taken_by_another_customer_is_409(tenant):
    await tenant.client.post("/v1/customers", json={"key": "a", "name": "A", "subject_keys": ["s1"]})
    resp = await tenant.client.post("/v1/customers", json={"key": "b", "name": "B", "subject_keys": ["s1"]})
    assert_problem(resp, 409)
    assert "'a'" in resp.json()["detail"]


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_an_empty_or_overlong_subject_key_is_a_422_naming_its_place(tenant, method):
    """The field named is the bad key's place in the request, and the schema states the bounds."""
    await tenant.client.post("/v1/customers", json={"key": "a", "name": "A"})
    path, body = ("/v1/customers", {"key": "b", "name": "B"}) if method == "POST" else ("/v1/customers/a", {})
    for keys, field in ((["z", "a", ""], "subject_keys[2]"), (["s" * 257, "b"], "subject_keys[0]")):
        resp = await tenant.client.request(method, path, json={**body, "subject_keys": keys})
        assert_problem(resp, 422, field)
    schema = (await tenant.client.get("/openapi.json")).json()["components"]["schemas"]
    items = schema["CustomerCreate"]["properties"]["subject_keys"]["items"]
    assert (items["minLength"], items["maxLength"]) == (1, 256)


async def test_customer_missing_name(tenant):
    assert_problem(await tenant.client.post("/v1/customers", json={"key": "a"}), 422, "name")


async def test_bad_cursor_is_400(tenant):
    assert_problem(await tenant.client.get("/v1/meters", params={"cursor": "%%%"}), 400)


async def test_limit_out_of_range(tenant):
    assert_problem(await tenant.client.get("/v1/meters", params={"limit": 5000}), 422, "limit")


async def test_event_batch_of_non_objects(tenant):
    resp = await tenant.client.post("/v1/events", json=[1, "two", None])
    assert_problem(resp, 422)
    assert [e["field"] for e in resp.json()["errors"]] == ["[0]", "[1]", "[2]"]


async def test_event_body_is_a_json_string(tenant):
    assert_problem(await tenant.client.post("/v1/events", json="hello"), 400)


async def test_event_with_huge_id_is_rejected(tenant):
    resp = await tenant.client.post("/v1/events", json=[event(id="x" * 300)])
    assert_problem(resp, 422, "[0].id")


async def test_event_value_with_too_many_decimals(tenant):
    await tenant.client.post("/v1/meters", json=meter())
    resp = await tenant.client.post("/v1/events", json=[event(tokens=0.1234567), event(tokens=1)])
    assert resp.status_code == 200
    assert resp.json()["errors"] == [{"index": 0, "field": "data.tokens", "message": "has more than 6 decimal places (meter 'tokens')"}]


async def test_unknown_route_is_problem_404(tenant):
    assert_problem(await tenant.client.get("/v1/nothing-here"), 404)


async def test_body_too_large_is_413(tenant):
    resp = await tenant.client.post("/v1/events", content=b"[" + b" " * (21 * 1024 * 1024) + b"]")
    assert_problem(resp, 413)


@pytest.mark.parametrize(
    ("path", "field"),
    [("/v1/customers/a%00b", "path"), ("/v1/events?subject=a%00", "subject"), ("/api/v1/meters/a%00", "path"),
     ("/v1/meters/x/query?subject=%00", "subject")],
)
async def test_nul_in_a_path_or_query_is_400_naming_where_on_every_backend(tenant, path, field):
    """No key, name or filter may hold NUL (PostgreSQL text cannot): 400 on both backends."""
    assert_problem(await tenant.client.get(path), 400, field)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"customer": "a\u0000", "feature": "f"}, "customer"),
        ({"customer": "a", "feature": "f", "idempotency_key": "k\u0000"}, "idempotency_key"),
    ],
)
async def test_nul_in_a_check_is_refused_by_field(tenant, body, field):
    assert_problem(await tenant.client.post("/v1/check", json=body), 422, field)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/customers", {"key": "acme", "name": "a\u0000b"}, "name"),
        ("/v1/customers", {"key": "acme", "name": "x", "subject_keys": ["s\u0000"]}, "subject_keys[0]"),
        ("/v1/customers", {"key": "acme", "name": "x", "metadata": {"deep": [{"k\u0000": 1}]}}, "metadata.deep[0].k\u0000"),
        ("/v1/webhook-endpoints", {"url": "https://example.com/h\u0000"}, "url"),
        ("/api/v1/subjects", [{"key": "ok"}, {"key": "a\u0000b"}], "[1].key"),
    ],
)
async def test_nul_in_a_stored_field_is_refused_by_field_on_every_backend(tenant, path, body, field):
    """SQLite could store it and PostgreSQL cannot: both refuse it, naming the field."""
    resp = await tenant.client.post(path, json=body)
    assert resp.status_code in (400, 422), resp.text
    assert field in [e["field"] for e in resp.json()["errors"]], resp.text
    assert "NUL" in resp.json()["detail"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"key": "acme", "name": "x", "metadata": {"a": "\\ud800"}}',  # an unpaired surrogate
        b'{"key": "acme", "name": "x", "metadata": {"a": NaN}}',
        b'{"key": "acme", "name": "x", "metadata": {"a": Infinity}}',
        b'{"key": "acme", "name": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ],
)
@pytest.mark.parametrize("path", ["/v1/customers", "/api/v1/customers"])
async def test_json_no_database_can_store_is_a_400_naming_the_body(tenant, raw, path):
    """Python's parser takes NaN, Infinity, unpaired surrogates; nothing may reach storage."""
    resp = await tenant.client.post(path, content=raw, headers={"content-type": "application/json"})
    assert_problem(resp, 400, "body")
    assert (await tenant.client.get("/v1/customers/acme")).status_code == 404


@pytest.mark.parametrize("path", ["/v1/events", "/api/v1/events"])
async def test_events_nested_past_the_stack_are_a_400(tenant, path):
    raw = b"[" * 10000 + b"]" * 10000
    resp = await tenant.client.post(path, content=raw, headers={"content-type": "application/json"})
    assert_problem(resp, 400, "body")
    assert "nested too deeply" in resp.json()["detail"]


@pytest.mark.parametrize("value", ["2026-12-01T00:00:00", "2026-12-01"])
@pytest.mark.parametrize("path", ["/v1/meters/tokens/query", "/v1/events", "/v1/reports/overdraft"])
async def test_a_time_without_offset_in_a_native_filter_is_a_422(tenant, path, value):
    """Native times carry their offset, as documented; the OpenMeter surface reads UTC."""
    await tenant.client.post("/v1/meters", json=meter())
    assert_problem(await tenant.client.get(path, params={"from": value}), 422, "from")


async def test_a_query_naming_more_subjects_than_allowed_is_a_422(tenant):
    await tenant.client.post("/v1/meters", json=meter())
    many = [f"s{i}" for i in range(1001)]
    assert_problem(await tenant.client.post("/v1/meters/tokens/query", json={"subject": many}), 422, "subject")
    resp = await tenant.client.post("/v1/meters/tokens/query", json={"subject": many[:1000]})
    assert resp.status_code == 200, resp.text


async def test_an_openmeter_subject_display_name_past_its_column_is_refused(tenant):
    resp = await tenant.client.post("/api/v1/subjects", json=[{"key": "dn", "displayName": "x" * 257}])
    assert resp.status_code == 400, resp.text
    assert (await tenant.client.post("/api/v1/subjects", json=[{"key": "dn", "displayName": "x" * 256}])).status_code == 200


async def test_a_garbage_cursor_names_the_cursor(tenant):
    assert_problem(await tenant.client.get("/v1/customers", params={"cursor": "%"}), 400, "cursor")


@pytest.mark.parametrize("path", ["/v1/check", "/v1/reservations"])
async def test_an_empty_idempotency_key_header_is_refused(tenant, path):
    body = {"customer": "c", "feature": "f", "quantity": 1, "ttl_seconds": 60}
    if path == "/v1/check":
        body = {"customer": "c", "feature": "f"}
    resp = await tenant.client.post(path, json=body, headers={"Idempotency-Key": ""})
    assert_problem(resp, 422, "Idempotency-Key")


async def test_idempotency_keys_in_body_and_header_must_agree(tenant):
    body = {"customer": "c", "feature": "f", "idempotency_key": "one"}
    resp = await tenant.client.post("/v1/check", json=body, headers={"Idempotency-Key": "two"})
    assert_problem(resp, 422, "idempotency_key")


async def test_an_integer_beyond_64_bits_in_event_data_is_listed_back_exactly(tenant):
    """JSON numbers have no size limit: what was accepted is shown as sent, never a 500."""
    huge = 2**70 + 1
    resp = await tenant.client.post("/v1/events", json=[event(id="big", serial=huge)])
    assert resp.status_code == 200 and resp.json()["accepted"] == 1, resp.text
    for path in ("/v1/events", "/api/v1/events"):
        listed = await tenant.client.get(path)
        assert listed.status_code == 200, listed.text
        body = listed.json()
        shown = [e.get("event", e) for e in (body["items"] if isinstance(body, dict) else body)]
        assert [e["data"]["serial"] for e in shown if e["id"] == "big"] == [huge]


@pytest.mark.parametrize(
    ("path", "status", "field"),
    [
        ("/api/v1/customers?page=10000000000000000000000000", 400, "page"),
        ("/api/v1/features?page=10000000000000000000000000", 400, "page"),
        ("/api/v1/notification/events?page=10000000000000000000000000", 400, "page"),
        ("/api/v1/notification/rules?page=10000000000000000000000000", 400, "page"),
        ("/api/v1/meters?page=10000000000000000000000000", 400, "page"),
        ("/api/v2/customers/acme/entitlements?page=10000000000000000000000000", 400, "page"),
        ("/v1/plans/pro?version=10000000000000000000000000", 422, "version"),
    ],
)
async def test_a_page_or_version_number_beyond_any_stored_one_is_a_4xx(tenant, path, status, field):
    assert_problem(await tenant.client.get(path), status, field)


async def test_a_number_beyond_a_double_rejects_its_event_and_keeps_the_others(tenant):
    """1e400 is JSON by grammar but no number a meter or a reader can hold: that event is
    rejected by index and field, the rest of the batch is stored."""
    body = (b'[{"specversion": "1.0", "id": "a", "source": "s", "type": "prompt", "subject": "u",'
            b' "data": {"tokens": 1e400}},'
            b' {"specversion": "1.0", "id": "b", "source": "s", "type": "prompt", "subject": "u",'
            b' "data": {"tokens": 2, "nested": [1, -1e999]}},'
            b' {"specversion": "1.0", "id": "c", "source": "s", "type": "prompt", "subject": "u",'
            b' "data": {"tokens": 3}}]')
    resp = await tenant.client.post("/v1/events", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 200, resp.text
    summary = resp.json()
    assert (summary["accepted"], summary["rejected"]) == (1, 2)
    assert [(e["index"], e["field"]) for e in summary["errors"]] == [(0, "data.tokens"), (1, "data.nested[1]")]
    listed = (await tenant.client.get("/v1/events")).json()["items"]
    assert [e["id"] for e in listed] == ["c"]


_FAR = "9999-12-31T23:59:59-14:00"  # a valid RFC 3339 time whose UTC instant is in year 10000


async def test_an_event_time_out_of_range_rejects_that_event(tenant):
    resp = await tenant.client.post("/v1/events", json=[
        event(id="late", time="9999-12-31T23:59:59Z"), event(id="early", time="0001-01-01T00:00:00+01:00"),
        event(id="fine", time="2026-11-20T10:00:00Z")])
    assert resp.status_code == 200, resp.text
    assert [(e["index"], e["field"]) for e in resp.json()["errors"]] == [(0, "time"), (1, "time")]
    om = await tenant.client.post("/api/v1/events", json=event(id="om", time="0001-01-01T00:00:00+01:00"),
                                  headers={"content-type": "application/cloudevents+json"})
    assert_problem(om, 400)


async def test_a_control_character_in_an_event_attribute_is_a_4xx_on_every_surface(tenant):
    """CloudEvents forbids control characters in attributes: refused, never stored, never a 500."""
    c = tenant.client
    om = await c.post("/api/v1/events", json=event(id="tab\tid"),
                      headers={"content-type": "application/cloudevents+json"})
    assert_problem(om, 400)
    binary = await c.post("/v1/events", content=b"{}", headers={
        "ce-id": "a\x1fb", "ce-source": "s", "ce-type": "prompt", "ce-subject": "u", "ce-specversion": "1.0",
        "content-type": "application/json"})
    assert_problem(binary, 422, "[0].id")
    assert (await c.get("/v1/events")).json()["items"] == []


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("GET", f"/v1/events?to={_FAR}", None, 422, "to"),
        ("GET", "/v1/meters/tokens/query?from=0001-01-01T00:00:00%2B01:00", None, 422, "from"),
        ("GET", f"/api/v1/events?from={_FAR}", None, 400, "from"),
        ("POST", "/v1/customers/acme/entitlements/tokens/grants", {"amount": 1, "expires_at": _FAR}, 422, "expires_at"),
        ("POST", "/v1/subscriptions", {"customer": "acme", "plan": "pro", "starts_at": "0001-01-01T00:00:00Z"}, 422, "starts_at"),
    ],
)
async def test_a_time_beyond_what_a_calendar_can_hold_is_a_4xx_naming_it(tenant, method, path, body, status, field):
    resp = await tenant.client.request(method, path.replace("+", "%2B"), json=body)
    assert_problem(resp, status, field)


@pytest.mark.parametrize("value", ["0.5", "1700000000", " 12 "])
async def test_a_number_where_a_time_is_expected_is_a_422_naming_it(tenant, value):
    """Times are RFC 3339 text: a number is not read as seconds since 1970."""
    await tenant.client.post("/v1/meters", json=meter())
    resp = await tenant.client.get("/v1/meters/tokens/query", params={"from": value})
    assert_problem(resp, 422, "from")
    assert "RFC 3339" in resp.json()["errors"][0]["message"]
    assert_problem(await tenant.client.get("/v1/events", params={"to": value}), 422, "to")


@pytest.mark.parametrize("value", [0, 1, "true"])
async def test_a_flag_that_is_not_true_or_false_is_a_422_naming_it(tenant, value):
    """JSON booleans only: 0, 1 or "true" are refused rather than guessed at."""
    check = {"customer": "acme", "feature": "api-calls", "consume": value}
    assert_problem(await tenant.client.post("/v1/check", json=check), 422, "consume")
    rule = {"name": "r", "event_type": "entitlement.overdraft_started", "enabled": value}
    assert_problem(await tenant.client.post("/v1/notification-rules", json=rule), 422, "enabled")


async def test_an_event_with_null_data_and_time_is_stored_as_documented(tenant):
    """The schema says data and time may be null; such an event is accepted, timed at receipt."""
    schema = (await tenant.client.get("/openapi.json")).json()
    body = schema["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    properties = body["oneOf"][0]["properties"]
    assert "null" in properties["data"]["type"] and "null" in properties["time"]["type"]
    sent = {**event(), "data": None, "time": None}
    resp = await tenant.client.post("/v1/events", json=sent)
    assert resp.status_code == 200 and resp.json()["accepted"] == 1, resp.text
    listed = (await tenant.client.get("/v1/events")).json()["items"]
    assert [(e["id"], e["data"]) for e in listed] == [(sent["id"], None)]
    assert listed[0]["time"] is not None


async def test_an_empty_subject_key_on_the_openmeter_surface_is_named_by_its_place(tenant):
    """OpenMeter's customers take subject keys too: a bad one is named where it was sent."""
    body = {"key": "acme", "name": "Acme", "usageAttribution": {"subjectKeys": ["z", "a", ""]}}
    resp = await tenant.client.post("/api/v1/customers", json=body)
    assert resp.status_code == 400, resp.text
    assert [e["field"] for e in resp.json()["errors"]] == ["usageAttribution.subjectKeys[2]"]


async def test_unknown_query_parameter_is_refused_naming_it(tenant):
    """A filter the list does not have is refused, not ignored: ignoring it would answer the
    whole list as if it were the filtered one."""
    resp = await tenant.client.get("/v1/audit-log", params={"customer": "nope"})
    assert_problem(resp, 422, "customer")
    assert "entity_id" in resp.json()["errors"][0]["message"]  # says what the list does take


async def test_known_query_parameters_still_work_beside_the_check(tenant):
    """Declared filters, paging and formats are taken as before."""
    c = tenant.client
    assert (await c.get("/v1/audit-log", params={"entity_type": "meter", "limit": 5})).status_code == 200
    await c.post("/v1/meters", json=meter())
    resp = await c.get("/v1/meters/tokens/query", params={"format": "csv"})
    assert resp.status_code == 200, resp.text


async def test_unknown_query_parameter_on_a_single_resource_is_refused(tenant):
    await tenant.client.post("/v1/meters", json=meter())
    assert_problem(await tenant.client.get("/v1/meters/tokens", params={"expand": "all"}), 422, "expand")


@pytest.mark.parametrize("path", ["/v1/customers", "/v1/features"])
async def test_oversized_metadata_is_refused_naming_it(tenant, path):
    """Metadata comes back with every read of its row: a huge one is refused, not stored."""
    body = {"key": "big", "name": "Big", "metadata": {"notes": "x" * 20_000}}
    assert_problem(await tenant.client.post(path, json=body), 422, "metadata")
    body["metadata"] = {"notes": "x" * 1_000}
    assert (await tenant.client.post(path, json=body)).status_code == 201


async def test_a_caller_without_a_key_gets_401_before_any_word_on_query_parameters(anon):
    """The parameters an endpoint takes are told only to a caller it would answer."""
    resp = await anon.get("/v1/audit-log", params={"customer": "nope"})
    assert_problem(resp, 401, None)
    assert "entity_id" not in resp.text


async def test_a_key_of_the_wrong_scope_gets_403_before_any_word_on_query_parameters(tenant, db):
    ingest = {"Authorization": f"Bearer {await tenant.key('ingest', db)}"}
    resp = await tenant.client.get("/v1/audit-log", params={"customer": "nope"}, headers=ingest)
    assert_problem(resp, 403, None)


async def test_a_route_without_a_key_still_names_unknown_query_parameters(anon):
    """Health checks need no key; a misspelt parameter there is still refused by name."""
    assert_problem(await anon.get("/healthz", params={"verbose": "1"}), 422, "verbose")


async def test_null_for_a_field_a_resource_always_has_is_a_422_naming_it(tenant):
    """An update that sends null for a name, a URL or a flag is refused, not answered 200 with
    nothing changed; the resource is left as it was."""
    c = tenant.client
    await c.post("/v1/customers", json={"key": "acme", "name": "ACME"})
    await c.post("/v1/meters", json=meter())
    await c.post("/v1/features", json={"key": "api-calls"})
    hook = (await c.post("/v1/webhook-endpoints", json={"url": "https://example.com/hook"})).json()
    for path, field in (("/v1/customers/acme", "name"), ("/v1/customers/acme", "subject_keys"),
                        ("/v1/meters/tokens", "name"), ("/v1/features/api-calls", "metadata"),
                        (f"/v1/webhook-endpoints/{hook['id']}", "url"),
                        (f"/v1/webhook-endpoints/{hook['id']}", "enabled")):
        assert_problem(await c.patch(path, json={field: None}), 422, field)
    assert (await c.get("/v1/customers/acme")).json()["name"] == "ACME"


async def test_null_clears_a_field_a_resource_may_lack(tenant):
    c = tenant.client
    await c.post("/v1/customers", json={"key": "acme", "name": "ACME", "email": "a@example.com"})
    assert (await c.patch("/v1/customers/acme", json={"email": None})).json()["email"] is None
    rule = (await c.post("/v1/notification-rules", json={
        "name": "r", "event_type": "entitlement.threshold_reached", "thresholds": [{"type": "percent", "value": 80}]})).json()
    resp = await c.patch(f"/v1/notification-rules/{rule['id']}", json={"name": None})
    assert resp.status_code == 200 and resp.json()["name"] is None


async def test_a_body_that_is_not_declared_as_json_is_a_415_naming_the_content_type(tenant):
    """As `curl -d` sends without a header: told to send JSON, rather than told the body is no object."""
    form = {"content-type": "application/x-www-form-urlencoded"}
    resp = await tenant.client.post("/v1/customers", content=b'{"key":"acme","name":"ACME"}', headers=form)
    assert_problem(resp, 415, "Content-Type")
    assert "application/json" in resp.json()["detail"]
    assert (await tenant.client.get("/v1/customers/acme")).status_code == 404
    as_json = {"content-type": "application/json; charset=utf-8"}
    resp = await tenant.client.post("/v1/customers", content=b'{"key":"acme","name":"ACME"}', headers=as_json)
    assert resp.status_code == 201


async def test_creating_a_taken_key_is_a_409_saying_what_exists(tenant):
    """A client creating by key can tell "it is there already" from other conflicts."""
    c = tenant.client
    for path, body, kind in (("/v1/meters", meter(), "meter"), ("/v1/customers", {"key": "acme", "name": "A"}, "customer"),
                             ("/v1/features", {"key": "api-calls"}, "feature")):
        assert (await c.post(path, json=body)).status_code == 201
        again = await c.post(path, json=body)
        assert_problem(again, 409)
        assert again.json()["type"] == f"{kind}_exists" and "already exists" in again.json()["detail"]


@pytest.mark.parametrize(("quantity", "message"), [
    (10**13, "Input should be less than 1000000000000"),
    ({"n": 1}, "Input should be a number or a decimal string"),
    (0, "Input should be greater than 0"),
])
async def test_a_quantity_out_of_range_is_said_in_plain_numbers(tenant, quantity, message):
    """The message names the bound as a number, not as the server's Python value."""
    resp = await tenant.client.post("/v1/check", json={"customer": "c", "feature": "f", "quantity": quantity})
    assert_problem(resp, 422, "quantity")
    assert [e["message"] for e in resp.json()["errors"]] == [message]


@pytest.mark.parametrize("path", ["/v1/events", "/v1/check", "/v1/customers"])
async def test_a_client_hanging_up_mid_body_is_not_a_server_error(tenant, app, path):
    """Nothing was done and nobody reads the answer: it is not counted or logged as a 500."""
    messages = [{"type": "http.request", "body": b'[{"id": "a"', "more_body": True}, {"type": "http.disconnect"}]
    sent: list[dict] = []

    async def receive():  # type: ignore[no-untyped-def]
        return messages.pop(0) if len(messages) > 1 else messages[0]

    async def send(message):  # type: ignore[no-untyped-def]
        sent.append(message)

    headers = [(b"host", b"allotment.test"), (b"authorization", f"Bearer {tenant.admin}".encode()),
               (b"content-type", b"application/json"), (b"content-length", b"1000")]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": headers, "client": ("127.0.0.1", 50000), "server": ("allotment.test", 80)}
    await app(scope, receive, send)
    [start] = [m for m in sent if m["type"] == "http.response.start"]
    assert start["status"] == 400
