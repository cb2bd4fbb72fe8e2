"""The overdraft report (`/v1/reports/overdraft`): who ran above what they paid for."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query

from allotment.api.deps import Cursor, Limit, Reader, ReadSession, decode_cursor, encode_cursor
from allotment.api.pages import Page
from allotment.entitlements import overdraft_report as service
from allotment.entitlements.schemas import OverdraftEpisodeRead, OverdraftRead, PeriodOverageRead
from allotment.types import AwareInstant, as_utc, utcnow

router = APIRouter(tags=["reports"])
_LIST = "/v1/reports/overdraft"
_DEFAULT_WINDOW = timedelta(days=30)
_MICRO = Decimal("0.000001")


@router.get("/v1/reports/overdraft", response_model=Page[OverdraftRead])
async def overdraft_report(
    principal: Reader,
    session: ReadSession,
    from_: Annotated[AwareInstant | None, Query(alias="from", description="Default: 30 days before `to`.")] = None,
    to: Annotated[AwareInstant | None, Query(description="Default and latest: now.")] = None,
    customer: str | None = None,
    feature: str | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, object]:
    """Customers who ran above their soft limit in the window, or were refused in it, per
    feature: for seats the time and seat-hours above it, the peak and each episode; for metered
    features each usage period whose usage passed it (as it stood then), at its largest overage.
    Both with the denials of the window."""
    at = utcnow()
    end = at if to is None else min(as_utc(to), at)  # a window ending later ends now
    start = end - _DEFAULT_WINDOW if from_ is None else as_utc(from_)
    found, after = await service.report(
        session, principal.tenant_id, start=start, end=end, at=at, customer=customer, feature=feature,
        after=decode_cursor(cursor, of=_LIST), limit=limit,
    )
    return {
        "items": [_read(item) for item in found],
        "next_cursor": None if after is None else encode_cursor(after, of=_LIST),
    }


def _read(item: service.Overdraft) -> OverdraftRead:
    base: dict[str, Any] = {"customer": item.customer, "feature": item.feature, "kind": item.kind, "included": item.included,
            "soft_limit": item.soft_limit, "hard_limit": item.hard_limit, "denials": item.denials}
    if item.seats is not None:
        seats = item.seats
        return OverdraftRead(
            **base, peak_overdraft=seats.peak_over, peak=seats.peak,
            overdraft_seconds=seats.seconds_over.quantize(_MICRO),
            overdraft_seat_hours=seats.seat_hours_over.quantize(_MICRO),
            episodes=[OverdraftEpisodeRead(started_at=e.started_at, ended_at=e.ended_at, peak=e.peak,
                                           peak_overdraft=e.peak_over) for e in seats.episodes],
        )
    return OverdraftRead(
        **base, peak_overdraft=max((p.overage for p in item.periods), default=Decimal(0)),
        periods=[PeriodOverageRead(period_start=p.period_start, period_end=p.period_end, usage=p.usage,
                                   soft_limit=p.soft_limit, overage=p.overage) for p in item.periods],
    )

