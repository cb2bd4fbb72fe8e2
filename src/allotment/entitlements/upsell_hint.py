"""The `upsell` hint of a check response: what would cover an overdraft or a denial.

The check is the hottest path, so the hint is computed only when the answer is
`allow_overdraft` or `deny` (an allow never calls this), and then only from what is at hand:
the check's own numbers (usage, effective limits, period), the row the check just resolved
(remembered in this process), the per-process catalogue proven current by one stamp read
(offers.cached) and the subscription's plan key (remembered for good). The projection is
linear over the period (the usage itself during its warm-up): trailing rates would need rollup
reads, which the full suggestion (`GET /v1/customers/{key}/upsell`, the `href`) does.
"""

from __future__ import annotations

from datetime import datetime

from allotment.db import Database
from allotment.entitlements import check, offers, resolve
from allotment.entitlements.engine import ZERO, Kind, Verdict
from allotment.entitlements.projection import Limits, pick, project
from allotment.entitlements.schemas import UpsellHintRead


async def hint(
    db: Database, tenant_id: str, request: check.CheckRequest, result: check.CheckResult, *, at: datetime
) -> UpsellHintRead | None:
    """What would cover a metered overdraft or denial, or None; reads nothing for an allow."""
    d = result.decision
    if d.decision is Verdict.ALLOW or d.usage is None or d.soft_limit is None or result.period_start is None:
        return None
    known = resolve.remembered(tenant_id, request.customer, request.feature)
    row = None if known is None else known.row
    if row is None or row.kind != Kind.METERED:
        return None
    catalogue = await offers.cached(db, tenant_id)
    plan_key = None
    if row.subscription_id is not None:
        plan_key = await offers.cached_plan_key(db, tenant_id, row.subscription_id)
    base = Limits(row.included or ZERO, row.soft_limit, row.hard_limit)
    extra = max(ZERO, d.soft_limit - base.soft)
    # What was asked for must fit too; a consumed quantity is already in the usage.
    wanted = d.usage + (ZERO if request.consume and d.decision is not Verdict.DENY else request.quantity)
    projection = project(d.usage, period_start=result.period_start, period_end=result.period_end, at=at)
    projected = max(projection.projected, wanted)
    chosen = pick(
        projected, base.raised(extra), catalogue.tiers(plan_key, row.feature_id),
        top_up=catalogue.top_up(row.feature_id), extra=extra,
    )
    return UpsellHintRead(
        action=chosen.action.value, plan=None if chosen.plan is None else chosen.plan.plan_key,
        top_ups=None if chosen.top_up is None else chosen.top_up.count, projected_usage=projected,
        href=f"/v1/customers/{request.customer}/upsell",
    )
