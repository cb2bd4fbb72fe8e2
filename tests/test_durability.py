"""An acknowledged event is never lost, including across a killed process.

The real server runs as a subprocess on the test's database while clients ingest without
pause; it is SIGKILLed mid-stream and started again on the same database. Every batch that got
a 200 must be there exactly once, every batch that did not must be there whole or not at all,
and re-sending the unacknowledged batches must bring the count to exactly what was sent.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import Server

pytestmark = pytest.mark.slow

BATCH = 50
SENDERS = 3
ACKED_BEFORE_KILL = 20  # batches acknowledged before the server is killed


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    running = Server(database_url, tmp_path)
    yield running
    running.stop()


def batch_events(number: int) -> list[dict[str, object]]:
    return [
        {"specversion": "1.0", "id": f"b{number}-e{i}", "source": "durability", "type": "call",
         "subject": f"user-{i % 5}"}
        for i in range(BATCH)
    ]


class Load:
    """Clients sending batches back to back; each batch is acknowledged or not, never unknown."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.acked: set[int] = set()
        self.unacked: set[int] = set()
        self.cut: set[int] = set()  # unacknowledged after the request reached the server
        self._next = 0
        self._lock = threading.Condition()
        self._threads = [threading.Thread(target=self._send_until_refused) for _ in range(SENDERS)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def wait_for_acks(self, count: int) -> None:
        with self._lock:
            ok = self._lock.wait_for(lambda: len(self.acked) >= count or bool(self.unacked), timeout=60)
        assert ok and not self.unacked, f"only {len(self.acked)} batches acknowledged"

    def join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=60)

    def _take(self) -> int:
        with self._lock:
            self._next += 1
            return self._next

    def _send_until_refused(self) -> None:
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}) as client:
            while True:
                number = self._take()
                try:
                    resp = client.post("/v1/events", json=batch_events(number), timeout=30)
                    acked = resp.status_code == 200 and resp.json()["rejected"] == 0
                except httpx.ConnectError:
                    acked = False
                except httpx.TransportError:
                    acked = False
                    with self._lock:
                        self.cut.add(number)
                with self._lock:
                    (self.acked if acked else self.unacked).add(number)
                    self._lock.notify_all()
                if not acked:
                    return


def stored_event_ids(client: httpx.Client) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/events", params=params)
        assert page.status_code == 200, page.text
        ids.extend(e["id"] for e in page.json()["items"])
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return ids


def count_total(client: httpx.Client) -> int:
    resp = client.get("/v1/meters/calls/query")
    assert resp.status_code == 200, resp.text
    value: int = resp.json()["data"][0]["value"]
    return value


def test_acknowledged_events_survive_a_killed_server(server: Server) -> None:
    """After SIGKILL and restart, every acknowledged event is stored once and a re-send of the
    unacknowledged batches brings the count to exactly the events sent."""
    server.start()
    key = server.first_admin_key()
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as api:
        created = api.post("/v1/meters", json={"key": "calls", "event_type": "call", "aggregation": "COUNT"})
        assert created.status_code == 201, created.text

        load = Load(server.url, key)
        load.start()
        load.wait_for_acks(ACKED_BEFORE_KILL)
        server.kill()
        load.join()
        assert len(load.unacked) == SENDERS  # each client stopped at its first refused batch
        assert load.cut, "the kill did not land while a request was in flight"

        server.start()
        ids = stored_event_ids(api)
        assert len(ids) == len(set(ids)), "an event is stored twice"
        stored = set(ids)
        for number in load.acked:
            assert {e["id"] for e in batch_events(number)} <= stored, f"acknowledged batch {number} lost"
        for number in load.unacked:
            present = {e["id"] for e in batch_events(number)} & stored
            assert len(present) in (0, BATCH), f"batch {number} is partly stored"
        assert count_total(api) == len(stored)

        for number in sorted(load.unacked):
            assert api.post("/v1/events", json=batch_events(number)).status_code == 200
        sent = (len(load.acked) + len(load.unacked)) * BATCH
        assert count_total(api) == sent
        assert len(stored_event_ids(api)) == sent
