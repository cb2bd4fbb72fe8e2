"""Upsell suggestions asked for on the hot paths, projected by the worker.

A crossing (threshold, overdraft, first denial, seat overdraft) happens inside an ingest or a
consume. Projecting there costs several reads (the standing, the customer's subjects, the
rollups of the last day and week, the catalogue), which made a crossing ten times dearer than
the notification it emits. So the hot path only asks: one upsert of (entitlement, period,
usage, time) in the crossing's transaction, like an outbox row, so an ask is never lost. The
delivery worker's round (`suggest_due`) then projects from the crossing's usage and time and
emits `upsell.suggested` once per entitlement and period (`upsell.suggest_on_crossing`), in
the transaction that deletes the ask. See docs/upsell.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.db import Database
from allotment.entitlements import queries, upsell
from allotment.entitlements.check import millionths, units
from allotment.entitlements.models import CustomerEntitlement, UpsellDue
from allotment.types import from_micros, to_micros

log = structlog.get_logger()

_ANYTHING = "SELECT EXISTS (SELECT 1 FROM upsell_due)"


async def ask(
    session: AsyncSession,
    tenant_id: str,
    entitlement_id: str,
    *,
    usage: Decimal,
    period: tuple[datetime, datetime | None],
    at: datetime,
) -> None:
    """Ask for the suggestion of one entitlement and period, in the caller's transaction."""
    await ask_all(session, [(tenant_id, entitlement_id, usage, period, at)])


async def ask_all(
    session: AsyncSession, asks: Sequence[tuple[str, str, Decimal, tuple[datetime, datetime | None], datetime]]
) -> None:
    """`ask` for several (tenant, entitlement, usage, period, time) at once: one statement.
    At most one ask per entitlement and period."""
    await queries.ask_upsell(session, [
        (tenant_id, entitlement_id, to_micros(start), None if end is None else to_micros(end), millionths(usage),
         to_micros(at))
        for tenant_id, entitlement_id, usage, (start, end), at in asks
    ])


async def suggest_due(db: Database, *, limit: int = 100) -> int:
    """Project what crossings asked for and emit the suggestions that are due; returns how
    many asks were handled. Several workers share the queue (SKIP LOCKED on PostgreSQL)."""
    if not (await db.point_read(_ANYTHING, _ANYTHING))[0][0]:
        return 0
    async with db.transaction() as session:
        stmt = select(UpsellDue).order_by(UpsellDue.at).limit(limit)
        if not db.is_sqlite:
            stmt = stmt.with_for_update(skip_locked=True)
        asks = list(await session.scalars(stmt))
        for due in asks:
            try:
                async with session.begin_nested():  # an ask that fails is undone alone
                    await _suggest(session, due)
            except Exception:  # e.g. the customer was deleted since the crossing
                log.exception("dropping an upsell ask that cannot be projected", entitlement_id=due.entitlement_id)
            # A crossing asking again meanwhile waits for this row's lock (SQLite: the write
            # lock), then inserts afresh: it is projected in the next round.
            await session.delete(due)
        return len(asks)


async def _suggest(session: AsyncSession, due: UpsellDue) -> None:
    row = await session.get(CustomerEntitlement, due.entitlement_id)
    if row is not None:
        await upsell.suggest_on_crossing(
            session, due.tenant_id, row, usage=units(due.usage), period_start=from_micros(due.period_start),
            period_end=None if due.period_end is None else from_micros(due.period_end), at=from_micros(due.at),
        )
