"""Scheduled entitlement changes told when they take effect: the delivery worker's scan.

A plan change or cancel "at period end" is told when it is made (`entitlement.changed` with
what holds then), and again when it takes effect: at that instant rows scheduled earlier start
or end, and nothing else runs then. The scan looks at rows whose scheduled start or end fell
within the last day (by two indexes) and tells one `entitlement.changed` per customer, feature
and instant, with what holds from then (`took_effect`, or `ended` when nothing follows). The
key names the instant, so repeated and concurrent scans tell it once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, union
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.entitlements import notices
from allotment.entitlements.models import CustomerEntitlement

LOOKBACK = timedelta(days=1)  # a worker down longer than this misses the changes it would tell


async def tell_due(session: AsyncSession, *, at: datetime) -> int:
    """Tell the scheduled changes that took effect in the day up to `at`; returns how many.

    Each scan looks at every change of that day (the ones told already cost a read and an
    ignored insert each): a few hundred a day for a large vendor, not a backlog to page."""
    e = CustomerEntitlement
    since = at - LOOKBACK
    starts = select(e.tenant_id, e.customer_id, e.feature_id, e.active_from.label("when")).where(
        e.active_from > since, e.active_from <= at, e.created_at < e.active_from)
    ends = select(e.tenant_id, e.customer_id, e.feature_id, e.active_to.label("when")).where(
        e.active_to > since, e.active_to <= at, e.updated_at < e.active_to)
    found: list[Any] = list((await session.execute(union(starts, ends))).all())
    told = 0
    for tenant_id, customer_id, feature_id, when in found:
        told += await notices.entitlement_changed(session, tenant_id, customer_id, feature_id,
                                                  changes=None, at=when)
    return told
