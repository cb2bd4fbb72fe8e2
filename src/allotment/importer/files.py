"""Opening the file: format detection, the checks made before anything is imported, and the
records of a JSON Lines file (CSV records come from `csvfile`)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import msgspec

from allotment.importer.csvfile import csv_records, read_header
from allotment.importer.source import FileUnusable, Item, Source, strip_bom

_HEAD = 1024  # bytes hashed to recognise the file a checkpoint belongs to


def open_source(path: Path) -> Source:
    """Recognise the format and check what must hold before anything is imported."""
    try:
        with path.open("rb") as f:
            head = f.read(_HEAD)
            size = os.fstat(f.fileno()).st_size
            source = Source(path, _format_of(path, head), size, hashlib.sha256(head).hexdigest())
            f.seek(0)
            if source.format == "csv":
                read_header(source, f)
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
        text = strip_bom(chunk, number).strip()
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


def records(source: Source, f: IO[bytes], offset: int, line: int) -> Iterator[Item]:
    """The records after byte `offset`, which ends physical line `line` (0, 0 from the top)."""
    if source.format == "csv":
        return csv_records(source, f, max(offset, source.body_start), max(line, source.body_line))
    return _jsonl_records(f, offset, line)


def _jsonl_records(f: IO[bytes], offset: int, line: int) -> Iterator[Item]:
    f.seek(offset)
    for chunk in f:
        line += 1
        offset += len(chunk)
        text = strip_bom(chunk, line).strip()
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
