"""The entry point: read the log page by page and write each event as a line, to a file or stdout."""

from __future__ import annotations

import asyncio
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Self

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.config import Settings
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


def run_export(
    settings: Settings, output: Path | None, *, tenant: str | None, fmt: str, selection: EventSelection
) -> int:
    """Write the selected events; the count goes to stderr, so stdout carries only events."""
    with ExitStack() as stack:
        try:
            out: IO[str] = sys.stdout if output is None else stack.enter_context(
                output.open("w", encoding="utf-8", newline=""))
        except OSError as exc:  # not the database's: said as the option's problem
            say(f"error: --output: cannot write {output}: {exc.strerror or exc}")
            return 2
        written = asyncio.run(_export(settings, out, tenant=tenant, fmt=fmt, selection=selection,
                                      progress=output is not None))
    say(f"exported {written} events{f' to {output}' if output else ''}")
    return 0


async def _export(
    settings: Settings, out: IO[str], *, tenant: str | None, fmt: str, selection: EventSelection,
    progress: bool,
) -> int:
    db = Database(settings)
    try:
        async with db.transaction(readonly=True) as session:
            tenant_id = await _tenant_id(session, tenant)
            through = await event_log.last_seq(session, tenant_id)
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
    finally:
        await db.dispose()


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
