"""The entry point: open the file, import it batch by batch (one transaction each), show
progress on stderr and print the summary on stdout."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from sqlalchemy.exc import SQLAlchemyError

from allotment.bootstrap import ensure_default_tenant
from allotment.config import Settings
from allotment.db import Database, database_problem, shown_url
from allotment.entitlements.metered_usage import ingest
from allotment.errors import AllotmentError, NotFound
from allotment.importer.checkpoint import CHECKPOINT_SUFFIX, Checkpoint, Tally
from allotment.importer.console import err, say
from allotment.importer.decoding import decode_batch
from allotment.importer.files import open_source, records
from allotment.importer.source import FileUnusable, Item, Source
from allotment.metering.ingest import Batch
from allotment.migrate import upgrade
from allotment.tenancy import service as tenancy
from allotment.types import to_micros, utcnow

EXIT_OK, EXIT_REJECTED, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 130


def run_import(settings: Settings, path: Path, *, tenant: str | None, batch_size: int) -> int:
    """Import a file; 0 when every record was accepted or a duplicate, 1 when some were
    rejected, 2 when the file (or the database) could not be used at all."""
    try:
        source = open_source(path)
    except FileUnusable as exc:
        say(f"error: {exc}")
        return EXIT_FAILED
    checkpoint = Checkpoint(path.with_name(path.name + CHECKPOINT_SUFFIX))
    try:
        upgrade(settings.database_url)
        tally = asyncio.run(_import(settings, source, checkpoint, tenant=tenant, batch_size=batch_size))
    except KeyboardInterrupt:
        say(f"interrupted: run the same command again to resume after line {checkpoint.line}")
        return EXIT_INTERRUPTED
    except (FileUnusable, AllotmentError) as exc:
        unknown_tenant = isinstance(exc, NotFound) and exc.kind == "tenant"
        say(f"error: {'--tenant: ' if unknown_tenant else ''}{exc}")
        return EXIT_FAILED
    except OSError as exc:
        if exc.filename is None:  # a socket's error: the database server's
            return _database_failed(settings, exc, checkpoint)
        say(f"error: {exc}")
        return EXIT_FAILED
    except (SQLAlchemyError, asyncpg.PostgresError) as exc:
        return _database_failed(settings, exc, checkpoint)
    print_summary(path, tally)
    return EXIT_REJECTED if tally.rejected else EXIT_OK


def _database_failed(settings: Settings, exc: BaseException, checkpoint: Checkpoint) -> int:
    say(f"error: cannot use the database at {shown_url(settings.database_url)}: {database_problem(exc)}")
    say(f"run the same command again to resume after line {checkpoint.line}")
    return EXIT_FAILED


async def _import(
    settings: Settings, source: Source, checkpoint: Checkpoint, *, tenant: str | None, batch_size: int
) -> Tally:
    db = Database(settings)
    try:
        tenant_id = await _resolve_tenant(db, tenant)
        checkpoint.load(source, tenant_id)
        with _ProgressBar(source, checkpoint) as (progress, task):
            with source.path.open("rb") as f:
                items = records(source, f, checkpoint.offset, checkpoint.line)
                for batch in _batches(items, batch_size):
                    await _commit(db, tenant_id, batch, checkpoint.tally)
                    checkpoint.advance(batch[-1].last, batch[-1].end)
                    progress.update(task, completed=batch[-1].end, lines=checkpoint.line)
            progress.update(task, completed=source.size or 1)
        checkpoint.clear()
        return checkpoint.tally
    finally:
        await db.dispose()


async def _resolve_tenant(db: Database, tenant: str | None) -> str:
    if tenant is None:
        return (await ensure_default_tenant(db))[0]
    async with db.transaction(readonly=True) as session:
        return str((await tenancy.get_tenant(session, tenant)).id)


async def _commit(db: Database, tenant_id: str, batch: list[Item], tally: Tally) -> None:
    decoded = decode_batch(batch)
    async with db.transaction() as session:
        [result] = await ingest(session, tenant_id, [Batch(decoded, to_micros(utcnow()))])
    tally.accepted += result.accepted
    tally.duplicates += result.duplicates
    for problem in result.problems:
        item = batch[problem.index]
        tally.reject(item.line, problem.field, _spanning(item, problem.reason))


def _spanning(item: Item, reason: str) -> str:
    """A CSV record may run over several lines (a quoted field holding line ends, or a quote
    left open joining the lines after it to its record): the lines are named, so none is missed."""
    return reason if item.last == item.line else f"{reason} (the record runs over lines {item.line}-{item.last})"


def _batches(items: Iterator[Item], size: int) -> Iterator[list[Item]]:
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# --- output --------------------------------------------------------------------------------


class _ProgressBar:
    """A progress bar on stderr, in bytes of the file, so stdout carries only the summary."""

    def __init__(self, source: Source, checkpoint: Checkpoint) -> None:
        self.bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
            TextColumn("line {task.fields[lines]}"), TimeRemainingColumn(), console=err,
        )
        self.task = self.bar.add_task(f"importing {source.path.name}", total=source.size or 1,
                                      completed=checkpoint.offset, lines=checkpoint.line)

    def __enter__(self) -> tuple[Progress, Any]:
        self.bar.start()
        return self.bar, self.task

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


def print_summary(path: Path, tally: Tally) -> None:
    print(f"{path.name}: {tally.accepted} accepted, {tally.duplicates} duplicates, "
          f"{tally.rejected} rejected")
    if not tally.rejected:
        return
    print("rejected:")
    for line, field_name, reason in tally.listed:
        print(f"  line {line}: {field_name + ': ' if field_name else ''}{reason}")
    if tally.rejected > len(tally.listed):
        print(f"  ... and {tally.rejected - len(tally.listed)} more (all are listed by GET /v1/events/rejected)")
