"""OpenMeter's entitlement history (`GET /api/v2/customers/{c}/entitlements/{e}/history`).

`windowedHistory` lists every window of the asked size over the range, cut to it, with the
usage the feature's meter reports for the customer in it (its rollups, filtered by the
feature's group filter; 0 when none, as OpenMeter lists them) and the entitlement's balance at
its start. `burndownHistory` has one segment per stretch between
usage period resets and grant starts and ends (`entitlements/history.py`). Numbers are those
the value at a past `time` reports; docs/openmeter-entitlements.md says what is left out.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Query
from sqlalchemy.ext.asyncio import AsyncSession

from allotment import codec
from allotment.api.compat.openmeter_http import openmeter_fields, openmeter_router, utc, zone
from allotment.api.compat.openmeter_lookup import resolve
from allotment.api.compat.openmeter_schemas import period_usage, value_out
from allotment.api.deps import Reader, ReadSession
from allotment.api.responses import Json
from allotment.entitlements import history
from allotment.entitlements.check import usage_period
from allotment.entitlements.engine import ZERO, Kind, is_live
from allotment.entitlements.periods import period_at
from allotment.entitlements.state import EntitlementState
from allotment.errors import ValidationFailed
from allotment.metering.windows import WindowSize
from allotment.types import Instant, utcnow

router = openmeter_router()


@router.get("/v2/customers/{customer_id_or_key}/entitlements/{entitlement_id_or_feature_key}/history")
async def entitlement_history(
    customer_id_or_key: str,
    entitlement_id_or_feature_key: str,
    principal: Reader,
    session: ReadSession,
    window_size: Annotated[WindowSize, Query(alias="windowSize")],
    from_: Annotated[Instant | None, Query(alias="from")] = None,
    to: Annotated[Instant | None, Query()] = None,
    window_time_zone: Annotated[str, Query(alias="windowTimeZone")] = "UTC",
) -> Json:
    """From the start of the current usage period (OpenMeter: the last reset) to now, by default;
    the range is kept within the entitlement's life and the past."""
    return Json(await history_of(
        session, principal.tenant_id, customer_id_or_key, entitlement_id_or_feature_key,
        window_size=window_size, from_=from_, to=to, window_time_zone=window_time_zone,
    ))  # fmt: skip


async def history_of(
    session: AsyncSession,
    tenant_id: str,
    customer_ref: str,
    ref: str,
    *,
    window_size: WindowSize,
    from_: datetime | None,
    to: datetime | None,
    window_time_zone: str,
) -> dict[str, Any]:
    """The history document of the customer's entitlement `ref` (id or feature key)."""
    now = utcnow()
    tz = zone(window_time_zone)
    _, row, key = await resolve(session, tenant_id, customer_ref, ref, now)
    if row.kind != Kind.METERED:
        raise ValidationFailed.on("entitlementIdOrFeatureKey", "only a metered entitlement has a history")
    end = min(utc(to) or now, now, row.active_to or now)
    if end <= row.active_from:  # nothing to tell, and no period to work out so far back
        raise ValidationFailed.on("to", "must be after the entitlement's start")
    start = max(utc(from_) or period_at(usage_period(row), end)[0], row.active_from)
    if start >= end:
        raise ValidationFailed.on("from", "must be before 'to', within the entitlement's life and the past")
    with openmeter_fields({"window_size": "windowSize"}):
        windows, segments = await history.history(session, row, key, start=start, end=end, size=window_size, tz=tz)
    return {
        "windowedHistory": [
            {"period": _period(w.start, w.end), "usage": codec.quantity_number(w.usage),
             "balanceAtStart": value_out(w.at_start)["balance"]}
            for w in windows
        ],
        "burndownHistory": [_segment_out(s) for s in segments],
    }  # fmt: skip


def _period(start: datetime, end: datetime) -> dict[str, datetime]:
    return {"from": start, "to": end}


def _segment_out(segment: history.Segment) -> dict[str, Any]:
    first, last = segment.at_start, segment.at_end
    held_then, held_after = _held(first, segment.start), _held(last, segment.start)
    return {
        "period": _period(segment.start, segment.end),
        "usage": codec.quantity_number((period_usage(last) or ZERO) - (period_usage(first) or ZERO)),
        "overage": codec.quantity_number(max((last.overage or ZERO) - (first.overage or ZERO), ZERO)),
        "balanceAtStart": value_out(first)["balance"],
        "grantBalancesAtStart": {g: codec.quantity_number(b) for g, b in held_then.items()},
        "balanceAtEnd": value_out(last)["balance"],
        "grantBalancesAtEnd": {g: codec.quantity_number(b) for g, b in held_after.items()},
        "grantUsages": [
            {"grantId": g, "usage": codec.quantity_number(b - held_after[g])}
            for g, b in held_then.items() if b > held_after.get(g, b)
        ],
    }  # fmt: skip


def _held(state: EntitlementState, at: datetime) -> dict[str, Any]:
    """What each grant live during the segment (live at its start: nothing starts or ends
    inside one) holds in `state`."""
    return {g.grant.id: g.balance for g in state.grants if is_live(g.grant, at)}
