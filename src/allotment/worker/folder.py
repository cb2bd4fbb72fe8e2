"""The folding loop: keeps the rollup journal short so queries read mostly rollups."""

from __future__ import annotations

import asyncio

import structlog

from allotment.db import Database
from allotment.metering.folding import DEFAULT_BATCH, fold_pending

log = structlog.get_logger()


async def run_folder(db: Database, *, idle_seconds: float = 0.25) -> None:
    """Fold until cancelled; sleeps only when the journal has been drained."""
    while True:
        try:
            async with db.transaction() as session:
                folded = await fold_pending(session)
        except asyncio.CancelledError:
            raise
        except Exception:  # a failed fold leaves its rows for the next run; keep going
            log.exception("folding the rollup journal failed")
            folded = 0
        if folded < DEFAULT_BATCH:
            await asyncio.sleep(idle_seconds)
