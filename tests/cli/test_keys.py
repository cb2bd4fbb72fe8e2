"""`allotment keys`: create, list and revoke API keys from the command line."""

from __future__ import annotations

import httpx
from tests.cli.conftest import Run


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def test_create_prints_only_a_secret_that_works(allotment: Run, api: httpx.AsyncClient) -> None:
    """`keys create` prints just the new secret on stdout, and the API accepts it."""
    done = allotment("keys", "create", "--scope", "admin")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("alm_")
    resp = await api.get("/v1/api-keys", headers=bearer(lines[0]))
    assert resp.status_code == 200, resp.text


def test_list_shows_the_key_but_not_its_secret(allotment: Run) -> None:
    """`keys list` names the new key by id and scope without revealing the secret."""
    secret = allotment("keys", "create", "--scope", "read", "--name", "reporting").stdout.strip()
    listing = allotment("keys", "list")
    assert listing.returncode == 0, listing.stderr
    rows = [line.split("\t") for line in listing.stdout.splitlines()]
    mine = [row for row in rows if row[1] == "reporting"]
    assert len(mine) == 1 and mine[0][0].startswith("key_") and mine[0][2] == "read"
    assert secret not in listing.stdout


async def test_revoked_key_is_refused_with_401(allotment: Run, api: httpx.AsyncClient) -> None:
    """After `keys revoke <id>` the API answers the key with 401."""
    secret = allotment("keys", "create", "--scope", "admin", "--name", "leaked").stdout.strip()
    keys = (await api.get("/v1/api-keys", headers=bearer(secret))).json()["items"]
    key_id = next(key["id"] for key in keys if key["name"] == "leaked")
    revoked = allotment("keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    resp = await api.get("/v1/api-keys", headers=bearer(secret))
    assert resp.status_code == 401
    assert "revoked" in resp.json()["detail"]


def test_first_key_on_an_empty_database_is_the_only_key(allotment: Run) -> None:
    """With no tenant yet, `keys create` makes the tenant and only the key it prints (no
    second admin key whose secret nobody was shown)."""
    done = allotment("keys", "create", "--scope", "ingest", "--name", "only")
    assert done.returncode == 0, done.stderr
    listing = allotment("keys", "list")
    rows = [line.split("\t")[1:3] for line in listing.stdout.splitlines()]
    assert rows[1:] == [["only", "ingest"]], rows
