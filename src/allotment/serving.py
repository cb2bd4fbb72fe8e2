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

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import socket
import sys
import time
from multiprocessing.process import BaseProcess
from typing import Any

import structlog

log = structlog.get_logger()

APP = "allotment.api.app:create_app"
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
STARTUP_FAILURE = 3  # the exit status uvicorn gives a server that could not start


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

    config = uvicorn.Config(APP, factory=True, host=host, port=port, **options)
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
