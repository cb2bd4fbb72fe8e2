"""The entitlement engine: pure decisions over values the caller has already read.

Nothing here reads a clock, a database or the network: usage, reservations and grants come in
as values and time comes in as `at`, so every decision can be replayed exactly. Quantities are
`Decimal`. One strategy per entitlement kind; `decide` picks it by kind.

Invariants (property-tested):
- an entitlement that includes nothing and sets no limit (pay as you go) is never overdraft;
- a check allows at most up to the hard limit: usage + reserved + quantity <= hard, or deny,
  and never past what a live counter holds (COUNTER_CAPACITY, reason `counter_full`);
- decisions are monotone in quantity: a larger request is never treated better;
- burn-down never drives a balance negative, consumes `min(usage, included + live grants)`,
  spends included units as a grant of the default priority expiring at the period end, and
  burning u1 then u2 equals burning u1 + u2 (a period can be computed in any number of runs);
- with the usage known at each instant a grant started or ended, burn-down equals spending
  usage day by day from what was live then (owed usage first), and a check's balance and
  overage are exactly what it leaves unspent and unpaid.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from itertools import groupby
from typing import NamedTuple, assert_never

from allotment.errors import ValidationFailed
from allotment.types import as_utc

ZERO = Decimal(0)
ONE = Decimal(1)
_NEVER = datetime.max.replace(tzinfo=UTC)  # sorts a grant without expiry after all others
DEFAULT_PRIORITY = 1  # of a grant that names none; included units burn at it (see `burn`)


class InvalidQuantity(ValidationFailed, ValueError):
    """A requested quantity that is not a finite number greater than zero."""

    code = "invalid_quantity"


class InvalidEntitlement(ValidationFailed, ValueError):
    """Limits or grant fields that cannot describe a real entitlement (e.g. hard < soft)."""

    code = "invalid_entitlement"


class Kind(enum.StrEnum):
    BOOLEAN = "boolean"
    STATIC = "static"
    METERED = "metered"
    SEATS = "seats"


class Verdict(enum.StrEnum):
    ALLOW = "allow"
    ALLOW_OVERDRAFT = "allow_overdraft"  # allowed, but past the soft limit: flagged, maybe billed
    DENY = "deny"


# Live counters hold 64-bit integers of millionths: no period's usage can be counted past this.
COUNTER_CAPACITY = Decimal(2**63 - 1).scaleb(-6)


class Reason(enum.StrEnum):
    WITHIN_LIMIT = "within_limit"
    SOFT_LIMIT = "soft_limit"  # over the soft limit, within the hard one (overdraft)
    HARD_LIMIT = "hard_limit"
    COUNTER_FULL = "counter_full"  # the counter holds no more (COUNTER_CAPACITY), below the hard limit
    HAS_ACCESS = "has_access"
    NO_ACCESS = "no_access"
    STATIC = "static"
    NOT_ENTITLED = "not_entitled"  # the customer has no entitlement to the feature at all
    PAY_AS_YOU_GO = "pay_as_you_go"  # past what grants hold on an entitlement without limits


@dataclass(frozen=True)
class BooleanEntitlement:
    has_access: bool
    kind: Kind = field(default=Kind.BOOLEAN, init=False)


@dataclass(frozen=True)
class StaticEntitlement:
    config: Mapping[str, object]
    kind: Kind = field(default=Kind.STATIC, init=False)


@dataclass(frozen=True)
class MeteredEntitlement:
    """Usage per period against `included`; soft defaults to included, hard None = uncapped."""

    included: Decimal
    soft_limit: Decimal | None = None
    hard_limit: Decimal | None = None
    kind: Kind = field(default=Kind.METERED, init=False)

    def __post_init__(self) -> None:
        _check_limits(self.included, self.soft_limit, self.hard_limit)


@dataclass(frozen=True)
class SeatsEntitlement:
    """A gauge of concurrently active seats with the same soft and hard limits as metered."""

    included: Decimal
    soft_limit: Decimal | None = None
    hard_limit: Decimal | None = None
    kind: Kind = field(default=Kind.SEATS, init=False)

    def __post_init__(self) -> None:
        _check_limits(self.included, self.soft_limit, self.hard_limit)


Entitlement = BooleanEntitlement | StaticEntitlement | MeteredEntitlement | SeatsEntitlement


@dataclass(frozen=True, kw_only=True)
class Grant:
    """Extra units on a metered entitlement: a prepaid top-up, a promotion, a credit.

    `amount` is what the grant holds at the start of the current period (rollover rewrites
    it at each reset). It is live while effective_at <= at < expires_at and not yet voided.
    All times are stored in UTC.
    """

    id: str
    amount: Decimal
    priority: int  # lower burns first
    effective_at: datetime
    created_at: datetime
    expires_at: datetime | None = None
    voided_at: datetime | None = None
    min_rollover: Decimal = ZERO
    max_rollover: Decimal | None = None  # None carries the whole remaining amount
    # The period's usage at the instant the grant became effective, when that fell inside the
    # period: usage before it is not the grant's to pay unless nothing paid for it (`burn`).
    # None when it was live from the period's start (or is not effective yet).
    usage_at_start: Decimal | None = None
    # The period's usage at the instant it ended (expired or voided), when that fell inside the
    # period; None when it ended before the period began.
    usage_at_end: Decimal | None = None
    # For a grant that ended within the period: what usage had burned of it by then (`settle`).
    # That usage stays paid by it, so it still raises the period's limits (`raised_by`).
    paid_at_end: Decimal = ZERO

    def __post_init__(self) -> None:
        for name in ("effective_at", "created_at", "expires_at", "voided_at"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, as_utc(value))
        _require_non_negative("amount", self.amount)
        _require_non_negative("min_rollover", self.min_rollover)
        if self.max_rollover is not None and not self.max_rollover >= self.min_rollover:
            raise InvalidEntitlement.on("max_rollover", "must not be less than min_rollover")
        if self.expires_at is not None and self.expires_at <= self.effective_at:
            raise InvalidEntitlement.on("expires_at", "must be after effective_at")


class Decision(NamedTuple):
    """The answer to a check. Numbers are None for kinds that do not count (boolean, static).

    soft_limit and hard_limit are the effective limits, i.e. raised by live grants.
    A tuple, not a frozen dataclass: every check builds one, and a frozen dataclass sets
    each of its fields through `object.__setattr__` (five times the cost).
    """

    decision: Verdict
    reason: str
    usage: Decimal | None = None
    included: Decimal | None = None
    soft_limit: Decimal | None = None
    hard_limit: Decimal | None = None
    balance: Decimal | None = None
    overage: Decimal | None = None
    config: Mapping[str, object] | None = None


@dataclass(frozen=True)
class BurnDown:
    """What is left after usage burned a period's included units and grants.

    `grants` has an entry for every grant given; `uncovered` is usage nothing paid for; `paid`
    says, of every grant that ended within the period, how much it had paid when it ended.
    """

    included: Decimal
    grants: Mapping[str, Decimal]
    uncovered: Decimal
    paid: Mapping[str, Decimal] = field(default_factory=dict)


# --- checks -----------------------------------------------------------------------------------


def decide(
    ent: Entitlement,
    *,
    usage: Decimal = ZERO,
    reserved: Decimal = ZERO,
    grants: Iterable[Grant] = (),
    quantity: Decimal = ONE,
    at: datetime,
) -> Decision:
    """May `quantity` more be used at `at`? Picks the strategy for the entitlement's kind.

    usage is the current period's usage (for seats: the active count); reserved is what open
    reservations hold (for seats: pending activations) and counts as if already used.
    """
    _require_positive(quantity)
    at = as_utc(at)
    match ent:
        case BooleanEntitlement():
            return decide_boolean(ent)
        case StaticEntitlement():
            return decide_static(ent)
        case MeteredEntitlement():
            return decide_metered(ent, usage, reserved, tuple(grants), quantity, at)
        case SeatsEntitlement():
            return decide_seats(
                usage + reserved, quantity, ent.included, ent.soft_limit, ent.hard_limit
            )
        case _:
            assert_never(ent)


def decide_boolean(ent: BooleanEntitlement) -> Decision:
    if ent.has_access:
        return Decision(Verdict.ALLOW, Reason.HAS_ACCESS)
    return Decision(Verdict.DENY, Reason.NO_ACCESS)


def decide_static(ent: StaticEntitlement) -> Decision:
    """A static entitlement always grants access; what matters is its configuration."""
    return Decision(Verdict.ALLOW, Reason.STATIC, config=ent.config)


def decide_metered(
    ent: MeteredEntitlement,
    usage: Decimal,
    reserved: Decimal,
    grants: Sequence[Grant],
    quantity: Decimal,
    at: datetime,
) -> Decision:
    """Live grants raise both limits by their amount: a prepaid top-up extends the cap too."""
    _require_positive(quantity)
    usage = _period_usage(usage)
    _require_non_negative("reserved", reserved, InvalidQuantity)
    soft = ent.included if ent.soft_limit is None else ent.soft_limit
    hard = ent.hard_limit
    if grants:  # most checks have none: their sum is worked out only when there are some
        extra = raised_by(grants, at)
        soft, hard = soft + extra, None if hard is None else hard + extra
    return _unlimited(_judge(usage, reserved, quantity, ent.included, soft, hard),
                      ent.included, ent.soft_limit, ent.hard_limit)


def decide_seats(
    active_count: Decimal,
    quantity: Decimal,
    included: Decimal,
    soft_limit: Decimal | None,
    hard_limit: Decimal | None,
) -> Decision:
    """Activating `quantity` more seats: within soft allow, up to hard overdraft, then deny."""
    _require_positive(quantity)
    _require_non_negative("active_count", active_count, InvalidQuantity)
    _check_limits(included, soft_limit, hard_limit)
    soft = included if soft_limit is None else soft_limit
    decision = _judge(active_count, ZERO, quantity, included, soft, hard_limit)
    return _unlimited(decision, included, soft_limit, hard_limit)


def pays_as_it_goes(included: Decimal | None, soft_limit: Decimal | None, hard_limit: Decimal | None) -> bool:
    """Whether the entitlement includes nothing and sets no limit: pay as you go.

    Its every use is allowed and billed; none of it is overdraft, because nothing was promised
    to be over. Grants on it are prepaid credit: while they last the check says `within_limit`,
    past them `pay_as_you_go`. (A soft limit of 0, set explicitly, flags every use instead.)
    """
    return not included and soft_limit is None and hard_limit is None


def _unlimited(
    decision: Decision, included: Decimal, soft_limit: Decimal | None, hard_limit: Decimal | None
) -> Decision:
    if decision.decision is Verdict.ALLOW_OVERDRAFT and pays_as_it_goes(included, soft_limit, hard_limit):
        return decision._replace(decision=Verdict.ALLOW, reason=Reason.PAY_AS_YOU_GO)
    return decision


def _judge(
    usage: Decimal,
    reserved: Decimal,
    quantity: Decimal,
    included: Decimal,
    soft: Decimal,
    hard: Decimal | None,
) -> Decision:
    """The one rule every counted kind shares; reserved units are spent units."""
    after = usage + reserved + quantity
    if after > COUNTER_CAPACITY:
        verdict, reason = Verdict.DENY, Reason.COUNTER_FULL
    elif after <= soft:
        verdict, reason = Verdict.ALLOW, Reason.WITHIN_LIMIT
    elif hard is None or after <= hard:
        verdict, reason = Verdict.ALLOW_OVERDRAFT, Reason.SOFT_LIMIT
    else:
        verdict, reason = Verdict.DENY, Reason.HARD_LIMIT
    balance = max(ZERO, soft - usage - reserved)
    overage = max(ZERO, usage - soft)
    return Decision(verdict, reason, usage, included, soft, hard, balance, overage)


# --- grants -------------------------------------------------------------------------------------


def raised_by(grants: Iterable[Grant], at: datetime) -> Decimal:
    """What grants add to both limits at `at`: live grants their amount, grants that ended
    within the period what they had paid for by then."""
    return sum((g.amount if is_live(g, at) else g.paid_at_end if has_ended(g, at) else ZERO
                for g in grants), ZERO)


def is_live(grant: Grant, at: datetime) -> bool:
    """Whether the grant can be spent at `at`: effective, not expired, not voided."""
    return grant.effective_at <= at and not has_ended(grant, at)


def has_ended(grant: Grant, at: datetime) -> bool:
    """Expired or voided at or before `at`: whatever it still held is forfeit."""
    return any(t is not None and t <= at for t in (grant.expires_at, grant.voided_at))


def burn_order(grants: Iterable[Grant]) -> list[Grant]:
    """Priority (lower first), then earliest expiry (none last), then oldest, then id.

    The id makes the order total, so the same grants always burn the same way.
    """
    return sorted(grants, key=_burn_key)


def _burn_key(grant: Grant) -> tuple[int, datetime, datetime, str]:
    return grant.priority, grant.expires_at or _NEVER, grant.created_at, grant.id


def burn(
    grants: Iterable[Grant], included: Decimal, usage: Decimal, at: datetime, *,
    included_until: datetime | None,
) -> BurnDown:
    """Spend the period's `usage` up to `at` from included units and grants, in burn order.

    Included units burn as a grant of priority DEFAULT_PRIORITY that expires at
    `included_until` (the end of the usage period or of the entitlement, None if neither
    comes), ahead of a grant that ties with it: a top-up outlasting the period burns after
    them, an add-on that expires first burns first.

    Counters keep one number per period, so a grant that started or ended inside the period
    carries the period's usage at that instant (`usage_at_start`, `usage_at_end`): the usage
    between two such instants burns what was live between them, one stretch after another.
    A grant pays nothing of the usage before it started, except what nothing else could pay
    (owed overage is paid first); a grant that ended forfeits what it still held but keeps
    what it paid (`paid`). Grants not yet effective at `at` are untouched. Stretches compose:
    burning u1 then u2 at the same instant equals burning u1 + u2.
    """
    _require_non_negative("included", included)
    at = as_utc(at)
    grants = list(grants)
    held = {g.id: ZERO if has_ended(g, at) and g.usage_at_end is None else g.amount for g in grants}
    pool = {g.id: g for g in grants if g.usage_at_start is None and _live_since_start(g, at)}
    included_key = (DEFAULT_PRIORITY, as_utc(included_until) if included_until else _NEVER)
    paid: dict[str, Decimal] = {}
    counted = owed = ZERO
    for when, marks in groupby(sorted(_marks(grants, at), key=lambda m: (m[0], not m[1])), key=lambda m: m[0]):
        changes = list(marks)  # usage up to the instant burns what was live before it
        usage_then = _period_usage(max(m[2] for m in changes))
        included, owed = _spend(pool.values(), held, included, included_key, max(ZERO, owed + usage_then - counted))
        counted = usage_then
        for _, ends, _, grant in changes:
            if ends:
                if pool.pop(grant.id, None) is not None:
                    paid[grant.id] = grant.amount - held[grant.id]
                held[grant.id] = ZERO
            elif not has_ended(grant, when):
                pool[grant.id] = grant
    wanted = max(ZERO, owed + _period_usage(usage) - counted)
    included, owed = _spend(pool.values(), held, included, included_key, wanted)
    return BurnDown(included, held, owed, paid)


def _live_since_start(grant: Grant, at: datetime) -> bool:
    """Whether a grant without a start inside the period was live at its start: it is live
    at `at`, or it ended inside the period after it became effective."""
    if is_live(grant, at):
        return True
    end = ends_at(grant)
    return grant.usage_at_end is not None and end is not None and grant.effective_at < end <= at


def _marks(grants: Iterable[Grant], at: datetime) -> Iterator[tuple[datetime, bool, Decimal, Grant]]:
    """(instant, whether it is an end, the period's usage then, grant) of each start and end
    inside the period up to `at`; an end sorts before a start at the same instant."""
    for grant in grants:
        if grant.usage_at_start is not None and grant.effective_at <= at:
            yield grant.effective_at, False, grant.usage_at_start, grant
        end = ends_at(grant)
        if grant.usage_at_end is not None and end is not None and end <= at:
            yield end, True, grant.usage_at_end, grant


def ends_at(grant: Grant) -> datetime | None:
    """When the grant expires or is voided, whichever comes first; None while neither is set."""
    ends = [t for t in (grant.expires_at, grant.voided_at) if t is not None]
    return min(ends) if ends else None


def _spend(
    pool: Iterable[Grant], held: dict[str, Decimal], included: Decimal,
    included_key: tuple[int, datetime], wanted: Decimal,
) -> tuple[Decimal, Decimal]:
    """Spend `wanted` from the pool (updating `held`) and included units in burn order:
    (included units left, what nothing paid)."""
    included_left: Decimal | None = None  # not burned yet
    for grant in burn_order(pool):
        if included_left is None and _burn_key(grant)[:2] >= included_key:
            included_left, wanted = _take(included, wanted)
        held[grant.id], wanted = _take(held[grant.id], wanted)
    if included_left is None:
        included_left, wanted = _take(included, wanted)
    return included_left, wanted


def settle(grants: Sequence[Grant], included: Decimal, at: datetime, *,
           included_until: datetime | None) -> list[Grant]:
    """`grants`, each that ended within the period by `at` with what it had paid then
    (`paid_at_end`, which keeps raising the period's limits: `raised_by`)."""
    paid = burn(grants, included, ZERO, at, included_until=included_until).paid
    return [replace(g, paid_at_end=paid[g.id]) if g.id in paid else g for g in grants]


def _take(held: Decimal, wanted: Decimal) -> tuple[Decimal, Decimal]:
    """(what `held` keeps, what is still wanted) after it paid what it could of `wanted`."""
    take = min(held, wanted)
    return held - take, wanted - take


def rollover(
    grants: Iterable[Grant], remaining: Mapping[str, Decimal], *, at: datetime
) -> dict[str, Decimal]:
    """Each grant's amount for the period starting at `at` (the reset).

    A grant carries its remaining amount clamped to [min_rollover, max_rollover]; a grant
    that ended by the reset carries nothing; a grant that only starts at or after the reset
    was never in the old period, so it keeps its amount.
    """
    at = as_utc(at)
    out: dict[str, Decimal] = {}
    for grant in grants:
        if has_ended(grant, at):
            out[grant.id] = ZERO
        elif grant.effective_at >= at:
            out[grant.id] = grant.amount
        else:
            out[grant.id] = _clamp(remaining[grant.id], grant.min_rollover, grant.max_rollover)
    return out


def _clamp(value: Decimal, low: Decimal, high: Decimal | None) -> Decimal:
    return max(low, value if high is None else min(value, high))


# --- validation ---------------------------------------------------------------------------------


def _require_positive(quantity: Decimal) -> None:
    if not (quantity.is_finite() and quantity > 0):
        raise InvalidQuantity.on("quantity", f"must be a number greater than zero, got {quantity}")


def _require_non_negative(
    name: str, value: Decimal, error: type[ValidationFailed] = InvalidEntitlement
) -> None:
    if not (value.is_finite() and value >= 0):
        raise error.on(name, f"must be a number of at least zero, got {value}")


def _period_usage(usage: Decimal) -> Decimal:
    """A period's usage as limits see it. Events may correct usage downwards (SUM of negative
    values), past zero when a correction exceeds what was counted: the counter stays exact,
    but a period never credits more than it includes, so below zero reads as zero."""
    if not usage.is_finite():
        raise InvalidQuantity.on("usage", f"must be a finite number, got {usage}")
    return max(usage, ZERO)


def _check_limits(included: Decimal, soft: Decimal | None, hard: Decimal | None) -> None:
    """hard >= soft keeps "allow" from ever passing the hard limit."""
    _require_non_negative("included", included)
    for name, value in (("soft_limit", soft), ("hard_limit", hard)):
        if value is not None:
            _require_non_negative(name, value)
    effective_soft = included if soft is None else soft
    if hard is not None and hard < effective_soft:
        raise InvalidEntitlement.on("hard_limit", "must not be less than the soft limit")
