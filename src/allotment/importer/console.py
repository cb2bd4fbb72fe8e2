"""The importer's stderr: progress, warnings and errors, so that stdout carries only the summary."""

from __future__ import annotations

from rich.console import Console

err = Console(stderr=True)


def say(message: str) -> None:
    """A plain line on stderr: file names and reasons are not Rich markup."""
    err.print(message, markup=False, highlight=False, soft_wrap=True)
