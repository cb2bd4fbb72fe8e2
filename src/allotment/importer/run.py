"""`allotment import`: events from JSON Lines or CSV files, committed in batches.

Every line goes through the API's decoder (`metering.wire.decode`) and every batch through the
API's `metering.ingest.ingest` in one transaction, so validation, de-duplication on
`(source, id)`, rollups and the record of rejected events are exactly the API's.

Resuming: after each committed batch, a checkpoint beside the file (`FILE.allotment-import`)
records the byte offset and line reached. It is written only after the commit, so it never
claims more than the database holds; a process killed between the commit and the checkpoint
re-sends that one batch next time, and de-duplication makes it count nothing.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import itertools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec
import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from sqlalchemy.exc import SQLAlchemyError

from allotment import codec
from allotment.bootstrap import ensure_default_tenant
from allotment.config import Settings
from allotment.db import Database
from allotment.errors import AllotmentError, MalformedRequest, Problem
from allotment.metering.ingest import ingest
from allotment.metering.wire import Decoded, decode
from allotment.migrate import upgrade
from allotment.tenancy import service as tenancy
from allotment.types import to_micros, utcnow

EXIT_OK, EXIT_REJECTED, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 130
CHECKPOINT_SUFFIX = ".allotment-import"
LISTED = 20  # rejections listed in the summary; all of them are in GET /v1/events/rejected
_HEAD = 1024  # bytes hashed to recognise the file a checkpoint belongs to
_REQUIRED = ("id", "source", "type", "subject")
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")

err = Console(stderr=True)


def say(message: str) -> None:
    """A plain line on stderr: file names and reasons are not Rich markup."""
    err.print(message, markup=False, highlight=False, soft_wrap=True)


class FileUnusable(Exception):
    """The file as a whole cannot be imported (unreadable, not JSON Lines, bad CSV header)."""


@dataclass
class Item:
    """One record of the file: its body for the wire decoder, or why it could not have one."""

    line: int  # first physical line, 1-based
    last: int  # last physical line (a quoted CSV field may span lines)
    end: int  # byte offset just after the record
    body: bytes | None = None
    raw: Any = None  # what is kept for operators when the record is rejected
    reason: str | None = None  # set when the record was refused before decoding
    field: str | None = None


@dataclass
class Tally:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    listed: list[tuple[int, str | None, str]] = field(default_factory=list)  # line, field, reason

    def reject(self, line: int, field_name: str | None, reason: str) -> None:
        self.rejected += 1
        if len(self.listed) < LISTED:
            self.listed.append((line, field_name, reason))


@dataclass
class Source:
    path: Path
    format: str  # "jsonl" or "csv"
    size: int
    head: str  # sha256 of the first KB
    columns: list[str] = field(default_factory=list)  # CSV header
    body_start: int = 0  # byte offset after the CSV header
    body_line: int = 0  # lines before the first record


# --- entry point ---------------------------------------------------------------------------


def run_import(settings: Settings, path: Path, *, tenant: str | None, batch_size: int) -> int:
    """Import a file; 0 when every record was accepted or a duplicate, 1 when some were
    rejected, 2 when the file (or the database) could not be used at all."""
    try:
        source = open_source(path)
    except FileUnusable as exc:
        say(f"error: {exc}")
        return EXIT_FAILED
    upgrade(settings.database_url)
    checkpoint = Checkpoint(path.with_name(path.name + CHECKPOINT_SUFFIX))
    try:
        tally = asyncio.run(_import(settings, source, checkpoint, tenant=tenant, batch_size=batch_size))
    except KeyboardInterrupt:
        say(f"interrupted: run the same command again to resume after line {checkpoint.line}")
        return EXIT_INTERRUPTED
    except (FileUnusable, AllotmentError, OSError) as exc:
        say(f"error: {exc}")
        return EXIT_FAILED
    except SQLAlchemyError as exc:
        say(f"database error: {exc}")
        say(f"run the same command again to resume after line {checkpoint.line}")
        return EXIT_FAILED
    print_summary(path, tally)
    return EXIT_REJECTED if tally.rejected else EXIT_OK


async def _import(
    settings: Settings, source: Source, checkpoint: Checkpoint, *, tenant: str | None, batch_size: int
) -> Tally:
    db = Database(settings)
    try:
        tenant_id = await _resolve_tenant(db, tenant)
        checkpoint.load(source, tenant_id)
        with _ProgressBar(source, checkpoint) as (progress, task):
            with source.path.open("rb") as f:
                for batch in _batches(_records(source, f, checkpoint), batch_size):
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
        result = await ingest(session, tenant_id, decoded, received_us=to_micros(utcnow()))
    tally.accepted += result.accepted
    tally.duplicates += result.duplicates
    for problem in result.problems:
        tally.reject(batch[problem.index].line, problem.field, problem.reason)


def _batches(items: Iterator[Item], size: int) -> Iterator[list[Item]]:
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# --- decoding: the API's wire decoder, one record at a time ----------------------------------


def decode_batch(items: list[Item]) -> Decoded:
    """A `Decoded` for `ingest`, indexed by position in the batch, as if posted as one array.

    Records are decoded one by one so that a malformed line costs only itself; `raw` is filled
    (for every position, as `ingest` expects) only when something was rejected.
    """
    decoded = Decoded([], [], None)
    for index, item in enumerate(items):
        if item.reason is not None:
            decoded.problems.append(Problem(index, item.reason, item.field))
            continue
        assert item.body is not None
        try:
            one = decode(item.body, max_events=1)
        except MalformedRequest as exc:
            decoded.problems.append(Problem(index, f"is not valid JSON ({_after_colon(exc.detail)})"))
            continue
        decoded.events.extend((index, event) for _, event in one.events)
        decoded.problems.extend(Problem(index, p.reason, p.field) for p in one.problems)
    if decoded.problems:
        decoded.raw = [_raw(item) for item in items]
    return decoded


def _after_colon(message: str) -> str:
    return message.partition(": ")[2] or message


def _raw(item: Item) -> Any:
    if item.raw is not None:
        return item.raw
    try:
        return codec.loads(item.body or b"")
    except codec.DecodeError:
        return (item.body or b"").decode("utf-8", "replace")


# --- reading the file ----------------------------------------------------------------------


def open_source(path: Path) -> Source:
    """Recognise the format and check what must hold before anything is imported."""
    try:
        with path.open("rb") as f:
            head = f.read(_HEAD)
            size = os.fstat(f.fileno()).st_size
            source = Source(path, _format_of(path, head), size, hashlib.sha256(head).hexdigest())
            f.seek(0)
            if source.format == "csv":
                _read_header(source, f)
            else:
                _check_first_line(path, f)
    except OSError as exc:
        raise FileUnusable(f"cannot read {path}: {exc.strerror or exc}") from None
    return source


def _format_of(path: Path, head: bytes) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json", ".jsonlines"):
        return "jsonl"
    return "jsonl" if head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{" else "csv"


def _check_first_line(path: Path, f: IO[bytes]) -> None:
    """A file whose first record is not a JSON object is not JSON Lines at all (for example a
    pretty-printed JSON array): refuse it whole rather than reject every line."""
    for number, chunk in enumerate(f, start=1):
        text = _strip_bom(chunk, number).strip()
        if not text:
            continue
        try:
            value = msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            raise FileUnusable(f"{path} is not JSON Lines: line {number} is not JSON ({exc})") from None
        if not isinstance(value, dict):
            raise FileUnusable(
                f"{path} is not JSON Lines: line {number} is not a JSON object; "
                "put one CloudEvent object on each line"
            )
        return


def _strip_bom(chunk: bytes, line: int) -> bytes:
    return chunk.removeprefix(b"\xef\xbb\xbf") if line == 1 else chunk


def _records(source: Source, f: IO[bytes], checkpoint: Checkpoint) -> Iterator[Item]:
    start, line = checkpoint.offset, checkpoint.line
    if source.format == "csv":
        return _csv_records(source, f, max(start, source.body_start), max(line, source.body_line))
    return _jsonl_records(f, start, line)


def _jsonl_records(f: IO[bytes], offset: int, line: int) -> Iterator[Item]:
    f.seek(offset)
    for chunk in f:
        line += 1
        offset += len(chunk)
        text = _strip_bom(chunk, line).strip()
        if not text:
            continue
        if text[:1] == b"{":
            yield Item(line, line, offset, body=text)
        else:
            yield Item(line, line, offset, raw=text.decode("utf-8", "replace"), reason=_not_an_object(text))


def _not_an_object(text: bytes) -> str:
    try:
        msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        return f"is not valid JSON ({exc})"
    return "must be a JSON object: one CloudEvent per line"


# --- CSV -----------------------------------------------------------------------------------


class _Lines:
    """Physical lines as text for `csv.reader`, counting bytes and lines as they are consumed,
    so that the end offset of each record (which may span lines) is known."""

    def __init__(self, f: IO[bytes], offset: int, line: int) -> None:
        f.seek(offset)
        self.f, self.offset, self.line = f, offset, line
        self.undecodable: set[int] = set()

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        chunk = self.f.readline()
        if not chunk:
            raise StopIteration
        self.offset += len(chunk)
        self.line += 1
        try:
            return _strip_bom(chunk, self.line).decode("utf-8")
        except UnicodeDecodeError:
            self.undecodable.add(self.line)
            return chunk.decode("utf-8", "replace")


def _read_header(source: Source, f: IO[bytes]) -> None:
    lines = _Lines(f, 0, 0)
    try:
        header = next(csv.reader(lines), None)
    except csv.Error as exc:
        raise FileUnusable(f"{source.path}: the CSV header cannot be read ({exc})") from None
    if header is None:  # an empty file imports nothing
        source.body_start, source.body_line = lines.offset, lines.line
        return
    columns = [name.strip() for name in header]
    problem = _header_problem(columns)
    if problem:
        raise FileUnusable(f"{source.path}: {problem}")
    source.columns, source.body_start, source.body_line = columns, lines.offset, lines.line


def _header_problem(columns: list[str]) -> str | None:
    missing = [name for name in _REQUIRED if name not in columns]
    if missing:
        return (f"the CSV header must name the columns {', '.join(_REQUIRED)}; "
                f"missing: {', '.join(missing)}")
    if len(set(columns)) != len(columns):
        return "the CSV header names a column twice"
    paths = sorted(tuple(c.split(".")[1:]) for c in columns if c.startswith("data."))
    if paths and "data" in columns:
        return "use either a 'data' column of JSON or 'data.<name>' columns, not both"
    empty = [p for p in paths if not all(p)]
    if empty:
        return f"column 'data.{'.'.join(empty[0])}' has an empty property name"
    # Sorted, a path is next to the paths it is a prefix of.
    for shorter, longer in itertools.pairwise(paths):
        if longer[: len(shorter)] == shorter:
            return f"column 'data.{'.'.join(shorter)}' conflicts with 'data.{'.'.join(longer)}'"
    return None


def _csv_records(source: Source, f: IO[bytes], offset: int, line: int) -> Iterator[Item]:
    lines = _Lines(f, offset, line)
    reader = csv.reader(lines)
    while True:
        first = lines.line + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Item(first, lines.line, lines.offset, reason=f"is not valid CSV ({exc})")
            continue
        if not row:
            continue
        if any(n in lines.undecodable for n in range(first, lines.line + 1)):
            yield Item(first, lines.line, lines.offset, raw=row, reason="is not valid UTF-8")
            continue
        yield _csv_item(source.columns, row, Item(first, lines.line, lines.offset))


def _csv_item(columns: list[str], row: list[str], item: Item) -> Item:
    """The row as a CloudEvent-shaped object encoded for the wire decoder; the cells as
    written are what operators see if it is rejected."""
    item.raw = dict(zip(columns, row, strict=False))
    if len(row) != len(columns):
        item.reason = f"has {len(row)} fields; the header has {len(columns)}"
        return item
    event: dict[str, Any] = {}
    data: dict[str, Any] = {}
    for name, value in zip(columns, row, strict=True):
        if value == "":  # an empty cell is an absent attribute
            continue
        if name == "data":
            try:
                event["data"] = msgspec.json.decode(value)
            except msgspec.DecodeError as exc:
                item.reason, item.field = f"is not valid JSON ({exc})", "data"
                return item
        elif name.startswith("data."):
            _put(data, name[5:].split("."), _cell_value(value))
        else:
            event[name] = value
    if data:
        event["data"] = data
    item.body = msgspec.json.encode(event)
    return item


def _cell_value(value: str) -> Any:
    """A cell that reads as a JSON number is that number, anything else is a string."""
    return msgspec.json.decode(value) if _JSON_NUMBER.fullmatch(value) else value


def _put(target: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value


# --- checkpoint ----------------------------------------------------------------------------


class Checkpoint:
    """Progress of one file into one tenant, kept beside the file between runs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.line = 0
        self.tally = Tally()
        self._identity: dict[str, Any] = {}
        self.writable = True

    def load(self, source: Source, tenant_id: str) -> None:
        self._identity = {"head_sha256": source.head, "tenant_id": tenant_id}
        try:
            saved = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, orjson.JSONDecodeError):
            say(f"ignoring unreadable progress file {self.path.name}; starting from the top")
            return
        same = all(saved.get(k) == v for k, v in self._identity.items())
        if not same or not isinstance(saved.get("offset"), int) or saved["offset"] > source.size:
            say(f"{self.path.name} belongs to another file or tenant; starting from the top")
            return
        self.offset, self.line = saved["offset"], saved["line"]
        self.tally = Tally(saved["accepted"], saved["duplicates"], saved["rejected"],
                           [tuple(r) for r in saved["listed"]])
        say(f"resuming after line {self.line}, committed by an earlier run")

    def advance(self, line: int, offset: int) -> None:
        """Called only after the batch ending at `offset` has committed."""
        self.line, self.offset = line, offset
        if not self.writable:
            return
        t = self.tally
        state = {**self._identity, "offset": offset, "line": line, "accepted": t.accepted,
                 "duplicates": t.duplicates, "rejected": t.rejected, "listed": t.listed}
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            temporary.write_bytes(orjson.dumps(state))
            os.replace(temporary, self.path)  # atomic: a reader sees the old or the new state
        except OSError as exc:
            self.writable = False
            say(f"warning: cannot save progress to {self.path} ({exc.strerror}); "
                      "an interrupted import would start again from the top")

    def clear(self) -> None:
        """The whole file is in: a new run reads it again (and counts nothing twice)."""
        self.path.unlink(missing_ok=True)


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
