"""The one list of notification types Allotment emits, and which of them endpoints may name.

Callers of `emit` and the endpoint validator both read from here, so a type can never be
emitted that no endpoint could subscribe to, nor subscribed to that is never emitted.
"""

from __future__ import annotations

# What the entitlement engine and its neighbours tell vendors about.
DOMAIN_TYPES: tuple[str, ...] = (
    "entitlement.threshold_reached",
    "entitlement.overdraft_started",
    "entitlement.hard_limit_reached",
    "entitlement.usage_denied",
    "entitlement.period_reset",
    "entitlement.changed",
    "grant.expiring",
    "seat.overdraft",
    "reservation.expired",
    "upsell.suggested",
)

# Operational: an endpoint was disabled after failing continuously (sent to the tenant's
# other endpoints, so the operator learns of it where they already listen).
ENDPOINT_DISABLED = "webhook_endpoint.disabled"

# A ping sent to one endpoint on request; never subscribed to, always delivered to its target.
TEST = "webhook.test"

SUBSCRIBABLE: frozenset[str] = frozenset((*DOMAIN_TYPES, ENDPOINT_DISABLED))
EMITTABLE: frozenset[str] = SUBSCRIBABLE | {TEST}


def subscribes(event_types: list[str], type_: str) -> bool:
    """An endpoint with no types listed receives every subscribable type; pings go to their target."""
    if type_ == TEST:
        return True
    return not event_types or type_ in event_types
