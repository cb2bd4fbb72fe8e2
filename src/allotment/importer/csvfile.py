"""CSV files: the header's checks, and each row as a CloudEvent-shaped object for the wire
decoder (`data.<name>` columns become properties of `data`)."""

from __future__ import annotations

import csv
import itertools
import re
from collections.abc import Iterator
from typing import IO, Any

import msgspec

from allotment import codec
from allotment.importer.source import FileUnusable, Item, Source, strip_bom

_REQUIRED = ("id", "source", "type", "subject")
# What the wire decoder reads of an event; any other column's values would be dropped.
_ATTRIBUTES = frozenset({*_REQUIRED, "specversion", "time", "datacontenttype", "data"})
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


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
            return strip_bom(chunk, self.line).decode("utf-8")
        except UnicodeDecodeError:
            self.undecodable.add(self.line)
            return chunk.decode("utf-8", "replace")


def read_header(source: Source, f: IO[bytes]) -> None:
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
    unknown = [c for c in columns if c not in _ATTRIBUTES and not c.startswith("data.")]
    if unknown:
        return (f"column '{unknown[0]}' is not an event attribute, so its values would be dropped; "
                f"a property of the event's data is a column named 'data.{unknown[0]}'")
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


def csv_records(source: Source, f: IO[bytes], offset: int, line: int) -> Iterator[Item]:
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
                event["data"] = codec.loads(value)
            except msgspec.DecodeError as exc:
                item.reason, item.field = f"is not valid JSON ({exc})", "data"
                return item
        elif name.startswith("data."):
            _put(data, name[5:].split("."), _cell_value(value))
        else:
            event[name] = value
    if data:
        event["data"] = data
    item.body = codec.dumps(event).encode()
    return item


def _cell_value(value: str) -> Any:
    """A cell that reads as a JSON number is that number, anything else is a string."""
    return codec.loads(value) if _JSON_NUMBER.fullmatch(value) else value


def _put(target: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
