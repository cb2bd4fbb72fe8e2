"""The entry point: read the log page by page and write each event as a line, to a file or stdout."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Self

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.config import Settings
from allotment.customers import service as customers
from allotment.db import Database
from allotment.exporter.formats import csv_writer, jsonl_line
from allotment.importer.console import err, say
from allotment.metering import events as event_log
from allotment.metering.events import EventFilter
from allotment.tenancy import service as tenancy
from allotment.types import to_micros

FORMATS = ("jsonl", "csv")
_PAGE = 5000


@dataclass(frozen=True)
class EventSelection:
    """Which events to export: all of the tenant's unless narrowed (times are of the events)."""

    start: datetime | None = None
    end: datetime | None = None
    type: str | None = None
    subjects: list[str] | None = None
    customers: list[str] | None = None

    def as_filter(self) -> EventFilter:
        return EventFilter(
            subjects=self.subjects, customers=self.customers, type=self.type,
            start_us=to_micros(self.start) if self.start else None,
            end_us=to_micros(self.end) if self.end else None,
        )


class _Unwritable(Exception):
    """The --output file cannot be opened for writing (the reason is the message)."""


def run_export(
    settings: Settings, output: Path | None, *, tenant: str | None, fmt: str, selection: EventSelection
) -> int:
    """Write the selected events; the count goes to stderr, so stdout carries only events."""
    try:
        written = asyncio.run(_export(settings, output, tenant=tenant, fmt=fmt, selection=selection))
    except _Unwritable as exc:  # not the database's: said as the option's problem
        say(f"error: --output: cannot write {output}: {exc}")
        return 2
    say(f"exported {written} events{f' to {output}' if output else ''}")
    return 0


async def _export(
    settings: Settings, output: Path | None, *, tenant: str | None, fmt: str, selection: EventSelection
) -> int:
    db = Database(settings)
    try:
        # Every name is resolved before the output is opened: a mistyped --tenant or --customer
        # leaves a file of an earlier export as it was.
        async with db.transaction(readonly=True) as session:
            tenant_id = await _tenant_id(session, tenant)
            await customers.subjects_of(session, tenant_id, selection.customers or [])
            through = await event_log.last_seq(session, tenant_id)
        with _opened(output) as out:
            return await _write(db, out, tenant_id, through, fmt=fmt, selection=selection,
                                progress=output is not None)
    finally:
        await db.dispose()


@contextmanager
def _opened(output: Path | None) -> Iterator[IO[str]]:
    if output is None:
        yield sys.stdout
        return
    try:
        file = output.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        raise _Unwritable(exc.strerror or str(exc)) from None
    with file:
        yield file


async def _write(
    db: Database, out: IO[str], tenant_id: str, through: int, *, fmt: str, selection: EventSelection,
    progress: bool,
) -> int:
    if fmt == "csv":
        header, line = csv_writer()
        out.write(header)
    else:
        line = jsonl_line
    flt, after, written = selection.as_filter(), 0, 0
    with _Counter(progress) as count:
        while True:
            async with db.transaction(readonly=True) as session:
                page = await event_log.log_page(session, tenant_id, flt, after_seq=after,
                                                through_seq=through, limit=_PAGE)
            if not page:
                return written
            out.write("".join(line(event) for event in page))
            written += len(page)
            after = page[-1].seq
            count(written)


async def _tenant_id(session: AsyncSession, tenant: str | None) -> str:
    if tenant is not None:
        return str((await tenancy.get_tenant(session, tenant)).id)
    first = await tenancy.first_tenant(session)
    if first is None:
        return ""  # no tenant yet, so no events: an empty export
    return str(first.id)


class _Counter:
    """Events written so far, on stderr while a file is written (stdout may be the export)."""

    def __init__(self, shown: bool) -> None:
        self.bar = Progress(SpinnerColumn(), TextColumn("exported {task.completed} events"),
                            TimeElapsedColumn(), console=err, disable=not shown)
        self.task = self.bar.add_task("export", total=None)

    def __enter__(self) -> Self:
        self.bar.start()
        return self

    def __call__(self, written: int) -> None:
        self.bar.update(self.task, completed=written)

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()
