"""Batching of concurrent calls: those that arrive while a batch runs go together in the next.

The hot paths pay per round trip and per transaction far more than per row. A `Batcher` runs
one batch at a time; calls that arrive meanwhile wait and are handed to the next run all
together (at most `limit`), so under load each round trip serves many callers and with one
caller nothing waits. A batch that fails is run again one item at a time, so an item that
cannot succeed fails alone and the others still get their answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]], *, limit: int) -> None:
        self._run, self._limit = run, limit
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._drain: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """What the batch that took `item` answered for it (its own error, if it failed)."""
        answer: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, answer))
        if self._drain is None:
            self._drain = asyncio.ensure_future(self._drain_all())
        return await answer

    async def _drain_all(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:self._limit], self._waiting[self._limit:]
                await self._answer(batch)
        finally:
            self._drain = None

    async def _answer(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
        except Exception as exc:  # noqa: BLE001  (handed to the callers, alone if need be)
            if len(batch) == 1:
                _settle(batch[0][1], error=exc)
                return
            for one in batch:
                await self._answer([one])
            return
        for (_, answer), result in zip(batch, results, strict=True):
            _settle(answer, result)


def _settle(answer: asyncio.Future[R], result: R | None = None, *, error: BaseException | None = None) -> None:
    if answer.done():  # the caller has gone away
        return
    if error is not None:
        answer.set_exception(error)
    else:
        answer.set_result(result)  # type: ignore[arg-type]
