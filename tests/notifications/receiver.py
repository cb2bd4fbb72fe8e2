"""A real HTTP receiver on loopback that records every webhook it is sent.

It runs in a thread (stdlib ThreadingHTTPServer), so both in-process delivery rounds and
separate server or worker processes can post to it. It notes when a `webhook-id` is being
handled twice at the same time: the one thing two workers must never do.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


# What to answer: a status and a body, or "garbage" (not HTTP at all), or "hang".
Answer = tuple[int, bytes] | str
Respond = Callable[[Received], Answer]


def ok(_: Received) -> Answer:
    return (200, b"thanks")


@dataclass
class Receiver:
    respond: Respond = ok
    received: list[Received] = field(default_factory=list)
    overlaps: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    _in_flight: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def start(self, port: int = 0) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                got = Received({k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
                receiver._enter(got)
                try:
                    self._answer(receiver.respond(got))
                finally:
                    receiver._leave(got)

            def _answer(self, answer: Answer) -> None:
                if answer == "hang":
                    receiver.release.wait()
                    self.close_connection = True
                    return
                if answer == "garbage":
                    self.wfile.write(b"\x00\x01 this is not HTTP\r\n\r\n")
                    self.close_connection = True
                    return
                assert isinstance(answer, tuple)
                status, body = answer
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _enter(self, got: Received) -> None:
        with self._lock:
            self.received.append(got)
            if self._in_flight[got.webhook_id]:
                self.overlaps.append(got.webhook_id)
            self._in_flight[got.webhook_id] += 1

    def _leave(self, got: Received) -> None:
        with self._lock:
            self._in_flight[got.webhook_id] -= 1

    def ids(self) -> list[str]:
        with self._lock:
            return [r.webhook_id for r in self.received]

    def in_flight(self) -> int:
        with self._lock:
            return sum(self._in_flight.values())


def wait_until(condition: Callable[[], bool], *, seconds: float, what: str) -> None:
    """Poll for something another thread or process makes true (not a sleep for timing)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.05)
