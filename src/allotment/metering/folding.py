"""The folder: moves journal rows into rollups, exactly once each.

Each run claims the oldest journal rows (on PostgreSQL with `FOR UPDATE SKIP LOCKED`, so any
number of workers share the work without folding a row twice), merges them, upserts the
rollups and deletes the rows, all in one transaction.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy.ext.asyncio import AsyncSession

from allotment.metering import queries
from allotment.metering.rollup import fold_journal

DEFAULT_BATCH = 200


async def fold_pending(session: AsyncSession, *, max_rows: int = DEFAULT_BATCH) -> int:
    """Fold up to `max_rows` journal rows; returns how many were folded."""
    claimed = await queries.claim_journal(session, max_rows)
    if not claimed:
        return 0
    by_tenant: dict[str, list[bytes]] = defaultdict(list)
    for _, tenant_id, payload in claimed:
        by_tenant[tenant_id].append(payload)
    live = await queries.live_meter_ids(session, list(by_tenant))
    for tenant_id, payloads in by_tenant.items():
        fold = fold_journal(payloads, live)
        await queries.upsert_rollups(session, tenant_id, fold.rollup_rows())
        await queries.insert_distinct(session, tenant_id, fold.distinct)
    await queries.delete_journal(session, [seq for seq, _, _ in claimed])
    return len(claimed)
