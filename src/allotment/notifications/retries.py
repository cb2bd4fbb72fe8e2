"""When to try again, when to give up, when to stop trying an endpoint: pure, no clock.

Delays grow threefold from 10 seconds to a ceiling of 6 hours, each stretched or shrunk by
up to 20 % of jitter so that receivers recovering from an outage are not hit by every
worker's retries at the same instant. A delivery is dead-lettered by the first failure at
least `HORIZON` (24 h) after its first attempt; the schedule gives it about 11 attempts.

An endpoint is disabled when a delivery is dead-lettered and no attempt to the endpoint has
succeeded since before that delivery's first attempt: it has been failing for the whole
horizon, so it is down rather than refusing one bad message (which only dead-letters it).
"""

from __future__ import annotations

from datetime import datetime, timedelta

FIRST_DELAY = timedelta(seconds=10)
GROWTH = 3
CEILING = timedelta(hours=6)
JITTER = 0.2
HORIZON = timedelta(hours=24)


def delay(attempt: int, *, jitter: float) -> timedelta:
    """The wait after failed attempt number `attempt` (1-based); `jitter` is uniform in [0, 1)."""
    growth = int(GROWTH ** min(attempt - 1, 20))
    base = min(FIRST_DELAY * growth, CEILING)
    return base * (1 + JITTER * (2 * jitter - 1))


def gives_up(first_attempt_at: datetime, at: datetime) -> bool:
    """A failure at `at` is final once the delivery has been retried for the whole horizon."""
    return at - first_attempt_at >= HORIZON


def endpoint_is_down(failing_since: datetime | None, first_attempt_at: datetime) -> bool:
    """Checked when a delivery is dead-lettered: every attempt failed since it was first tried."""
    return failing_since is not None and failing_since <= first_attempt_at
