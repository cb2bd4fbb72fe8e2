"""The folder: moves journal rows into rollups, exactly once each.

Each run claims the oldest journal rows (on PostgreSQL with `FOR UPDATE SKIP LOCKED`, so any
number of workers share the work without folding a row twice), merges them, upserts the
rollups and deletes the rows, all in one transaction.
"""

from __future__ import annotations

from collections import defaultdict

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.metering import queries
from allotment.metering.rollup import fold_journal

log = structlog.get_logger()

DEFAULT_BATCH = 200


async def fold_pending(
    session: AsyncSession, *, max_rows: int = DEFAULT_BATCH, stuck: set[int] | None = None
) -> int:
    """Fold up to `max_rows` journal rows; returns how many were folded.

    A row that cannot be folded (a cell past what a 64-bit rollup holds: docs/storage.md)
    must not hold up the rows behind it, of any tenant: when the whole claim fails, each row
    is folded on its own, and the ones whose values cannot be stored stay in the journal,
    where queries still read them. Their seqs are added to `stuck`, which later runs pass
    over. Any other failure is raised: the next run tries the rows again.
    """
    stuck = set() if stuck is None else stuck
    claimed = await queries.claim_journal(session, max_rows, passing=stuck)
    if not claimed:
        return 0
    live = await queries.live_meter_ids(session, list({tenant_id for _, tenant_id, _ in claimed}))
    try:
        async with queries.savepoint(session):
            await _fold(session, claimed, live)
        return len(claimed)
    except Exception:
        log.warning("folding the claimed journal rows together failed; folding them one by one",
                    exc_info=True)
    folded = 0
    for row in claimed:
        try:
            async with queries.savepoint(session):
                await _fold(session, [row], live)
            folded += 1
        except queries.UNSTORABLE:
            log.exception("journal row cannot be folded; it stays in the journal", seq=row[0])
            stuck.add(row[0])
    return folded


async def _fold(session: AsyncSession, rows: list[tuple[int, str, bytes]], live: set[str]) -> None:
    by_tenant: dict[str, list[bytes]] = defaultdict(list)
    for _, tenant_id, payload in rows:
        by_tenant[tenant_id].append(payload)
    for tenant_id, payloads in by_tenant.items():
        fold = fold_journal(payloads, live)
        await queries.upsert_rollups(session, tenant_id, fold.rollup_rows())
        await queries.insert_distinct(session, tenant_id, fold.distinct)
    await queries.delete_journal(session, [seq for seq, _, _ in rows])
