"""What entitlements tell vendors: notifications emitted in the transaction of their cause.

Every function here runs inside the caller's transaction and puts rows in the outbox through
`notifications.service.emit`, so a notification exists exactly when its cause was committed.
"Once" comes from dedupe keys built from what makes an occurrence unique (docs/notifications.md):

    entitlement.threshold_reached  threshold:{entitlement}:{period µs}:{label}@{level}  per crossing
    entitlement.overdraft_started  overdraft:{entitlement}:{period µs}@{level}          per crossing
    entitlement.hard_limit_reached hard_limit:{entitlement}:{period µs}@{level}         per crossing
    entitlement.period_reset       period_reset:{entitlement}:{period µs}               per period
    entitlement.usage_denied       denied:{customer}:{feature}:{UTC hour}               per hour
    entitlement.changed            changed:{customer}:{feature}:{row}:{at µs}           per change
                                   changed:grant:{grant}:{created|voided}
    seat.overdraft                 seat_overdraft:{entitlement}:{item}:{at µs}          per crossing
    reservation.expired            reservation_expired:{reservation}                    per hold
    grant.expiring                 grant_expiring:{grant}                               per grant

A level's key names the level (the effective limits, raised by live grants, say where it
lies). Usage only grows within a period (corrections aside), so it reaches a level once: a level
reported once stays reported while usage stays above it, however many writers observe the
move. A top-up that lifts a level above the usage makes a new level, reported when usage
reaches it (a prepaid customer is warned again after every top-up).

The hot paths pay for this only when something happened: `usage_moved` decides from numbers
the caller already holds (the counter after the move, its carry and the increment) and the
tenant's rules, cached per process; it reads the database only to name the customer and
feature of a crossing, and once per period to see whether the period before had usage.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any, NamedTuple

from sqlalchemy import exists, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.customers.models import Customer
from allotment.entitlements.crossings import Crossing, Kind, Threshold, crossings, worth_watching
from allotment.entitlements.engine import (
    ONE,
    ZERO,
    Decision,
    Grant,
    MeteredEntitlement,
    Reason,
    decide,
)
from allotment.entitlements.models import (
    CustomerEntitlement,
    EntitlementUsage,
    Feature,
    GrantRecord,
)
from allotment.notifications import rules, service
from allotment.notifications.models import Notification
from allotment.types import to_micros

THRESHOLD_REACHED = "entitlement.threshold_reached"
OVERDRAFT_STARTED = "entitlement.overdraft_started"
HARD_LIMIT_REACHED = "entitlement.hard_limit_reached"
USAGE_DENIED = "entitlement.usage_denied"
PERIOD_RESET = "entitlement.period_reset"
CHANGED = "entitlement.changed"
GRANT_EXPIRING = "grant.expiring"
SEAT_OVERDRAFT = "seat.overdraft"
RESERVATION_EXPIRED = "reservation.expired"

_TYPES = {Kind.THRESHOLD: THRESHOLD_REACHED, Kind.OVERDRAFT: OVERDRAFT_STARTED, Kind.HARD_LIMIT: HARD_LIMIT_REACHED}
_KEYS = {Kind.THRESHOLD: "threshold", Kind.OVERDRAFT: "overdraft", Kind.HARD_LIMIT: "hard_limit"}


class Where(NamedTuple):
    """The entitlement and usage period some usage moved in (a tuple: built per consume)."""

    tenant_id: str
    entitlement_id: str
    customer_id: str
    feature_id: str
    period_start: datetime
    period_end: datetime | None

    @property
    def period_us(self) -> int:
        return to_micros(self.period_start)


def standing_of(
    ent: MeteredEntitlement, used: Decimal, reserved: Decimal, grants: Sequence[Grant], at: datetime
) -> Decision:
    """The counter's numbers (usage, effective limits, balance) when no decision is at hand."""
    return decide(ent, usage=used, reserved=reserved, grants=grants, quantity=ONE, at=at)


@dataclass
class Pending:
    """What a batch of usage moves tells, written at its end: one statement for the
    notifications (in the order they were found) and one for the upsell asks."""

    notes: list[service.Note] = field(default_factory=list)
    # (tenant, entitlement, period start) -> usage and period of the latest ask
    asks: dict[tuple[str, str, datetime], tuple[Decimal, tuple[datetime, datetime | None], datetime]] = field(
        default_factory=dict
    )

    async def write(self, session: AsyncSession) -> None:
        """Write and forget what was collected; in the transaction of the moves."""
        # Imported here: upsell reads through check, which imports this module.
        from allotment.entitlements import upsell_queue

        notes, asks = self.notes, self.asks
        self.notes, self.asks = [], {}
        if notes:
            await service.emit_all(session, notes)
        if asks:
            await upsell_queue.ask_all(session, [(t, e, *v) for (t, e, _), v in asks.items()])


def would_tell(where: Where, *, before: Decimal, after: Decision, opening: Decimal = ZERO) -> bool | None:
    """Whether `usage_moved` would record anything for this move; None when that cannot be
    known without reading the database (the tenant's rules are not in this process's cache)."""
    soft, hard, usage = after.soft_limit, after.hard_limit, after.usage
    if soft is None or usage is None or not worth_watching(soft, hard):
        return False
    tenant_rules = rules.cached(where.tenant_id)
    if tenant_rules is None:
        return None
    if _first_usage(before, usage, opening):  # may tell of a reset
        return True
    return bool(_crossed(before, after, soft, hard, tenant_rules.thresholds_for(where.feature_id)))


_MICRO = Decimal(1_000_000)
_MAX_COUNTER = 2**63 - 1


def quiet_levels(where: Where, ent: MeteredEntitlement) -> tuple[tuple[int, ...] | None, bool]:
    """`would_tell` as levels, for a statement to apply to a counter it has not read yet.

    A move of `used` from b to a (millionths) tells exactly when b is the counter's `carried`
    (a first usage: from zero, or from the overage carried in), or some level lies in (b, a]:
    each threshold's level rounded up to a millionth, the hard limit, and the soft limit plus
    one millionth (overdraft starts when usage *passes* it).
    Returns (None, True) when nothing is ever told, ((), False) when it cannot be known here
    (the tenant's rules are not cached), else (levels, True). Levels past what a counter holds
    are never reached and left out.
    """
    soft = ent.included if ent.soft_limit is None else ent.soft_limit
    if not worth_watching(soft, ent.hard_limit):
        return None, True
    tenant_rules = rules.cached(where.tenant_id)
    if tenant_rules is None:
        return (), False
    found = {soft * _MICRO + 1}
    if ent.hard_limit is not None:
        found.add(ent.hard_limit * _MICRO)
    for threshold in tenant_rules.thresholds_for(where.feature_id):
        level = threshold.level(soft)
        if level is not None:
            found.add((level * _MICRO).to_integral_value(rounding=ROUND_CEILING))
    return tuple(sorted(int(level) for level in found if level <= _MAX_COUNTER)), True


def level_text(level: Decimal) -> str:
    """A level as its dedupe key names it: rounded up to a millionth (what a counter holds),
    without trailing zeros, so every writer that computes it from the same limits names it
    alike (`40`, `40.000000` and `40.0` are one level)."""
    micros = (level * _MICRO).to_integral_value(rounding=ROUND_CEILING)
    return format((micros / _MICRO).normalize(), "f")


def _first_usage(before: Decimal, usage: Decimal, opening: Decimal) -> bool:
    """Whether usage grew from where the period opened: zero, or the overage carried into it
    (part of the counter before anyone used the period)."""
    return before == opening and usage > opening


def _crossed(
    before: Decimal, after: Decision, soft: Decimal, hard: Decimal | None, thresholds: Iterable[Threshold]
) -> list[Crossing]:
    """What the move reached; passing what grants hold is no overdraft when paying as you go."""
    assert after.usage is not None
    found = crossings(before, after.usage, soft=soft, hard=hard, thresholds=thresholds)
    if after.reason == Reason.PAY_AS_YOU_GO:
        return [c for c in found if c.kind is not Kind.OVERDRAFT]
    return found


async def usage_moved(
    session: AsyncSession, where: Where, *, before: Decimal, after: Decision, at: datetime,
    opening: Decimal = ZERO, pending: Pending | None = None,
) -> list[Crossing]:
    """Call after usage of a metered entitlement grew from `before` to `after.usage`.

    `after` carries the effective limits (raised by live grants), as `engine.decide` gives
    them; `opening` is the overage carried into the period, part of its counter (the counter
    statement returns it: `carried`). Emits a notification for each threshold, the start of
    overdraft and the hard limit reached by this move, once per level (a grant that lifts a
    level above the usage arms it again at its new level), and the reset when this is the
    first usage of a period that follows one with usage: a move from `opening`. Returns what
    was crossed (emitted now or, by dedupe, before). With `pending`, the crossings'
    notifications and upsell ask are collected there for the caller to write once for a
    whole batch.
    """
    soft, hard, usage = after.soft_limit, after.hard_limit, after.usage
    if soft is None or usage is None or not worth_watching(soft, hard):
        return []
    tenant_rules = await rules.for_tenant(session, where.tenant_id)
    found = _crossed(before, after, soft, hard, tenant_rules.thresholds_for(where.feature_id))
    if _first_usage(before, usage, opening):
        await _maybe_reset(session, where, at)
    if not found:
        return found
    mine = Pending() if pending is None else pending
    base = await _usage_payload(session, where, after, at)
    for c in found:
        key = f"{_KEYS[c.kind]}:{where.entitlement_id}:{where.period_us}"
        payload = dict(base)
        if c.threshold is not None:
            key = f"{key}:{c.threshold.label}"
        key = f"{key}@{level_text(c.level)}"
        if c.threshold is not None:
            payload["threshold"] = {"type": c.threshold.type, "value": c.threshold.value,
                                    "label": c.threshold.label, "level": c.level}
        mine.notes.append(service.Note(where.tenant_id, _TYPES[c.kind], key, where.customer_id, payload, at))
    period = (where.period_start, where.period_end)
    mine.asks[(where.tenant_id, where.entitlement_id, where.period_start)] = (usage, period, at)
    if pending is None:
        await mine.write(session)
    return found


async def denied(
    session: AsyncSession,
    tenant_id: str,
    *,
    customer_id: str,
    feature_id: str,
    entitlement_id: str | None,
    decision: Decision,
    quantity: Decimal,
    consume: bool,
    period_start: datetime | None,
    period_end: datetime | None,
    at: datetime,
    item: str | None = None,
    reserved: Decimal = ZERO,
) -> None:
    """A recorded denial: at most one `usage_denied` per customer, feature and UTC hour.

    A customer hammering a denied feature a thousand times a second makes one notification
    an hour (with the first denial's numbers), not a thousand a second; every denial stays
    listed at /v1/denials. A consume refused at the hard limit also reaches it, once per level.
    `reserved` is what open holds kept from the balance: the upsell asked for must make room
    for them as well as for the refused quantity.
    """
    hour = to_micros(at) // 3_600_000_000
    names = await _names_now(session, customer_id, feature_id)
    payload: dict[str, Any] = {
        **names, "entitlement_id": entitlement_id, "quantity": quantity, "consume": consume, "reason": str(decision.reason),
        **_numbers(decision), "period_start": period_start, "period_end": period_end, "at": at,
    }
    if item is not None:  # a seat activation: the item refused
        payload["item"] = item
    if consume and entitlement_id is not None and period_start is not None and _at_the_cap(decision, quantity):
        assert decision.hard_limit is not None
        key = f"hard_limit:{entitlement_id}:{to_micros(period_start)}@{level_text(decision.hard_limit)}"
        await service.emit(session, tenant_id, type=HARD_LIMIT_REACHED, dedupe_key=key, customer_id=customer_id,
                           payload={k: v for k, v in payload.items() if k not in ("quantity", "consume", "reason")},
                           at=at)
    first = await service.emit(
        session, tenant_id, type=USAGE_DENIED, dedupe_key=f"denied:{customer_id}:{feature_id}:{hour}",
        customer_id=customer_id, payload=payload, at=at,
    )
    if first and entitlement_id is not None and period_start is not None and decision.usage is not None:
        await _suggest_upsell(session, tenant_id, entitlement_id, usage=decision.usage + reserved,
                              period=(period_start, period_end), at=at)


def _at_the_cap(decision: Decision, quantity: Decimal) -> bool:
    """Whether a refused consume met the hard limit: refused by it, for no more than the limit
    itself. Refusing more than the whole limit says nothing of where usage stands, and would
    spend the level's one notice before usage gets there."""
    hard = decision.hard_limit
    return decision.reason == "hard_limit" and hard is not None and quantity <= hard


async def seat_taken(
    session: AsyncSession, row: CustomerEntitlement, *, active: int, item: str, decision: Decision, at: datetime
) -> None:
    """An activation that took the gauge from the paid seats to one above them, or that
    filled the last seat under the hard limit.

    Each such activation is its own crossing (the gauge row serialises them), so going back
    under and over again is a new `seat.overdraft`, and filling the last seat again a new
    `entitlement.hard_limit_reached` (seats have no period to tell it once in).
    """
    paid, hard = decision.soft_limit, decision.hard_limit
    over = paid is not None and active - 1 <= paid < active and decision.reason != Reason.PAY_AS_YOU_GO
    full = hard is not None and active - 1 < hard <= active
    if not (over or full):
        return
    payload = {**await _names_now(session, row.customer_id, row.feature_id), "entitlement_id": row.id,
               "item": item, "active": active, **_numbers(decision), "at": at}
    if over:
        await service.emit(session, row.tenant_id, type=SEAT_OVERDRAFT,
                           dedupe_key=f"seat_overdraft:{row.id}:{item}:{to_micros(at)}",
                           customer_id=row.customer_id, payload=payload, at=at)
        await _suggest_upsell(session, row.tenant_id, row.id, usage=Decimal(active), period=None, at=at)
    if full:
        await service.emit(session, row.tenant_id, type=HARD_LIMIT_REACHED,
                           dedupe_key=f"hard_limit:{row.id}:seat:{item}:{to_micros(at)}",
                           customer_id=row.customer_id, payload=payload, at=at)


async def _suggest_upsell(
    session: AsyncSession,
    tenant_id: str,
    entitlement_id: str,
    *,
    usage: Decimal,
    period: tuple[datetime, datetime | None] | None,
    at: datetime,
) -> None:
    """A crossing or a first denial is when a customer may need more: ask the worker for
    `upsell.suggested` (once per entitlement and period, when the usage projected to the
    period end does not fit; upsell_queue.py). Seats have no usage period of their own:
    `period` None takes the row's (monthly)."""
    # Imported here: upsell reads through check, which imports this module.
    from allotment.entitlements import upsell, upsell_queue

    if period is None:
        row = await session.get(CustomerEntitlement, entitlement_id)
        if row is None:
            return
        period = upsell.period_of(row, at)
    await upsell_queue.ask(session, tenant_id, entitlement_id, usage=usage, period=period, at=at)


async def reservations_expired(
    session: AsyncSession, row: CustomerEntitlement, gone: Sequence[tuple[str, Decimal, datetime]], at: datetime
) -> None:
    """Holds (id, quantity, expired at) that `reservations.sweep` just gave back."""
    names = await _names(session, row.customer_id, row.feature_id)
    for reservation_id, quantity, expired_at in gone:
        payload = {**names, "reservation_id": reservation_id, "quantity": quantity, "expired_at": expired_at,
                   "at": at}
        await service.emit(session, row.tenant_id, type=RESERVATION_EXPIRED,
                           dedupe_key=f"reservation_expired:{reservation_id}", customer_id=row.customer_id,
                           payload=payload, at=at)


async def entitlement_changed(
    session: AsyncSession, tenant_id: str, customer_id: str, feature_id: str, *, changes: Sequence[str] | None,
    at: datetime,
) -> bool:
    """The customer's entitlement to a feature changed at `at`; the payload is what holds now.

    `changes` None: a change scheduled earlier took effect at `at` (`took_effect`, or `ended`
    when nothing holds from then). False when this change was told already.
    """
    row: CustomerEntitlement | None = await session.scalar(
        select(CustomerEntitlement).where(
            CustomerEntitlement.tenant_id == tenant_id,
            CustomerEntitlement.customer_id == customer_id,
            CustomerEntitlement.feature_id == feature_id,
            CustomerEntitlement.active_from <= at,
            (CustomerEntitlement.active_to.is_(None)) | (CustomerEntitlement.active_to > at),
        )
    )
    if changes is None:
        changes = ["ended"] if row is None else ["took_effect"]
    payload = {**await _names(session, customer_id, feature_id), "changes": list(dict.fromkeys(changes)),
               "entitlement": None if row is None else _entitlement(row), "at": at}
    key = f"changed:{customer_id}:{feature_id}:{row.id if row else 'none'}:{to_micros(at)}"
    return await service.emit(session, tenant_id, type=CHANGED, dedupe_key=key, customer_id=customer_id,
                              payload=payload, at=at)


async def grant_changed(session: AsyncSession, record: GrantRecord, *, change: str, at: datetime) -> None:
    """A grant was created or voided: the customer's limits on the feature move with it."""
    payload = {**await _names(session, record.customer_id, record.feature_id), "changes": [f"grant_{change}"],
               "grant": _grant(record), "at": at}
    await service.emit(session, record.tenant_id, type=CHANGED, dedupe_key=f"changed:grant:{record.id}:{change}",
                       customer_id=record.customer_id, payload=payload, at=at)


async def expiring_grants(session: AsyncSession, *, at: datetime, limit: int = 1000) -> int:
    """Emit `grant.expiring` for grants (of any tenant) expiring within their lead time.

    Run periodically by the delivery worker. Grants already told about are skipped by the
    query itself; returns how many were emitted.
    """
    told = exists().where(
        Notification.tenant_id == GrantRecord.tenant_id,
        Notification.dedupe_key == literal("grant_expiring:") + GrantRecord.id,
    )
    horizon = at + await rules.longest_lead_time(session)
    candidates = list(await session.scalars(
        select(GrantRecord)
        .where(GrantRecord.voided_at.is_(None), GrantRecord.expires_at > at, GrantRecord.expires_at <= horizon,
               ~told)
        .order_by(GrantRecord.expires_at)
        .limit(limit)
    ))
    emitted = 0
    for record in candidates:
        assert record.expires_at is not None
        lead = (await rules.for_tenant(session, record.tenant_id)).lead_time_for(record.feature_id)
        if lead is None or record.expires_at - lead > at:
            continue
        payload = {**await _names(session, record.customer_id, record.feature_id), "grant": _grant(record),
                   "expires_in_seconds": int((record.expires_at - at) / timedelta(seconds=1)), "at": at}
        emitted += await service.emit(
            session, record.tenant_id, type=GRANT_EXPIRING, dedupe_key=f"grant_expiring:{record.id}",
            customer_id=record.customer_id, payload=payload, at=at,
        )
    return emitted


# --- helpers ----------------------------------------------------------------------------------


async def _maybe_reset(session: AsyncSession, where: Where, at: datetime) -> None:
    """The first usage of a period: tell of the reset when the period just before had usage.

    The worker's scan tells it at the boundary when nobody uses the period first
    (entitlements/resets.py); this path tells it before this usage's own crossings, with the
    same opening numbers the scan would give (not this usage's).
    """
    from allotment.entitlements.resets import period_end, tell  # resets builds on this module

    previous = (await session.execute(
        select(EntitlementUsage.period_start, EntitlementUsage.used, CustomerEntitlement)
        .join(CustomerEntitlement, CustomerEntitlement.id == EntitlementUsage.entitlement_id)
        .where(
            EntitlementUsage.tenant_id == where.tenant_id,
            EntitlementUsage.entitlement_id == where.entitlement_id,
            EntitlementUsage.period_start < where.period_us,
        )
        .order_by(EntitlementUsage.period_start.desc())
        .limit(1)
    )).first()
    if previous is None or int(previous.used) <= 0:
        return
    if period_end(previous.CustomerEntitlement, int(previous.period_start)) != where.period_us:
        return  # the period just before had no usage: nothing was reset
    await tell(session, previous.CustomerEntitlement, int(previous.period_start), where.period_us,
               int(previous.used), at)


async def tell_reset(
    session: AsyncSession, where: Where, numbers: Decision, *, previous_start: datetime,
    previous_usage: Decimal, at: datetime,
) -> bool:
    """`entitlement.period_reset` for the period of `where`, once; False if already told."""
    payload = {**await _usage_payload(session, where, numbers, at),
               "previous_period_start": previous_start, "previous_usage": previous_usage}
    return await service.emit(session, where.tenant_id, type=PERIOD_RESET,
                              dedupe_key=f"period_reset:{where.entitlement_id}:{where.period_us}",
                              customer_id=where.customer_id, payload=payload, at=at)


async def _usage_payload(session: AsyncSession, where: Where, after: Decision, at: datetime) -> dict[str, Any]:
    names = await _names_now(session, where.customer_id, where.feature_id)
    return {**names, "entitlement_id": where.entitlement_id,
            **_numbers(after), "period_start": where.period_start, "period_end": where.period_end, "at": at}


async def _names_now(session: AsyncSession, customer_id: str, feature_id: str) -> dict[str, Any]:
    """The keys, and the feature's name as it is now: unlike its key, a name may change, so it
    is read afresh (only crossings, resets and denials come here, not every check). OpenMeter's
    bodies show it as `feature.name`."""
    names = await _names(session, customer_id, feature_id)
    names["feature"]["name"] = await session.scalar(select(Feature.name).where(Feature.id == feature_id))
    return names


def _numbers(d: Decision) -> dict[str, Decimal | None]:
    return {"usage": d.usage, "included": d.included, "soft_limit": d.soft_limit, "hard_limit": d.hard_limit,
            "balance": d.balance}


# Keys never change and ids are never reused: a process may remember them for good.
_keys: dict[str, str] = {}


async def _names(session: AsyncSession, customer_id: str, feature_id: str) -> dict[str, Any]:
    if customer_id not in _keys or feature_id not in _keys:
        if len(_keys) >= 100_000:
            _keys.clear()
        found = (await session.execute(
            select(Customer.key, Feature.key)
            .join(Feature, Feature.tenant_id == Customer.tenant_id)
            .where(Customer.id == customer_id, Feature.id == feature_id)
        )).first()
        if found is not None:
            _keys[customer_id], _keys[feature_id] = found
    return {"customer": {"id": customer_id, "key": _keys.get(customer_id)},
            "feature": {"id": feature_id, "key": _keys.get(feature_id)}}


def _entitlement(row: CustomerEntitlement) -> dict[str, Any]:
    return {"id": row.id, "kind": row.kind, "source": row.source, "has_access": row.has_access,
            "config": row.config, "usage_period": row.usage_period, "included": row.included,
            "soft_limit": row.soft_limit, "hard_limit": row.hard_limit, "active_from": row.active_from,
            "active_to": row.active_to}


def _grant(record: GrantRecord) -> dict[str, Any]:
    return {"id": record.id, "amount": record.amount, "priority": record.priority,
            "effective_at": record.effective_at, "expires_at": record.expires_at, "voided_at": record.voided_at}
