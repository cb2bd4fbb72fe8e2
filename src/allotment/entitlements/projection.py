"""Upsell arithmetic, pure: where usage will be at period end, and what would cover it.

Nothing here reads a clock or a database: usage, limits, plan tiers and top-up offers come in
as values and time as `at`. Quantities and money are `Decimal`.

Projection (docs/upsell.md): usage so far plus the remaining time at the fastest of
- the linear rate over the elapsed part of the period (usage / elapsed), once the period has
  run for its warm-up (`warm_up`: a day, or a tenth of a shorter period), and
- the rate in each trailing window the caller knows (e.g. the last 24 hours and 7 days; they
  reach back into the previous period, so they carry its rate into a period's first day).
The maximum, because a suggestion exists to prevent a denial or an overage surprise: a customer
whose usage is speeding up runs out sooner than the period average says, and one who is
slowing down has still used what they used. Before the warm-up the elapsed time is too short to
be a rate (a burst in the first seconds of a month is not 30 days of bursts): with no trailing
window the projection is the usage so far.

Picking (`pick`): along the plan's `next_tier` chain, ordered cheapest first by definition
(plans carry no prices yet), the first tier whose entitlement keeps the projection within its
soft limit wins; a prepaid top-up is the alternative (or the answer when no tier covers).
Invariants (property-tested): the projection is never below usage, is monotone in usage and
in recent usage, equals usage at the period end, a steady rate projects to rate × length after
the warm-up, and without trailing windows the usage is never multiplied by more than
length / warm-up.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Literal

from allotment.types import as_utc

ZERO = Decimal(0)
# How much of a period must pass before its own usage is extrapolated: a day holds a whole
# daily cycle of traffic; a period of a few days or less waits a tenth of its length instead.
WARM_UP = timedelta(days=1)
WARM_UP_SHARE = 10
_DAY_US = Decimal(86_400_000_000)
_EXACT = Decimal("0.000001")  # quantities carry at most six decimals


@dataclass(frozen=True)
class Recent:
    """Usage observed in the trailing `window` ending at the projection's `at`."""

    usage: Decimal
    window: timedelta


@dataclass(frozen=True)
class Projection:
    usage: Decimal
    projected: Decimal  # at the period end; equals usage when the period never ends
    rate_per_day: Decimal  # the rate used, units per day
    basis: str  # "period" (linear), "24h", "7d", ..., "early" (warming up) or "none" (nothing left)


def _us(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _label(window: timedelta) -> str:
    hours = _us(window) // 3_600_000_000
    return f"{hours // 24}d" if hours % 24 == 0 and hours >= 48 else f"{hours}h"


def project(
    usage: Decimal,
    *,
    period_start: datetime,
    period_end: datetime | None,
    at: datetime,
    recent: Sequence[Recent] = (),
) -> Projection:
    """Usage at the end of [period_start, period_end) if it goes on at the fastest known rate."""
    at, period_start = as_utc(at), as_utc(period_start)
    if period_end is None or as_utc(period_end) <= at:
        return Projection(usage, usage, ZERO, "none")
    period_end = as_utc(period_end)
    elapsed = _us(at - period_start)
    if elapsed >= warm_up(period_start, period_end):
        rates = [(usage / Decimal(elapsed), "period")]
    else:  # the usage so far, unless a trailing window knows a rate
        rates = [(ZERO, "early")]
    for r in recent:
        if _us(r.window) > 0:
            rates.append((max(r.usage, ZERO) / Decimal(_us(r.window)), _label(r.window)))
    per_us, basis = max(rates, key=lambda pair: pair[0])  # ties keep the period's own basis
    remaining = Decimal(_us(period_end - at))
    projected = (usage + per_us * remaining).quantize(_EXACT, rounding=ROUND_CEILING)
    return Projection(usage, _plain(max(projected, usage)), _plain(per_us * _DAY_US), basis)


def warm_up(period_start: datetime, period_end: datetime) -> int:
    """Microseconds of the period after which its own usage is a rate: a day, or a tenth of a
    shorter period (never zero)."""
    return max(min(_us(WARM_UP), _us(period_end - period_start) // WARM_UP_SHARE), 1)


def _plain(value: Decimal) -> Decimal:
    """Six decimals at most, without trailing zeros or an exponent."""
    q = value.quantize(_EXACT, rounding=ROUND_CEILING)
    return q.quantize(Decimal(1)) if q == q.to_integral_value() else q.normalize()


# --- what covers a projection -----------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Limits of one entitlement; soft defaults to included, hard None means never denied."""

    included: Decimal
    soft_limit: Decimal | None = None
    hard_limit: Decimal | None = None

    @property
    def soft(self) -> Decimal:
        return self.included if self.soft_limit is None else self.soft_limit

    def raised(self, extra: Decimal) -> Limits:
        """As grants raise them: both limits by `extra` (the included units stay)."""
        hard = None if self.hard_limit is None else self.hard_limit + extra
        return Limits(self.included, self.soft + extra, hard)


@dataclass(frozen=True)
class Tier:
    """A plan on the upgrade path and what it gives for the feature.

    `limits` None means unlimited access (a boolean entitlement to a counted feature).
    `upgrade_cost` is what moving to it adds per period, when prices are known.
    """

    plan_key: str
    name: str
    version: int
    limits: Limits | None
    upgrade_cost: Decimal | None = None
    currency: str | None = None


@dataclass(frozen=True)
class TopUpOffer:
    """A prepaid pack a customer can buy for the feature: `amount` units, optionally priced."""

    amount: Decimal
    price: Decimal | None = None
    currency: str | None = None
    expires_after_days: int | None = None


@dataclass(frozen=True)
class TopUpPick:
    offer: TopUpOffer
    count: int
    units: Decimal
    total_price: Decimal | None


class Action(enum.StrEnum):
    NONE = "none"  # the projection fits: nothing to suggest
    UPGRADE = "upgrade"
    TOP_UP = "top_up"
    CONTACT_SALES = "contact_sales"  # nothing on offer covers it


@dataclass(frozen=True)
class Pick:
    """The recommendation, the tier and top-up considered, and how far the tier covers.

    `covers` is "soft" when the tier keeps the projection within its soft limit, "hard" when
    it only keeps it from being denied (overdraft, billed as overage).
    """

    action: Action
    plan: Tier | None = None
    covers: Literal["soft", "hard"] | None = None
    top_up: TopUpPick | None = None


def fits(projected: Decimal, limits: Limits | None) -> bool:
    """Within the soft limit (or unlimited): no overdraft expected."""
    return limits is None or projected <= limits.soft


def not_denied(projected: Decimal, limits: Limits | None) -> bool:
    return limits is None or limits.hard_limit is None or projected <= limits.hard_limit


def top_ups_needed(projected: Decimal, current: Limits, offer: TopUpOffer) -> TopUpPick:
    """The fewest packs that keep `projected` within the soft limit (each raises it by amount)."""
    short = max(ZERO, projected - current.soft)
    count = int((short / offer.amount).to_integral_value(rounding=ROUND_CEILING))
    total = None if offer.price is None else offer.price * count
    return TopUpPick(offer, count, offer.amount * count, total)


def pick(
    projected: Decimal,
    current: Limits,
    tiers: Sequence[Tier],
    *,
    top_up: TopUpOffer | None = None,
    extra: Decimal = ZERO,
) -> Pick:
    """The cheapest way to cover `projected`.

    `tiers` is the upgrade path in order (cheapest first); `extra` is what live grants add to
    any plan's limits (grants stay with the customer across plan changes). A tier that covers
    within its soft limit wins unless a top-up is known to be cheaper (both priced, same
    currency); without a covering tier a top-up covers; failing that, the first tier that at
    least is not denied; otherwise contact sales.
    """
    if fits(projected, current):
        return Pick(Action.NONE)
    raised = [(t, None if t.limits is None else t.limits.raised(extra)) for t in tiers]
    packs = None if top_up is None or top_up.amount <= 0 else top_ups_needed(projected, current, top_up)
    covering = next((t for t, lim in raised if fits(projected, lim)), None)
    if covering is not None:
        if packs is not None and _cheaper(packs, covering):
            return Pick(Action.TOP_UP, covering, "soft", packs)
        return Pick(Action.UPGRADE, covering, "soft", packs)
    if packs is not None:
        return Pick(Action.TOP_UP, None, None, packs)
    above = [(t, lim) for t, lim in raised if lim is not None and lim.soft > current.soft]
    relief = next((t for t, lim in above if not_denied(projected, lim)), None)
    if relief is not None:
        return Pick(Action.UPGRADE, relief, "hard")
    return Pick(Action.CONTACT_SALES)


def _cheaper(packs: TopUpPick, tier: Tier) -> bool:
    """Only comparable when both have a price in the same currency; ties go to the plan."""
    offer = packs.offer
    if packs.total_price is None or tier.upgrade_cost is None:
        return False
    if offer.currency is None or offer.currency != tier.currency:
        return False
    return packs.total_price < tier.upgrade_cost
