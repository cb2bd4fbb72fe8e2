"""A real `allotment serve` process for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ALLOTMENT = str(Path(sys.executable).parent / "allotment")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    database_url: str
    logs: Path
    port: int = field(default_factory=free_port)
    workers: int = 1
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start `allotment serve` and return once /healthz answers."""
        with (self.logs / "stdout").open("ab") as out, (self.logs / "stderr").open("ab") as err:
            self.proc = subprocess.Popen(
                [ALLOTMENT, "serve", "--port", str(self.port), "--workers", str(self.workers)],
                env={**os.environ, "DATABASE_URL": self.database_url}, stdout=out, stderr=err,
            )
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, f"server exited: {(self.logs / 'stderr').read_text()}"
            assert time.monotonic() < deadline, "server not healthy within a minute"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)

    def first_admin_key(self) -> str:
        """The key `serve` prints on stdout at first start (before it listens)."""
        return (self.logs / "stdout").read_text().split()[0]

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
