"""`allotment import`: events from JSON Lines or CSV files (placeholder until implemented)."""

from __future__ import annotations

from pathlib import Path

from allotment.config import Settings


def run_import(settings: Settings, path: Path, *, tenant: str | None, batch_size: int) -> int:
    raise NotImplementedError
