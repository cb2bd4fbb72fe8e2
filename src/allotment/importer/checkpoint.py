"""The resume checkpoint: progress of one file into one tenant, kept beside the file.

It is written only after a batch has committed, so it never claims more than the database
holds; a batch committed but not yet checkpointed is re-sent and counts nothing twice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from allotment.importer.console import say
from allotment.importer.source import Source

CHECKPOINT_SUFFIX = ".allotment-import"
LISTED = 20  # rejections listed in the summary; all of them are in GET /v1/events/rejected


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
