"""The real `allotment` command, run as a subprocess against the test's database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

ALLOTMENT = str(Path(sys.executable).parent / "allotment")

Run = Callable[..., subprocess.CompletedProcess[str]]


def cli_env(database_url: str) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": database_url}


@pytest.fixture
def allotment(database_url: str) -> Run:
    """`allotment(*args)` runs the command and returns its exit code, stdout and stderr."""

    def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ALLOTMENT, *args], env=cli_env(database_url), capture_output=True, text=True,
            timeout=timeout, check=False,
        )

    return run


@pytest.fixture
async def api(app: object) -> AsyncIterator[httpx.AsyncClient]:
    """The API on the same database, without credentials (tests bring their own key)."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        base_url="http://allotment.test",
    ) as client:
        yield client
