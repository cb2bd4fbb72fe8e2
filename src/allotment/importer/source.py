"""What the readers know of the file being imported and of each record in it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class FileUnusable(Exception):
    """The file as a whole cannot be imported (unreadable, not JSON Lines, bad CSV header)."""


@dataclass
class Source:
    path: Path
    format: str  # "jsonl" or "csv"
    size: int
    head: str  # sha256 of the first KB
    columns: list[str] = field(default_factory=list)  # CSV header
    body_start: int = 0  # byte offset after the CSV header
    body_line: int = 0  # lines before the first record


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


def strip_bom(chunk: bytes, line: int) -> bytes:
    return chunk.removeprefix(b"\xef\xbb\xbf") if line == 1 else chunk
