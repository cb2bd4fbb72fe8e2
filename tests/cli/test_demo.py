"""`allotment demo`: a tenant from the vendor stories, seeded through the API, then live traffic."""

from __future__ import annotations

import re

import httpx
from tests.cli.conftest import Run


async def test_demo_seeds_the_stories_and_prints_only_its_key(allotment: Run, api: httpx.AsyncClient) -> None:
    """The demo tenant's customers stand where the stories put them: an AI customer in overdraft,
    one at its hard cap, a seat customer past its paid seats, a phone's add-on burnt first."""
    done = allotment("demo", "--seconds", "0", timeout=240)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"alm_\S+\n", done.stdout), done.stdout
    api.headers["Authorization"] = f"Bearer {done.stdout.strip()}"

    async def state(customer: str, feature: str) -> dict[str, object]:
        resp = await api.get(f"/v1/customers/{customer}/entitlements/{feature}")
        assert resp.status_code == 200, resp.text
        return resp.json()  # type: ignore[no-any-return]

    acme = await state("acme", "tokens")
    assert acme["in_overdraft"] is True and 1_000_000 < acme["usage"] < 1_500_000  # type: ignore[operator]
    umbrella = await api.post("/v1/check", json={"customer": "umbrella", "feature": "tokens", "quantity": 50_000})
    assert (umbrella.json()["decision"], umbrella.json()["reason"]) == ("deny", "hard_limit")
    globex = await state("globex", "seats")
    assert (globex["usage"], globex["in_overdraft"]) == (112, True)
    phone = await state("sub-0170", "data")
    assert [g["balance"] for g in phone["grants"]] == [0]  # type: ignore[attr-defined]
    upsell = (await api.get("/v1/reports/upsell")).json()["items"]
    suggested = {(i["customer"], i["feature"]): i["suggestion"] for i in upsell}
    assert suggested[("acme", "tokens")]["plan"]["key"] == "ai-pro"


async def test_demo_traffic_checks_before_sending_and_reports_what_was_answered(
    allotment: Run, api: httpx.AsyncClient
) -> None:
    """Live traffic checks each prompt first; the umbrella customer at its cap is refused, and
    the refusals are listed as denials."""
    done = allotment("demo", "--seconds", "3", "--seed", "7", timeout=240)
    assert done.returncode == 0, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    found = re.fullmatch(r"(\d+) events, (\d+) checks \((\d+) allow, (\d+) allow_overdraft, (\d+) deny\), "
                         r"(\d+) charging sessions", last)
    assert found, done.stderr
    events, checks, *_ = (int(n) for n in found.groups())
    assert events > 0 and checks > 0
    api.headers["Authorization"] = f"Bearer {done.stdout.strip()}"
    listed = (await api.get("/v1/events", params={"limit": 1000})).json()["items"]
    assert len(listed) == 1000  # the seeded month and the live prompts are all stored
