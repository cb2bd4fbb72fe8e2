"""Forgetting what is kept only for a while: the answers remembered for idempotency keys.

Run by every worker beside the notification scan. Each pass deletes in small transactions
(`BATCH` rows, oldest first, by an index on the time they were given), so a backlog never
holds a long lock on the tables that consumes write to. Concurrent workers may pick the same
rows; the second delete finds them gone, which is harmless.
"""

from __future__ import annotations

from datetime import datetime

from allotment.db import Database
from allotment.entitlements import check
from allotment.tenancy import idempotency

BATCH = 5000


async def forget_idempotency_keys(db: Database, *, before: datetime) -> int:
    """Drop the answers of keyed requests and keyed checks given before `before`; returns how many."""
    dropped = 0
    for forget in (idempotency.forget, check.forget_answers):
        while True:
            async with db.transaction() as session:
                n = await forget(session, before=before, limit=BATCH)
            dropped += n
            if n < BATCH:
                break
    return dropped
