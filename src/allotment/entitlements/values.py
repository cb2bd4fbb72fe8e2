"""The value columns of an entitlement, checked against its kind.

Plans, overrides and ad-hoc entitlements all go through `normalize`, so a stored row always
describes an entitlement the engine accepts (e.g. hard >= soft) and carries only the fields
its kind uses. Errors name the field as the caller sent it (`entitlements[2].hard_limit`).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from allotment.entitlements.engine import InvalidEntitlement, Kind, MeteredEntitlement
from allotment.entitlements.models import VALUE_COLUMNS
from allotment.entitlements.periods import Interval
from allotment.errors import ValidationFailed

# The fields each kind uses besides `kind`; any other field sent with a value is an error.
APPLIES: dict[Kind, frozenset[str]] = {
    Kind.BOOLEAN: frozenset({"has_access"}),
    Kind.STATIC: frozenset({"config"}),
    Kind.METERED: frozenset(
        {"usage_period", "included", "soft_limit", "hard_limit", "overage_at_reset", "included_rollover"}
    ),
    Kind.SEATS: frozenset({"included", "soft_limit", "hard_limit", "lease_ttl_seconds"}),
}
FIELDS = tuple(c for c in VALUE_COLUMNS if c != "kind")


def normalize(kind: Kind, given: Mapping[str, Any], *, prefix: str = "") -> dict[str, Any]:
    """Every value column for an entitlement of `kind`, defaults filled in."""
    for name in FIELDS:
        if given.get(name) is not None and name not in APPLIES[kind]:
            raise ValidationFailed.on(f"{prefix}{name}", f"does not apply to {kind} entitlements")
    out: dict[str, Any] = {name: given.get(name) for name in FIELDS}
    out["kind"] = str(kind)
    out["has_access"] = True if given.get("has_access") is None else bool(given["has_access"])
    if kind is Kind.STATIC and out["config"] is None:
        raise ValidationFailed.on(f"{prefix}config", "is required for static entitlements")
    if kind in (Kind.METERED, Kind.SEATS):
        out["included"] = Decimal(0) if out["included"] is None else out["included"]
        _check_limits(out, prefix)
    if kind is Kind.SEATS:
        _check_whole_seats(out, prefix)
    if kind is Kind.METERED:
        out["usage_period"] = str(out["usage_period"] or Interval.MONTH)
        out["overage_at_reset"] = out["overage_at_reset"] or "forgive"
        if out["included_rollover"] is not None and out["usage_period"] == Interval.NONE:
            raise ValidationFailed.on(f"{prefix}included_rollover", "needs a usage period that resets")
        if not out["included_rollover"]:
            out["included_rollover"] = None  # 0 rolls nothing over: stored as none
    return out


def _check_limits(values: Mapping[str, Any], prefix: str) -> None:
    try:
        MeteredEntitlement(values["included"], values["soft_limit"], values["hard_limit"])
    except InvalidEntitlement as exc:
        first = exc.errors[0]
        raise ValidationFailed.on(f"{prefix}{first.field}", first.message) from None


def _check_whole_seats(values: Mapping[str, Any], prefix: str) -> None:
    """A seat is an item (a user, a device): half of one can be neither activated nor paid for."""
    for name in ("included", "soft_limit", "hard_limit"):
        value = values[name]
        if value is not None and Decimal(value) != Decimal(value).to_integral_value():
            raise ValidationFailed.on(f"{prefix}{name}", "must be a whole number of seats")


def of_row(row: Any) -> dict[str, Any]:
    """The value columns of a plan or customer entitlement row."""
    return {name: getattr(row, name) for name in VALUE_COLUMNS}
