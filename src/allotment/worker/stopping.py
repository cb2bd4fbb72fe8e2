"""Stopping background loops between rounds, never in the middle of a transaction.

A loop cancelled while a database call is in flight leaves that call running on the
driver's side after the event loop is gone (aiosqlite finishes it on its own thread);
a stop signal checked between rounds lets every round end with its transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable


async def nap(stop: asyncio.Event, seconds: float) -> None:
    """Sleep for `seconds`, waking at once when `stop` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def stop_loops(stop: asyncio.Event, loops: Iterable[asyncio.Future[None]], *, grace: float) -> None:
    """Ask the loops to stop, wait up to `grace` seconds for their rounds to end, then cancel."""
    stop.set()
    loops = list(loops)
    if not loops:
        return
    _, pending = await asyncio.wait(loops, timeout=grace)
    for loop in pending:
        loop.cancel()
    await asyncio.gather(*loops, return_exceptions=True)
