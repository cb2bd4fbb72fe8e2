"""Which notification levels a move of usage crossed: pure, and property-tested.

A level is *reached* when usage goes from below it to at or above it: `before < level <= after`.
Successive moves within a period cover disjoint intervals `(before, after]`, so consuming u1
and then u2 reports exactly what consuming u1 + u2 at once reports, and usage that only grows
reports each level at most once per period. (The outbox's dedupe keys, which name the level,
make "once" hold even when usage does not only grow, e.g. a gauge of seats, or two paths that
observe one move.)

Overdraft starts when usage *passes* the soft limit (`before <= soft < after`): using exactly
the soft limit is still within it, as in `engine._judge`.

Percent thresholds are of the effective soft limit (included raised by live grants, or the
explicit soft limit raised by them), so a top-up moves the 80 % warning with the limit: once
it lies above the usage again, reaching it is a new crossing, reported again (notices.py).
A balance threshold is what is left below that limit (prepaid credit: "10 kWh left"), so it
is reached at the usage `soft - value`, and a top-up moves it the same way.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

HUNDRED = Decimal(100)
ThresholdType = Literal["percent", "absolute", "balance"]


class Kind(enum.StrEnum):
    THRESHOLD = "threshold"
    OVERDRAFT = "overdraft"
    HARD_LIMIT = "hard_limit"


_ORDER = {Kind.THRESHOLD: 0, Kind.OVERDRAFT: 1, Kind.HARD_LIMIT: 2}


@dataclass(frozen=True)
class Threshold:
    """A level to warn at: a percentage of the soft limit, an absolute amount of usage, or
    a balance (what is left below the soft limit)."""

    type: ThresholdType
    value: Decimal

    @property
    def label(self) -> str:
        """Names the threshold in dedupe keys and payloads: `80%`, `1500` or `10 left`."""
        text = format(self.value.normalize(), "f")
        return {"percent": f"{text}%", "balance": f"{text} left"}.get(self.type, text)

    def level(self, soft: Decimal) -> Decimal | None:
        """The usage at which it is reached; None when a percentage of nothing means nothing,
        or a balance is never above it (the whole limit is at most that much)."""
        if self.type == "absolute":
            return self.value
        if self.type == "balance":
            return soft - self.value if soft > self.value else None
        return soft * self.value / HUNDRED if soft > 0 else None


@dataclass(frozen=True)
class Crossing:
    kind: Kind
    level: Decimal
    threshold: Threshold | None = None

    @property
    def name(self) -> str:
        """Unique among the crossings of one period: the tail of its dedupe key."""
        return self.threshold.label if self.threshold is not None else str(self.kind)


def crossings(
    before: Decimal,
    after: Decimal,
    *,
    soft: Decimal,
    hard: Decimal | None,
    thresholds: Iterable[Threshold] = (),
) -> list[Crossing]:
    """What usage moving from `before` to `after` reached, lowest level first.

    At one level a threshold comes before overdraft, and overdraft before the hard limit.
    Usage that did not grow crosses nothing.
    """
    if not after > before:
        return []
    found: list[Crossing] = []
    for threshold in dict.fromkeys(thresholds):
        level = threshold.level(soft)
        if level is not None and before < level <= after:
            found.append(Crossing(Kind.THRESHOLD, level, threshold))
    if before <= soft < after:
        found.append(Crossing(Kind.OVERDRAFT, soft))
    if hard is not None and before < hard <= after:
        found.append(Crossing(Kind.HARD_LIMIT, hard))
    return sorted(found, key=lambda c: (c.level, _ORDER[c.kind], c.name))


def worth_watching(soft: Decimal, hard: Decimal | None) -> bool:
    """Whether an entitlement has any limit to warn about (nothing included and no cap: no)."""
    return soft > 0 or hard is not None
