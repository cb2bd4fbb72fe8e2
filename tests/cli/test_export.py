"""`allotment export`: the event log as JSON Lines or CSV, which `allotment import` reads back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.cli.conftest import Run
from tests.conftest import Tenant
from tests.helpers import event, meter

EVENTS = [
    event("ann", id="e1", time="2026-03-01T10:00:00Z", tokens=5, model="small"),
    event("ann", id="e2", time="2026-03-01T11:30:00.250000Z", tokens="FRACTION", model="large"),
    event("bob", id="e3", time="2026-03-02T09:00:00Z", tokens=7, model="small"),
    event("zoë", id="e4", time="2026-03-03T00:00:00Z", tokens=1, note='quote " and, comma'),
    event("bob", id="e5", type="call", time="2026-03-02T12:00:00Z"),
]

FRACTION = "123456789012.123456"


async def _seed(tenant: Tenant) -> None:
    c = tenant.client
    assert (await c.post("/v1/meters", json=meter(group_by={"model": "$.model"}))).status_code == 201
    assert (await c.post("/v1/customers", json={"key": "acme", "name": "Acme",
                                                "subject_keys": ["ann"]})).status_code == 201
    for sent, outcome in ((EVENTS, "accepted"), (EVENTS[:2], "duplicates")):  # then a retry
        resp = await c.post("/v1/events", content=_exact(sent), headers={"content-type": "application/json"})
        assert resp.json()[outcome] == len(sent), resp.text


def _exact(events: list[dict[str, Any]]) -> str:
    """The events as JSON, with a fraction of more digits than a double holds."""
    return json.dumps(events).replace('"FRACTION"', FRACTION)


async def _usage(tenant: Tenant) -> Any:
    params = {"window_size": "DAY", "group_by": "model", "from": "2026-03-01T00:00:00Z",
              "to": "2026-03-04T00:00:00Z"}
    resp = await tenant.client.get("/v1/meters/tokens/query", params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


async def _stored(tenant: Tenant) -> dict[str, Any]:
    items = (await tenant.client.get("/v1/events", params={"limit": 100})).json()["items"]
    return {e["id"]: (e["source"], e["type"], e["subject"], e["time"], e["data"]) for e in items}


async def _round_trip(allotment: Run, tenant: Tenant, other: Tenant, path: Path, fmt: str) -> None:
    await _seed(tenant)
    done = allotment("export", "--tenant", tenant.id, "--format", fmt, "--output", str(path))
    assert done.returncode == 0, done.stderr
    assert "exported 5 events" in done.stderr
    assert (await other.client.post("/v1/meters", json=meter(group_by={"model": "$.model"}))).status_code == 201
    back = allotment("import", str(path), "--tenant", other.id)
    assert back.returncode == 0, back.stdout + back.stderr
    assert "5 accepted, 0 duplicates, 0 rejected" in back.stdout
    assert await _stored(other) == await _stored(tenant)
    assert await _usage(other) == await _usage(tenant)


async def test_json_lines_export_imports_into_another_tenant_unchanged(
    allotment: Run, tenant: Tenant, other_tenant: Tenant, tmp_path: Path
) -> None:
    """Exported as JSON Lines and imported elsewhere, every event (each once, every digit of its
    data) is stored again and meters answer the same."""
    await _round_trip(allotment, tenant, other_tenant, tmp_path / "events.jsonl", "jsonl")


async def test_csv_export_imports_into_another_tenant_unchanged(
    allotment: Run, tenant: Tenant, other_tenant: Tenant, tmp_path: Path
) -> None:
    """The CSV export (data as a JSON cell, quoted where needed) reads back to the same events."""
    path = tmp_path / "events.csv"
    await _round_trip(allotment, tenant, other_tenant, path, "csv")
    assert path.read_text().splitlines()[0] == "id,source,type,subject,time,data"


async def test_stdout_carries_one_cloudevent_per_line_in_stored_order(allotment: Run, tenant: Tenant) -> None:
    """Without --output the events go to stdout, one CloudEvent a line, and nothing else does."""
    await _seed(tenant)
    done = allotment("export", "--tenant", tenant.id)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["id"] for e in lines] == ["e1", "e2", "e3", "e4", "e5"]
    assert lines[1] == {"specversion": "1.0", "id": "e2", "source": "test", "type": "prompt", "subject": "ann",
                        "time": "2026-03-01T11:30:00.250000Z",
                        "data": {"tokens": 123456789012.123456, "model": "large"}}
    assert '"tokens":123456789012.123456' in done.stdout.splitlines()[1]
    assert "data" not in lines[4] or lines[4]["data"] == {}


async def test_filters_select_by_time_type_subject_and_customer(allotment: Run, tenant: Tenant) -> None:
    """--from is inclusive and --to exclusive on the events' times; --customer means its subjects."""
    await _seed(tenant)

    def ids(*args: str) -> list[str]:
        done = allotment("export", "--tenant", tenant.id, *args)
        assert done.returncode == 0, done.stderr
        return [json.loads(line)["id"] for line in done.stdout.splitlines()]

    assert ids("--from", "2026-03-01T11:30:00.25Z", "--to", "2026-03-03T00:00:00Z") == ["e2", "e3", "e5"]
    assert ids("--type", "call") == ["e5"]
    assert ids("--subject", "bob", "--subject", "zoë") == ["e3", "e4", "e5"]
    assert ids("--customer", "acme") == ["e1", "e2"]


async def test_bad_options_are_one_line_naming_the_option(allotment: Run, tenant: Tenant, tmp_path: Path) -> None:
    """A time without an offset, an unknown format, tenant or customer: exit status non-zero,
    one line saying why, and a file named by --output left as it was."""
    kept = tmp_path / "kept.jsonl"
    kept.write_text("an earlier export\n")
    no_offset = allotment("export", "--from", "2026-03-01T00:00:00")
    assert no_offset.returncode == 2
    assert no_offset.stderr.startswith("error: --from: '2026-03-01T00:00:00' is not an RFC 3339 time")
    fmt = allotment("export", "--format", "xml")
    assert (fmt.returncode, fmt.stderr.strip()) == (2, "error: --format: must be one of jsonl, csv, not 'xml'")
    unknown = allotment("export", "--tenant", "ten_missing", "--output", str(kept))
    assert (unknown.returncode, unknown.stderr.strip()) == (2, "error: --tenant: tenant 'ten_missing' not found")
    assert kept.read_text() == "an earlier export\n"  # refused before the file was opened
    nowhere = allotment("export", "--output", "/nonexistent-folder/events.jsonl")
    assert (nowhere.returncode, nowhere.stderr.strip()) == (
        2, "error: --output: cannot write /nonexistent-folder/events.jsonl: No such file or directory")
    nobody = allotment("export", "--tenant", tenant.id, "--customer", "nobody", "--output", str(kept))
    assert (nobody.returncode, nobody.stderr.strip()) == (2, "error: --customer: customer 'nobody' not found")
    assert kept.read_text() == "an earlier export\n"
