"""The vendor stories of SCENARIOS.md, played over HTTP against a real `allotment serve`.

Each test is one vendor: it sets its catalogue up through the native API only (nothing a vendor
would need code for), drives usage as its backend would and reads what its webhook endpoint on
loopback receives, every message verified against its Standard Webhooks signature.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from tests.notifications.receiver import Receiver, wait_until
from tests.servers import Server

EVENTS_DOC = Path(__file__).parents[2] / "docs" / "notification-events.md"


def documented_payloads() -> dict[str, list[set[str]]]:
    """Each notification type's `data` fields, as the table of docs/notification-events.md
    lists them (a type may have several shapes: metered and seats)."""
    shapes: dict[str, list[set[str]]] = {}
    for line in EVENTS_DOC.read_text().splitlines():
        cells = line.split("|")
        named = re.match(r"\s*`([a-z_.]+)`", cells[1]) if len(cells) == 4 else None
        if named is not None:
            shapes.setdefault(named.group(1), []).append(set(re.findall(r"`([a-z_]+)`", cells[2])))
    return shapes


@dataclass
class Vendor:
    """One tenant on a running server: its admin client and its webhook receiver."""

    client: httpx.Client
    receiver: Receiver

    def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        resp = self.client.request(method, path, **kwargs)
        assert resp.status_code == status, resp.text
        return resp.json() if resp.content else None

    def endpoint(self, **extra: Any) -> str:
        """A webhook endpoint on the receiver; returns its signing secret."""
        made = self.ok("POST", "/v1/webhook-endpoints", 201, json={"url": self.receiver.url, **extra})
        return str(made["secret"])

    def told(self, secret: str, *, until: str | tuple[str, ...], header: tuple[str, str] | None = None
             ) -> list[dict[str, Any]]:
        """The webhooks received (of one endpoint, by a header it sends), signatures verified,
        once one of each type in `until` has arrived: the server's own worker delivers them."""
        wanted = {until} if isinstance(until, str) else set(until)

        def mine() -> list[dict[str, Any]]:
            got = [r for r in list(self.receiver.received) if header is None or r.headers.get(header[0]) == header[1]]
            return [Webhook(secret).verify(r.body, r.headers) for r in got]

        wait_until(lambda: wanted <= {m["type"] for m in mine()}, seconds=30, what=f"webhooks {sorted(wanted)}")
        received, shapes = mine(), documented_payloads()
        for message in received:  # each as the docs describe it
            assert set(message["data"]) in shapes.get(message["type"], []), (message["type"], sorted(message["data"]))
        return received


@pytest.fixture
def vendor(database_url: str, tmp_path: Path) -> Iterator[Vendor]:
    """A server on a fresh database (its first tenant is the vendor) and a receiver."""
    server = Server(database_url, tmp_path)
    receiver = Receiver().start()
    server.start()
    headers = {"Authorization": f"Bearer {server.first_admin_key()}"}
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            yield Vendor(client, receiver)
    finally:
        server.stop()
        receiver.stop()
