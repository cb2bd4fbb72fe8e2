"""Real processes: a killed server loses no webhook; two workers never send one message at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from allotment.config import Settings
from allotment.customers import service as customers
from allotment.customers.schemas import CustomerCreate
from allotment.db import Database
from allotment.notifications import service
from allotment.notifications.schemas import WebhookEndpointCreate
from allotment.tenancy import service as tenancy
from allotment.types import utcnow
from tests.conftest import run_blocking, truncate
from tests.notifications.receiver import Received, Receiver, wait_until
from tests.servers import Server

pytestmark = pytest.mark.slow

WORKER = [str(Path(sys.executable).parent / "allotment"), "worker", "--no-migrate"]


async def _outbox(database_url: str, receiver_url: str, *, customers_: int, per_customer: int,
                  tenant_id: str | None = None) -> list[str]:
    """An endpoint, customers and their notifications, emitted round-robin; returns the keys."""
    db = Database(Settings(database_url=database_url))
    try:
        async with db.transaction() as session:
            if tenant_id is None:
                tenant_id = (await tenancy.create_tenant(session, "vendor", at=utcnow())).id
            await service.create_endpoint(session, tenant_id, WebhookEndpointCreate(url=receiver_url), at=utcnow())
            ids = [(await customers.create(session, tenant_id, CustomerCreate(key=f"c{i}", name=f"c{i}"),
                                           at=utcnow())).customer.id for i in range(customers_)]
            await session.flush()
        keys = []
        async with db.transaction() as session:
            for n in range(per_customer):
                for c, cid in enumerate(ids):
                    keys.append(f"c{c}-{n:04d}")
                    await service.emit(session, tenant_id, type="entitlement.threshold_reached",
                                       dedupe_key=keys[-1], customer_id=cid, payload={"key": keys[-1]},
                                       at=utcnow())
        return keys
    finally:
        await db.dispose()


def _assert_in_order_per_customer(received: list[Received]) -> None:
    """Each customer's messages first arrive in emission order."""
    seen: dict[str, list[str]] = {}
    for got in received:
        key = got.json["data"]["key"]
        mine = seen.setdefault(key.split("-")[0], [])
        if key not in mine:
            mine.append(key)
    for keys in seen.values():
        assert keys == sorted(keys)


def test_killed_server_delivers_every_pending_webhook_after_restart(database_url, tmp_path, monkeypatch):
    """SIGKILL with webhooks in flight: after a restart each arrives; repeats keep their webhook-id."""
    opened = threading.Event()

    def held_until_opened(_: Received) -> tuple[int, bytes]:
        opened.wait()
        return (200, b"ok")

    receiver = Receiver(respond=held_until_opened).start()
    monkeypatch.setenv("ALLOTMENT_DELIVERY_TIMEOUT_SECONDS", "3")  # leases of 8 s
    monkeypatch.setenv("ALLOTMENT_DELIVERY_LEASE_SECONDS", "1")
    server = Server(database_url, tmp_path)
    try:
        server.start()
        tenant_id = run_blocking(_first_tenant(database_url))
        keys = run_blocking(_outbox(database_url, receiver.url, customers_=4, per_customer=10, tenant_id=tenant_id))
        wait_until(lambda: receiver.in_flight() == 4, seconds=30, what="one webhook per customer in flight")
        in_flight = set(receiver.ids())
        server.kill()
        opened.set()
        server.start()
        wait_until(lambda: len(set(receiver.ids())) == len(keys), seconds=60, what="every webhook delivered")
    finally:
        server.stop()
        receiver.stop()
    by_key = {r.json["data"]["key"]: r.webhook_id for r in receiver.received}
    assert sorted(by_key) == sorted(keys)
    repeated = {i for i in receiver.ids() if receiver.ids().count(i) > 1}
    assert repeated <= in_flight
    _assert_in_order_per_customer(receiver.received)


async def _first_tenant(database_url: str) -> str:
    db = Database(Settings(database_url=database_url))
    try:
        async with db.transaction() as session:
            tenant = await tenancy.first_tenant(session)
            assert tenant is not None
            return tenant.id
    finally:
        await db.dispose()


@pytest.fixture
def postgres_url(postgres_database: str) -> Iterator[str]:
    """Several workers share one database in production: PostgreSQL only."""
    run_blocking(truncate(postgres_database))
    yield postgres_database


def test_two_workers_drain_one_outbox_without_sending_a_message_twice(postgres_url, tmp_path):
    receiver = Receiver().start()
    env = {**os.environ, "DATABASE_URL": postgres_url}
    logs = [(tmp_path / f"worker{i}.log").open("wb") for i in range(2)]
    workers = [subprocess.Popen(WORKER, env=env, stdout=log, stderr=log) for log in logs]
    try:
        keys = run_blocking(_outbox(postgres_url, receiver.url, customers_=30, per_customer=10))
        wait_until(lambda: len(receiver.ids()) >= len(keys), seconds=90, what="every webhook delivered")
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        for proc, log in zip(workers, logs, strict=True):
            code = proc.wait(timeout=30)
            log.close()
            assert code == 0, (tmp_path / "worker0.log").read_text()
        receiver.stop()
    assert receiver.overlaps == []
    received = [r.json["data"]["key"] for r in receiver.received]
    assert sorted(set(received)) == sorted(keys)
    repeated = {key for key in received if received.count(key) > 1}
    assert repeated <= run_blocking(_failed_once(postgres_url))  # a repeat only after a failed try
    _assert_in_order_per_customer(receiver.received)


async def _failed_once(database_url: str) -> set[str]:
    """Dedupe keys of the notifications that have a failed attempt in the delivery log."""
    from sqlalchemy import select

    from allotment.notifications.models import Attempt, Delivery, Notification

    db = Database(Settings(database_url=database_url))
    try:
        async with db.transaction(readonly=True) as session:
            rows = await session.scalars(
                select(Notification.dedupe_key)
                .join(Delivery, Delivery.notification_seq == Notification.seq)
                .join(Attempt, Attempt.delivery_id == Delivery.id)
                .where(Attempt.succeeded.is_(False))
            )
            return set(rows)
    finally:
        await db.dispose()
