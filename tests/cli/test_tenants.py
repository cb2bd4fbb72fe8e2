"""`allotment tenants`: a second vendor on the same database, with keys of its own."""

from __future__ import annotations

import httpx
from tests.cli.conftest import Run


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def test_create_prints_an_admin_key_of_a_tenant_of_its_own(allotment: Run, api: httpx.AsyncClient) -> None:
    """`tenants create` prints only an admin secret, whose tenant sees none of the first tenant's rows."""
    first = allotment("keys", "create", "--scope", "admin").stdout.strip()
    made = await api.post("/v1/customers", headers=bearer(first), json={"key": "acme", "name": "Acme"})
    assert made.status_code == 201, made.text
    done = allotment("tenants", "create", "Globex")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("alm_")
    other = bearer(lines[0])
    assert (await api.get("/v1/customers/acme", headers=other)).status_code == 404
    created = await api.post("/v1/customers", headers=other, json={"key": "acme", "name": "Globex's Acme"})
    assert created.status_code == 201, created.text


def test_list_names_each_tenant_with_the_id_keys_take(allotment: Run) -> None:
    """`tenants list` shows every tenant's id and name; `keys create --tenant <id>` makes a key there."""
    allotment("keys", "create")
    assert allotment("tenants", "create", "Globex").returncode == 0
    listing = allotment("tenants", "list")
    assert listing.returncode == 0, listing.stderr
    rows = [line.split("\t") for line in listing.stdout.splitlines()]
    assert rows[0][:2] == ["id", "name"]
    globex = [row for row in rows[1:] if row[1] == "Globex"]
    assert len(rows) == 3 and len(globex) == 1 and globex[0][0].startswith("ten_")
    key = allotment("keys", "create", "--tenant", globex[0][0], "--scope", "read", "--name", "globex reader")
    assert key.returncode == 0, key.stderr
    keys = allotment("keys", "list", "--tenant", globex[0][0]).stdout
    assert "globex reader" in keys


def test_create_refuses_an_empty_name(allotment: Run) -> None:
    """A blank tenant name is refused with exit status 2 and a message naming it."""
    done = allotment("tenants", "create", "  ")
    assert done.returncode == 2
    assert "name" in done.stderr and done.stdout == ""
