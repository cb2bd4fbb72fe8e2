"""`allotment serve --workers N`: N uvicorn processes, each with a listening socket of its own.

Uvicorn's own workers share one listening socket, and whichever process wakes first accepts
every pending connection: a client (or a load balancer) that opens its keep-alive connections
in a burst lands them all on one worker while the others idle. Here each worker binds the
port with SO_REUSEPORT, so the kernel spreads new connections over the workers' sockets by
their addresses. The parent only supervises: it restarts a worker that dies and passes
SIGTERM / SIGINT on to all of them; a worker stops when the parent dies. Linux only, like
the rest of a production deployment of Allotment.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import multiprocessing
import os
import signal
import socket
import sys
import time
from multiprocessing.process import BaseProcess
from typing import Any, cast

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = structlog.get_logger()

APP = "allotment.api.app:create_app"
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
STARTUP_FAILURE = 3  # the exit status uvicorn gives a server that could not start
# How long an idle keep-alive connection is kept. Clients pool idle connections for about 5 s
# (httpx, aiohttp) and load balancers for 60 s; uvicorn's own 5 s made the server close some
# just as a client sent its next request on them, which failed (about one request in 3,000
# with 48 clients in bursts). Longer than theirs, so the client or the balancer closes first.
KEEP_ALIVE_SECONDS = 75


def serve(*, host: str, port: int, workers: int, **options: Any) -> None:
    """Serve `APP` until SIGTERM or SIGINT; `options` go to `uvicorn.Config`."""
    if workers <= 1:
        _run_worker(host, port, options)
        return
    _check_port(host, port)  # fail at once, in the parent, when the port is taken
    context = multiprocessing.get_context("spawn")
    stopping: list[int] = []
    for sig in _STOP_SIGNALS:
        signal.signal(sig, lambda number, _frame: stopping.append(number))
    running = [_start(context, host, port, options) for _ in range(workers)]
    failed = False
    while not stopping and not failed:
        time.sleep(0.2)
        for i, process in enumerate(running):
            if process.is_alive() or stopping:
                continue
            if process.exitcode == STARTUP_FAILURE:  # restarting would fail the same way
                log.error("a worker could not start; stopping", pid=process.pid)
                failed = True
                break
            log.warning("worker process died; starting another", pid=process.pid, exitcode=process.exitcode)
            running[i] = _start(context, host, port, options)
    for process in running:
        if process.is_alive() and process.pid is not None:
            process.terminate()  # SIGTERM: uvicorn finishes in-flight requests, then the lifespan
    for process in running:
        process.join()
    if failed:
        sys.exit(STARTUP_FAILURE)


def _start(context: Any, host: str, port: int, options: dict[str, Any]) -> BaseProcess:
    process: BaseProcess = context.Process(
        target=_run_worker, args=(host, port, options), kwargs={"parent": os.getpid()}, daemon=False
    )
    process.start()
    return process


def _run_worker(host: str, port: int, options: dict[str, Any], *, parent: int | None = None) -> None:
    import uvicorn

    if parent is not None:
        _stop_with_parent(parent)

    options = {"timeout_keep_alive": KEEP_ALIVE_SECONDS, **options}
    config = uvicorn.Config(APP, factory=True, host=host, port=port, http=OneWritePerResponse, **options)
    server = uvicorn.Server(config)
    server.run(sockets=[_listening_socket(host, port)])
    if not server.started:  # the application's start-up failed (logged by uvicorn)
        sys.exit(STARTUP_FAILURE)


def _stop_with_parent(parent: int) -> None:
    """A worker whose supervisor dies (even by SIGKILL) gets SIGTERM: no orphan keeps the port."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _check_port(host: str, port: int) -> None:
    """Raise OSError when something other than our workers holds the port."""
    probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    finally:
        probe.close()


class OneWritePerResponse(HttpToolsProtocol):
    """Uvicorn's HTTP/1.1 protocol, sending a response's head and body in one write.

    Uvicorn writes the head when the app starts the response and the body when it sends it:
    two system calls per answer, and on loopback two deliveries to the peer. A check answers
    in well under a millisecond, so that second call was a tenth of its cost. The head is held
    until the body follows in the same turn of the event loop, or sent alone at its end.
    """

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        # Duck-typed: everything but writing and closing goes to the real transport.
        self.transport = cast(asyncio.Transport, HeadHeldForBody(transport))

    def send_400_response(self, msg: str) -> None:
        """A request the HTTP parser refuses (malformed, or a request line or headers past its
        size limit, such as a query of thousands of subjects) gets a problem document like
        every other error, instead of uvicorn's plain text; the connection is then closed."""
        body = json.dumps({
            "type": "malformed_request", "title": "Malformed request", "status": 400,
            "detail": f"the request line or headers could not be read ({msg.rstrip('.')}): malformed, or "
                      "longer than the server reads; send long filters in a JSON body (POST .../query)",
        }).encode()
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [b"content-type: application/problem+json\r\n", b"content-length: %d\r\n" % len(body),
                 b"connection: close\r\n\r\n"]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


class HeadHeldForBody:
    """A transport that holds a written response head until the next write or loop turn."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._head is not None:
            data, self._head = self._head + data, None
        elif data.startswith(b"HTTP/") and data.endswith(b"\r\n\r\n"):
            self._head = data
            asyncio.get_running_loop().call_soon(self.flush)
            return
        self._transport.write(data)

    def flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
