"""The folding loop: keeps the rollup journal short so queries read mostly rollups."""

from __future__ import annotations

import asyncio

import structlog

from allotment.db import Database
from allotment.metering.folding import DEFAULT_BATCH, fold_pending
from allotment.worker.stopping import nap

log = structlog.get_logger()


async def run_folder(db: Database, stop: asyncio.Event, *, idle_seconds: float = 0.25) -> None:
    """Fold until `stop` is set; sleeps only when the journal has been drained."""
    while not stop.is_set():
        try:
            async with db.transaction() as session:
                folded = await fold_pending(session)
        except asyncio.CancelledError:
            raise
        except Exception:  # a failed fold leaves its rows for the next run; keep going
            log.exception("folding the rollup journal failed")
            folded = 0
        if folded < DEFAULT_BATCH:
            await nap(stop, idle_seconds)
