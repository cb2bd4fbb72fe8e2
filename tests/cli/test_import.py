"""`allotment import`: JSON Lines and CSV files through the API's validation and de-duplication."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from tests.cli.conftest import ALLOTMENT, Run, cli_env
from tests.conftest import Tenant
from tests.helpers import event, meter

SUMMARY = re.compile(r"(\d+) accepted, (\d+) duplicates, (\d+) rejected")


def write_jsonl(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def counts(stdout: str) -> tuple[int, int, int]:
    found = SUMMARY.search(stdout)
    assert found, stdout
    accepted, duplicates, rejected = (int(n) for n in found.groups())
    return accepted, duplicates, rejected


async def total(tenant: Tenant, key: str = "tokens") -> object:
    resp = await tenant.client.get(f"/v1/meters/{key}/query")
    assert resp.status_code == 200, resp.text
    return resp.json()["data"][0]["value"]


async def test_jsonl_file_is_counted(allotment: Run, tenant: Tenant, tmp_path: Path) -> None:
    """Every line of a JSON Lines file is stored and counted, across several batches."""
    await tenant.client.post("/v1/meters", json=meter())
    path = write_jsonl(tmp_path / "usage.jsonl", [event(tokens=n % 10) for n in range(250)])
    done = allotment("import", str(path), "--tenant", tenant.id, "--batch-size", "100")
    assert done.returncode == 0, done.stderr
    assert counts(done.stdout) == (250, 0, 0)
    assert await total(tenant) == sum(n % 10 for n in range(250))


async def test_csv_data_columns_become_numbers_or_strings(
    allotment: Run, tenant: Tenant, tmp_path: Path
) -> None:
    """`data.<name>` cells that read as numbers are numbers; others (a zip code) stay strings."""
    await tenant.client.post("/v1/meters", json=meter())
    path = tmp_path / "usage.csv"
    path.write_text(
        "id,source,type,subject,time,data.tokens,data.model,data.zip\n"
        "c1,crm,prompt,user-1,2026-01-05T10:00:00Z,7,gpt,02134\n"
        "c2,crm,prompt,user-1,2026-01-05T10:01:00Z,2.5,gpt,02134\n"
    )
    done = allotment("import", str(path), "--tenant", tenant.id)
    assert done.returncode == 0, done.stderr
    assert await total(tenant) == 9.5
    stored = (await tenant.client.get("/v1/events", params={"limit": 10})).json()["items"]
    assert {e["id"]: e["data"] for e in stored}["c1"] == {"tokens": 7, "model": "gpt", "zip": "02134"}


async def test_csv_json_data_column_is_counted(allotment: Run, tenant: Tenant, tmp_path: Path) -> None:
    """A CSV `data` column holding a JSON object is the event's data."""
    await tenant.client.post("/v1/meters", json=meter())
    path = tmp_path / "usage.csv"
    path.write_text(
        'id,source,type,subject,data\n'
        'j1,crm,prompt,user-1,"{""tokens"": 4}"\n'
        'j2,crm,prompt,user-2,"{""tokens"": 6, ""model"": ""small""}"\n'
    )
    done = allotment("import", str(path), "--tenant", tenant.id)
    assert done.returncode == 0, done.stderr
    assert counts(done.stdout) == (2, 0, 0)
    assert await total(tenant) == 10


async def test_importing_the_same_file_again_adds_nothing(
    allotment: Run, tenant: Tenant, tmp_path: Path
) -> None:
    """A second import of a file reports every event as a duplicate and the meter stays put."""
    await tenant.client.post("/v1/meters", json=meter())
    path = write_jsonl(tmp_path / "usage.jsonl", [event(tokens=3) for _ in range(40)])
    assert allotment("import", str(path), "--tenant", tenant.id).returncode == 0
    again = allotment("import", str(path), "--tenant", tenant.id)
    assert again.returncode == 0, again.stderr
    assert counts(again.stdout) == (0, 40, 0)
    assert await total(tenant) == 120


def interrupted_import(path: Path, tenant: Tenant, database_url: str, *, batch_size: int) -> None:
    """Start an import and SIGKILL it once its first batch is committed (checkpoint written)."""
    checkpoint = path.with_name(path.name + ".allotment-import")
    proc = subprocess.Popen(
        [ALLOTMENT, "import", str(path), "--tenant", tenant.id, "--batch-size", str(batch_size)],
        env=cli_env(database_url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    try:
        while not checkpoint.exists():
            assert proc.poll() is None, "the import ended before it could be interrupted"
            assert time.monotonic() < deadline, "no batch was committed within a minute"
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert checkpoint.exists()


async def test_killed_import_resumes_after_the_last_committed_batch(
    allotment: Run, tenant: Tenant, tmp_path: Path, database_url: str
) -> None:
    """A re-run after a kill continues where it stopped: at most one batch is read twice."""
    await tenant.client.post("/v1/meters", json=meter("calls", "COUNT"))
    path = write_jsonl(tmp_path / "big.jsonl", [event() for _ in range(3_000)])
    interrupted_import(path, tenant, database_url, batch_size=25)
    resumed = allotment("import", str(path), "--tenant", tenant.id, "--batch-size", "25")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after line" in resumed.stderr
    accepted, duplicates, _ = counts(resumed.stdout)
    assert accepted + duplicates == 3_000 and duplicates <= 25
    assert await total(tenant, "calls") == 3_000


async def test_progress_of_a_replaced_file_is_not_resumed(
    allotment: Run, tenant: Tenant, tmp_path: Path, database_url: str
) -> None:
    """When the file under the same name changed, the import starts again from the top."""
    await tenant.client.post("/v1/meters", json=meter("calls", "COUNT"))
    path = write_jsonl(tmp_path / "big.jsonl", [event(type="old") for _ in range(3_000)])
    interrupted_import(path, tenant, database_url, batch_size=25)
    write_jsonl(path, [event() for _ in range(500)])
    done = allotment("import", str(path), "--tenant", tenant.id)
    assert done.returncode == 0, done.stderr
    assert counts(done.stdout) == (500, 0, 0)
    assert await total(tenant, "calls") == 500


async def test_bad_lines_are_reported_by_line_number(allotment: Run, tenant: Tenant, tmp_path: Path) -> None:
    """Rejected lines are listed with their line number and reason, the rest is kept, exit 1."""
    await tenant.client.post("/v1/meters", json=meter())
    lines = [
        json.dumps(event(tokens=1)),
        json.dumps({"id": "no-subject", "source": "s", "type": "prompt"}),
        "",
        '{"id": "cut", ',
        json.dumps(event(tokens=2, time="2026-01-01T00:00:00")),
        json.dumps(event(tokens="lots")),
        json.dumps(event(tokens=4)),
    ]
    path = tmp_path / "usage.jsonl"
    path.write_text("\n".join(lines) + "\n")
    done = allotment("import", str(path), "--tenant", tenant.id, "--batch-size", "3")
    assert done.returncode == 1
    assert counts(done.stdout) == (2, 0, 4)
    assert "line 2: subject: is required" in done.stdout
    assert "line 4: is not valid JSON" in done.stdout
    assert "line 5: time: must be RFC 3339 with a UTC offset" in done.stdout
    assert "line 6: data.tokens:" in done.stdout
    assert await total(tenant) == 5


async def test_many_rejections_list_the_first_twenty(allotment: Run, tenant: Tenant, tmp_path: Path) -> None:
    """Past twenty rejections the summary says how many more; the API keeps every one."""
    path = tmp_path / "usage.jsonl"
    path.write_text("".join(json.dumps({"id": f"r{n}", "source": "s", "type": "t"}) + "\n" for n in range(25)))
    done = allotment("import", str(path), "--tenant", tenant.id)
    assert done.returncode == 1
    listed = [line for line in done.stdout.splitlines() if line.strip().startswith("line ")]
    assert len(listed) == 20 and listed[-1].strip().startswith("line 20:")
    assert "and 5 more" in done.stdout
    rejected = (await tenant.client.get("/v1/events/rejected")).json()["items"]
    assert len(rejected) == 25


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("events.json", '[\n  {"id": "a", "source": "s", "type": "t", "subject": "u"}\n]\n'),
        ("events.csv", "event,customer,amount\na,acme,3\n"),
    ],
    ids=["json-array", "csv-without-event-columns"],
)
def test_file_that_is_not_events_is_refused_with_exit_2(tmp_path: Path, name: str, content: str) -> None:
    """A file that cannot be read as events at all is refused whole, before any database work."""
    path = tmp_path / name
    path.write_text(content)
    done = subprocess.run(
        [ALLOTMENT, "import", str(path)], env=cli_env(f"sqlite:///{tmp_path / 'unused.db'}"),
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error:") and name in done.stderr


async def test_csv_number_with_more_digits_than_a_double_is_counted_exactly(
    allotment: Run, tenant: Tenant, tmp_path: Path
) -> None:
    """A cell of 19 significant digits is summed as written, not as the nearest double."""
    from decimal import Decimal

    await tenant.client.post("/v1/meters", json=meter())
    path = tmp_path / "usage.csv"
    path.write_text("id,source,type,subject,data.tokens\nd1,crm,prompt,user-1,1234567890123.456789\n")
    done = allotment("import", str(path), "--tenant", tenant.id)
    assert done.returncode == 0, done.stderr
    query = await tenant.client.get("/v1/meters/tokens/query")
    assert json.loads(query.text, parse_float=Decimal)["data"][0]["value"] == Decimal("1234567890123.456789")


def test_csv_column_that_is_no_event_attribute_is_refused_naming_it(tmp_path: Path) -> None:
    """A CSV column that is neither an event attribute nor `data.<name>` (whose values would be
    dropped) refuses the file, naming the column and the `data.` column it may have meant."""
    path = tmp_path / "usage.csv"
    path.write_text("id,source,type,subject,time,tokens\nc1,crm,prompt,user-1,2026-01-05T10:00:00Z,7\n")
    done = subprocess.run(
        [ALLOTMENT, "import", str(path)], env=cli_env(f"sqlite:///{tmp_path / 'unused.db'}"),
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error:") and "'tokens'" in done.stderr and "'data.tokens'" in done.stderr


async def test_a_csv_record_run_over_several_lines_names_them_all(
    allotment: Run, tenant: Tenant, tmp_path: Path
) -> None:
    """A quote left open joins the next line to its record: the rejection names both lines, so
    the line it swallowed is not missed."""
    await tenant.client.post("/v1/meters", json=meter())
    path = tmp_path / "usage.csv"
    path.write_text('id,source,type,subject,data\na,s,prompt,u,"{""tokens"": 1}"\nb,s,prompt,u,"{""tokens"": 2\n'
                    'c,s,prompt,u,"{""tokens"": 4}"\n')
    done = allotment("import", str(path), "--tenant", tenant.id)
    assert done.returncode == 1, done.stderr
    assert counts(done.stdout) == (1, 0, 1)
    assert "line 3: data: is not valid JSON" in done.stdout and "lines 3-4" in done.stdout, done.stdout
