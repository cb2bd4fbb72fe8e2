"""Expiring the holds of chargers that went silent, by time alone.

`reservations.sweep` gives expired holds back whenever their entitlement is checked or
reserved against again; a charger that never comes back would otherwise leave its hold open,
and the vendor untold, until the driver's next session. The worker's periodic scan runs
`sweep_due` so that every hold is given back and `reservation.expired` is told within one
scan interval of its expiry, whatever the traffic.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.entitlements import reservations
from allotment.entitlements.models import CustomerEntitlement, Reservation

BATCH = 100  # entitlements per transaction: each sweep locks a live counter row until commit


async def sweep_due(session: AsyncSession, *, at: datetime, limit: int = BATCH) -> int:
    """Sweep up to `limit` entitlements (of any tenant) holding open reservations expired by
    `at`; returns how many holds expired (0: nothing more to do now).

    A hold another transaction is settling is skipped by `sweep` (it locks without waiting),
    so the scan never blocks a commit; whatever it skips, the next scan or request finds.
    """
    due = (
        select(Reservation.entitlement_id)
        .where(Reservation.status == reservations.OPEN, Reservation.expires_at <= at)
        .distinct()
        .limit(limit)
    )
    rows = list(await session.scalars(select(CustomerEntitlement).where(CustomerEntitlement.id.in_(due))))
    return sum([await reservations.sweep(session, row, at) for row in rows])
