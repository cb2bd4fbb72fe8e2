"""Grants: extra units on a customer's metered feature (a prepaid top-up, a promotion, a credit).

A grant belongs to the customer and the feature, not to one entitlement row, so it survives
plan changes. While live (effective, not expired, not voided) it raises the soft and hard
limits of the customer's metered entitlement by what it holds in the current period; usage
burns grants by priority, earliest expiry, oldest, with the period's included units as a grant
of priority 1 expiring at the period end (engine.burn), and at each reset a grant carries its remainder clamped to [min_rollover, max_rollover].
`standing.py` replays periods to find what each grant holds now (docs/grants.md).

Creating and voiding are admin changes: each writes an audit row in the same transaction.
Functions take the session first and `at`, and never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.customers import service as customers
from allotment.entitlements import audit, features, notices, standing
from allotment.entitlements.check import read_usage
from allotment.entitlements.engine import DEFAULT_PRIORITY, ZERO, Grant, Kind, burn, has_ended
from allotment.entitlements.models import CustomerEntitlement, GrantRecord
from allotment.entitlements.periods import Interval, UsagePeriod
from allotment.entitlements.recurring import grant_id_of
from allotment.errors import Conflict, NotFound, ValidationFailed
from allotment.types import as_utc, new_id

MAX_AMOUNT = Decimal(10) ** 12  # like a check's quantity: counters in millionths stay in 64 bits
MAX_PRIORITY = 1_000_000
ENTITY = "grant"


async def create(
    session: AsyncSession,
    tenant_id: str,
    *,
    customer: str,
    feature: str,
    amount: Decimal,
    priority: int = DEFAULT_PRIORITY,
    effective_at: datetime | None = None,
    expires_at: datetime | None = None,
    expiration: dict[str, Any] | None = None,
    min_rollover: Decimal = ZERO,
    max_rollover: Decimal | None = None,
    recurrence: UsagePeriod | None = None,
    metadata: dict[str, Any] | None = None,
    annotations: dict[str, Any] | None = None,
    at: datetime,
    actor: str = audit.SYSTEM,
) -> GrantRecord:
    """Grant `amount` more units of a metered feature to a customer from `effective_at` (default `at`).

    `customer` and `feature` are keys or ids; an unknown one is a 404 naming it, and a
    feature the customer holds as another kind than metered is refused. Bad values are
    refused naming the field. A `recurrence` makes the grant start over with its whole amount
    at each of its steps (its anchor and zone say where they fall); what it held is forfeit.
    `expiration` is kept as the client's own way of putting `expires_at` (a span such as
    `{"duration": "DAY", "count": 7}`), to be answered back as it was given; so are
    `annotations` (OpenMeter's, which nothing here reads).
    """
    at = as_utc(at)
    effective = at if effective_at is None else _aware("effective_at", effective_at)
    expires = None if expires_at is None else _aware("expires_at", expires_at)
    _validate(amount, priority, effective, expires, min_rollover, max_rollover)
    if recurrence is not None and recurrence.interval is Interval.NONE:
        raise ValidationFailed.on("recurrence.interval", "must be DAY, WEEK, MONTH or YEAR")
    found = await customers.find(session, tenant_id, customer)
    feat = await features.held_by(session, tenant_id, feature, customer_id=found.id, at=at)
    await _require_metered(session, tenant_id, found.id, feat.id, customer, feature, at)
    record = GrantRecord(
        id=new_id("grt"), tenant_id=tenant_id, customer_id=found.id, feature_id=feat.id,
        amount=amount, priority=priority, effective_at=effective, expires_at=expires,
        expiration=None if expires is None or expiration is None else dict(expiration),
        voided_at=None, void_reason=None, min_rollover=min_rollover, max_rollover=max_rollover,
        metadata_=dict(metadata or {}), annotations=annotations, created_at=at,
        recurrence_interval=None if recurrence is None else recurrence.interval.value,
        recurrence_anchor=None if recurrence is None else recurrence.anchor,
        recurrence_timezone=None if recurrence is None else recurrence.tz.key,
    )
    session.add(record)
    await session.flush()
    await audit.record(
        session, tenant_id, actor=actor, action="grant.created", entity_type=ENTITY,
        entity_id=record.id, before=None, after=audit.snapshot(record), at=at,
    )
    await notices.grant_changed(session, record, change="created", at=at)
    return record


async def get(session: AsyncSession, tenant_id: str, grant_id: str) -> GrantRecord:
    found = await session.get(GrantRecord, grant_id)
    if found is None or found.tenant_id != tenant_id:
        raise NotFound("grant", grant_id)
    return found


async def list_(
    session: AsyncSession,
    tenant_id: str,
    *,
    customer: str,
    feature: str,
    at: datetime,
    include_voided: bool = True,
    after: str | None = None,
    limit: int = 50,
) -> list[GrantRecord]:
    """A customer's grants on a feature (the one it holds at `at`: features.held_by), oldest
    first (ids sort by time); unknown names: 404."""
    customer_id = (await customers.find(session, tenant_id, customer)).id
    feature_id = (await features.held_by(session, tenant_id, feature, customer_id=customer_id, at=as_utc(at))).id
    stmt = select(GrantRecord).where(
        GrantRecord.tenant_id == tenant_id,
        GrantRecord.customer_id == customer_id,
        GrantRecord.feature_id == feature_id,
    )
    if not include_voided:
        stmt = stmt.where(GrantRecord.voided_at.is_(None))
    if after is not None:
        stmt = stmt.where(GrantRecord.id > after)
    return list(await session.scalars(stmt.order_by(GrantRecord.id).limit(limit)))


async def void(
    session: AsyncSession, tenant_id: str, grant_id: str, *, reason: str, at: datetime, actor: str = audit.SYSTEM
) -> GrantRecord:
    """End a grant at `at`: from then on it raises no limit and holds nothing. Twice is a 409."""
    at = as_utc(at)
    if not reason or not reason.strip():
        raise ValidationFailed.on("reason", "is required")
    if len(reason) > 512:
        raise ValidationFailed.on("reason", "must be at most 512 characters")
    record = await session.scalar(
        select(GrantRecord)
        .where(GrantRecord.id == grant_id, GrantRecord.tenant_id == tenant_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if record is None:
        raise NotFound("grant", grant_id)
    if record.voided_at is not None:
        err = Conflict(f"grant '{grant_id}' was already voided at {record.voided_at.isoformat()}")
        err.code = "grant_voided"
        raise err
    before = audit.snapshot(record)
    record.voided_at = at
    record.void_reason = reason
    await session.flush()
    await audit.record(
        session, tenant_id, actor=actor, action="grant.voided", entity_type=ENTITY,
        entity_id=record.id, before=before, after=audit.snapshot(record), at=at,
    )
    await notices.grant_changed(session, record, change="voided", at=at)
    return record


# --- what grants hold ---------------------------------------------------------------------------


async def of_period(
    session: AsyncSession, tenant_id: str, *, customer: str, feature: str, at: datetime
) -> list[Grant]:
    """The customer's grants on the feature with their amounts for the usage period containing `at`.

    Grants that ended before that period are left out. Without a metered entitlement in force
    at `at` there is no usage period: the grants effective by `at` keep their granted amounts.
    """
    at = as_utc(at)
    customer_id = (await customers.find(session, tenant_id, customer)).id
    feature_id = (await features.held_by(session, tenant_id, feature, customer_id=customer_id, at=at)).id
    row = await _metered_row(session, tenant_id, customer_id, feature_id, at)
    if row is not None:
        return [g for g in (await standing.standing(session, row, at)).grants if g.id != standing.ROLLED_OVER]
    return [g for g in map(standing.grant_of, await _records(session, tenant_id, customer_id, feature_id))
            if g.effective_at <= at and not has_ended(g, at)]


async def balances(session: AsyncSession, tenant_id: str, records: Sequence[GrantRecord], *, at: datetime) -> dict[str, Decimal]:
    """grant id -> what it still holds at `at`, after this period's usage burned it down.

    A grant not yet effective holds its amount; an ended one (expired, voided) holds nothing.
    """
    at = as_utc(at)
    out: dict[str, Decimal] = {}
    for customer_id, feature_id in dict.fromkeys((r.customer_id, r.feature_id) for r in records):
        row = await _metered_row(session, tenant_id, customer_id, feature_id, at)
        left: dict[str, Decimal] = {}
        if row is not None:
            counted = await read_usage(session, row, at)
            burned = burn(counted.grants, row.included or ZERO, counted.used + counted.reserved, at,
                          included_until=standing.included_until(row, counted.period_end)).grants
            # a recurring grant holds what its instance live at `at` holds (ended ones: nothing)
            left = {grant_id_of(g.id): burned[g.id] for g in counted.grants if not has_ended(g, at)}
        for r in records:
            if (r.customer_id, r.feature_id) == (customer_id, feature_id):
                out[r.id] = _balance(standing.grant_of(r), left, at)
    return out


def _balance(grant: Grant, left: dict[str, Decimal], at: datetime) -> Decimal:
    if has_ended(grant, at):
        return ZERO
    if grant.effective_at > at:
        return grant.amount
    return left.get(grant.id, grant.amount)


# --- helpers ----------------------------------------------------------------------------------


def _aware(name: str, value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValidationFailed.on(name, "needs a time zone offset")
    return as_utc(value)


def _validate(
    amount: Decimal,
    priority: int,
    effective_at: datetime,
    expires_at: datetime | None,
    min_rollover: Decimal,
    max_rollover: Decimal | None,
) -> None:
    _quantity("amount", amount, positive=True)
    _quantity("min_rollover", min_rollover)
    if max_rollover is not None:
        _quantity("max_rollover", max_rollover)
        if max_rollover < min_rollover:
            raise ValidationFailed.on("max_rollover", f"must not be less than min_rollover ({min_rollover})")
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= MAX_PRIORITY:
        raise ValidationFailed.on("priority", f"must be a whole number from 0 to {MAX_PRIORITY}")
    if expires_at is not None and expires_at <= effective_at:
        raise ValidationFailed.on("expires_at", "must be after effective_at")


def _quantity(name: str, value: Decimal, *, positive: bool = False) -> None:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ValidationFailed.on(name, "must be a finite number")
    if value < 0 or (positive and value == 0):
        raise ValidationFailed.on(name, "must be greater than 0" if positive else "must not be negative")
    if value >= MAX_AMOUNT:
        raise ValidationFailed.on(name, f"must be less than {MAX_AMOUNT:f}")
    exponent = value.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -6:
        raise ValidationFailed.on(name, "must have at most 6 decimals")


async def _require_metered(
    session: AsyncSession, tenant_id: str, customer_id: str, feature_id: str, customer: str, feature: str,
    at: datetime,
) -> None:
    """Grants extend metered entitlements: the customer's current (or next) one must be metered."""
    current = await session.scalar(
        select(CustomerEntitlement)
        .where(
            CustomerEntitlement.tenant_id == tenant_id,
            CustomerEntitlement.customer_id == customer_id,
            CustomerEntitlement.feature_id == feature_id,
            or_(CustomerEntitlement.active_to.is_(None), CustomerEntitlement.active_to > at),
        )
        .order_by(CustomerEntitlement.active_from)
        .limit(1)
    )
    if current is None:
        raise NotFound("entitlement", f"{customer}/{feature}")
    if current.kind != Kind.METERED:
        raise ValidationFailed.on(
            "feature", f"'{feature}' is a {current.kind} entitlement of '{customer}': grants apply to metered ones"
        )


async def _metered_row(
    session: AsyncSession, tenant_id: str, customer_id: str, feature_id: str, at: datetime
) -> CustomerEntitlement | None:
    row: CustomerEntitlement | None = await session.scalar(
        select(CustomerEntitlement).where(
            CustomerEntitlement.tenant_id == tenant_id,
            CustomerEntitlement.customer_id == customer_id,
            CustomerEntitlement.feature_id == feature_id,
            CustomerEntitlement.kind == Kind.METERED.value,
            CustomerEntitlement.active_from <= at,
            or_(CustomerEntitlement.active_to.is_(None), CustomerEntitlement.active_to > at),
        )
    )
    return row


async def _records(session: AsyncSession, tenant_id: str, customer_id: str, feature_id: str) -> list[GrantRecord]:
    return list(await session.scalars(
        select(GrantRecord).where(
            GrantRecord.tenant_id == tenant_id,
            GrantRecord.customer_id == customer_id,
            GrantRecord.feature_id == feature_id,
        )
    ))
