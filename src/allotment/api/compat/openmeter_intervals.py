"""OpenMeter's recurring intervals (usage periods, grant recurrence) as our usage periods.

OpenMeter takes `DAY`, `WEEK`, `MONTH`, `YEAR` or any ISO 8601 duration. Our periods step by
one calendar day, week, month or year, so a duration is taken when it is one of those: in UTC,
where OpenMeter periods run here, `PT24H` is a day, `P7D` a week and `P12M` a year. Any other
length (`P2W`, `PT1H`) has no period to follow, and is refused saying so.
"""

from __future__ import annotations

import re
from decimal import Decimal

from allotment.entitlements.periods import Interval
from allotment.errors import ValidationFailed

_NAMED = {"DAY": Interval.DAY, "WEEK": Interval.WEEK, "MONTH": Interval.MONTH, "YEAR": Interval.YEAR}
# (months, days, seconds) of each interval we can follow.
_LENGTHS: dict[tuple[Decimal, ...], Interval] = {
    tuple(map(Decimal, length)): interval
    for length, interval in {
        (1, 0, 0): Interval.MONTH, (12, 0, 0): Interval.YEAR, (0, 1, 0): Interval.DAY, (0, 7, 0): Interval.WEEK,
    }.items()
}
_NUMBER = r"(\d+(?:[.,]\d+)?)"
_DURATION = re.compile(
    rf"^P(?!$)(?:{_NUMBER}Y)?(?:{_NUMBER}M)?(?:{_NUMBER}W)?(?:{_NUMBER}D)?"
    rf"(?:T(?=\d)(?:{_NUMBER}H)?(?:{_NUMBER}M)?(?:{_NUMBER}S)?)?$"
)
_UNITS = ("year", "month", "week", "day", "hour", "minute", "second")
_FOLLOWED = "one day, week, month or year (DAY or P1D, WEEK or P1W, MONTH or P1M, YEAR or P1Y)"
_DAY_SECONDS = 86_400


def interval_of(text: str, field: str) -> Interval:
    """The interval `text` names, else a 400 naming `field` and why it cannot be followed."""
    wanted = text.strip().upper()
    if wanted in _NAMED:
        return _NAMED[wanted]
    match = _DURATION.match(wanted)
    if match is None:
        raise ValidationFailed.on(
            field, f"'{text}' is neither DAY, WEEK, MONTH, YEAR nor an ISO 8601 duration; an interval can only"
            f" be {_FOLLOWED}"
        )
    parts = [Decimal(p.replace(",", ".")) if p else Decimal(0) for p in match.groups()]
    years, months, weeks, days, hours, minutes, seconds = parts
    length = (12 * years + months, 7 * weeks + days, 3600 * hours + 60 * minutes + seconds)
    if length[0] == 0 and length[2] % _DAY_SECONDS == 0:  # whole days of UTC
        length = (Decimal(0), length[1] + length[2] / _DAY_SECONDS, Decimal(0))
    interval = _LENGTHS.get(length)
    if interval is None:
        raise ValidationFailed.on(field, f"'{text}' is {_spoken(parts)}: an interval can only be {_FOLLOWED}")
    return interval


def _spoken(parts: list[Decimal]) -> str:
    said = [f"{n.normalize():f} {unit}{'' if n == 1 else 's'}" for n, unit in zip(parts, _UNITS, strict=True) if n]
    return " ".join(said) or "no time at all"
