"""Shared pieces of the benchmarks: fresh databases, a real server process, event batches."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import orjson

POSTGRES_URL = os.environ.get("ALLOTMENT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
BIN = Path(sys.executable).parent


def fresh_database(backend: str) -> str:
    """An empty database URL for one benchmark run (migrated by the server or by the caller)."""
    if backend == "sqlite":
        return f"sqlite:///{tempfile.mkdtemp(prefix='allotment-bench-')}/bench.db"
    name = f"allotment_bench_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        conn = await asyncpg.connect(POSTGRES_URL)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()

    asyncio.run(create())
    return POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_database(url: str) -> None:
    if not url.startswith("postgresql"):
        return
    name = url.rsplit("/", 1)[1]

    async def drop() -> None:
        conn = await asyncpg.connect(POSTGRES_URL)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    asyncio.run(drop())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server(database_url: str, *, workers: int = 2) -> Iterator[tuple[str, str]]:
    """`allotment serve` as users run it; yields its base URL and an admin key."""
    env = {**os.environ, "DATABASE_URL": database_url}
    key = subprocess.run(
        [BIN / "allotment", "keys", "create", "--scope", "admin", "--name", "bench"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()
    port = free_port()
    proc = subprocess.Popen(
        [BIN / "allotment", "serve", "--port", str(port), "--workers", str(workers), "--no-migrate"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"server did not start: {proc.communicate()[1].decode()[-2000:]}")
        time.sleep(0.1)
    try:
        yield url, key
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def make_events(count: int, *, subjects: int = 100, seed: int = 7, spread: timedelta = timedelta(minutes=1)) -> list[dict]:
    """AI-platform traffic: prompts with tokens per model and direction, random client ids,
    times within `spread` before now (live traffic by default)."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    models = ["gpt-large", "gpt-small", "embed"]
    out = []
    for _ in range(count):
        at = now - timedelta(seconds=rng.random() * spread.total_seconds())
        out.append({
            "specversion": "1.0",
            "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "source": "gateway",
            "type": "prompt",
            "subject": f"user-{rng.randrange(subjects)}",
            "time": at.isoformat().replace("+00:00", "Z"),
            "data": {"tokens": rng.randrange(1, 4000), "model": rng.choice(models),
                     "direction": rng.choice(["input", "output"])},
        })
    return out


def batches(events: list[dict], size: int) -> list[bytes]:
    return [orjson.dumps(events[i : i + size]) for i in range(0, len(events), size)]
