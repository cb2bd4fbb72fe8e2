"""`allotment serve --workers N`: workers with sockets of their own, supervised."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from tests.cli.conftest import ALLOTMENT, cli_env
from tests.servers import Server


def _children(parent: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.add(int(entry))
    return found


def _sockets(pid: int) -> int:
    count = 0
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:  # the process ended since it was listed: it holds nothing
        return 0
    for fd in fds:
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            continue
    return count


def _until(condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[Server]:
    running = Server(f"sqlite:///{tmp_path}/serve.db", tmp_path, workers=2)
    running.start()
    assert running.proc is not None
    # /healthz may answer before the second worker listens: wait for both listening sockets.
    _until(lambda: len(_workers(running)) == 2 and _listeners(running.port) == 2, "two workers within a minute")
    try:
        yield running
    finally:
        running.stop()


def _listeners(port: int) -> int:
    """Sockets listening on `port` (state 0A in the kernel's TCP tables)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            count += state == "0A" and int(local.rsplit(":", 1)[1], 16) == port
    return count


def _workers(server: Server) -> set[int]:
    assert server.proc is not None
    return {pid for pid in _children(server.proc.pid) if _sockets(pid) > 0 and _listening(pid)}


def _listening(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:  # ended since it was listed
        return False
    return b"multiprocessing" in cmdline and b"resource_tracker" not in cmdline


def test_a_burst_of_keep_alive_connections_is_spread_over_the_workers(two_workers: Server) -> None:
    workers = sorted(_workers(two_workers))
    before = {pid: _sockets(pid) for pid in workers}
    clients = [httpx.Client(base_url=two_workers.url) for _ in range(16)]
    try:
        for client in clients:
            assert client.get("/healthz").status_code == 200
        gained = {pid: _sockets(pid) - before[pid] for pid in workers}
        # Each worker accepts on its own socket: the kernel spreads the 16 connections (all on
        # one of two would happen once in 30,000 runs; with one shared socket it was the rule).
        assert all(n > 0 for n in gained.values()), gained
    finally:
        for client in clients:
            client.close()


def test_a_keep_alive_connection_idle_past_a_clients_pool_expiry_still_answers(two_workers: Server) -> None:
    """Clients (httpx, aiohttp, browsers) keep idle connections for about 5 s; a server that
    closes them at the same age races the client's next request on them, which fails. The
    server keeps them longer, so the client is the one that lets them go."""
    request = b"GET /healthz HTTP/1.1\r\nHost: allotment\r\n\r\n"
    with socket.create_connection(("127.0.0.1", two_workers.port), timeout=10) as conn:
        conn.sendall(request)
        assert conn.recv(4096).startswith(b"HTTP/1.1 200")
        time.sleep(6)  # idle, as a pooled connection between two bursts of a client's requests
        conn.sendall(request)
        assert conn.recv(4096).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("request_line", [
    b"GET /v1/meters/tokens/query?" + b"&".join(b"subject=%0150d" % i for i in range(700)) + b" HTTP/1.1",
    b"NOT AN HTTP REQUEST",
])
def test_a_request_the_http_parser_refuses_gets_a_problem_document(two_workers: Server, request_line: bytes) -> None:
    """A request line past what the server reads (thousands of subjects in a query) or no
    HTTP at all: a 400 problem like every other error, which says what to do instead."""
    with socket.create_connection(("127.0.0.1", two_workers.port), timeout=10) as conn:
        conn.sendall(request_line + b"\r\nHost: allotment\r\n\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"content-type: application/problem+json" in head.lower()
    problem = json.loads(body)
    assert (problem["type"], problem["status"]) == ("malformed_request", 400)
    assert "POST" in problem["detail"]


def test_a_worker_that_dies_is_replaced_and_the_port_keeps_answering(two_workers: Server) -> None:
    first = _workers(two_workers)
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    _until(lambda: len(_workers(two_workers) - {victim}) == 2, "a replacement worker within a minute")
    for _ in range(20):  # fresh connections land on either worker
        assert httpx.get(f"{two_workers.url}/healthz", timeout=5).status_code == 200


def test_workers_stop_when_the_supervisor_is_killed(two_workers: Server) -> None:
    workers = _workers(two_workers)
    two_workers.kill()  # SIGKILL: no chance to pass anything on
    _until(lambda: not any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in workers),
           "workers gone within a minute")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{two_workers.url}/healthz", timeout=2)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_workers_metrics_folder_is_removed_when_the_server_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Serving with several workers makes a folder for their shared metrics; a server that
    stops removes it, so restarts do not pile folders up."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    running = Server(f"sqlite:///{tmp_path}/serve.db", tmp_path, workers=2)
    running.start()
    try:
        _until(lambda: _listeners(running.port) == 2, "two workers within a minute")
        assert [p.name.startswith("allotment-metrics-") for p in scratch.iterdir()] == [True]
    finally:
        running.stop()
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("shared", [True, False], ids=["another-allotment", "another-program"])
def test_a_port_already_listened_on_is_refused_naming_the_port(tmp_path: Path, shared: bool) -> None:
    """`serve` on a port something listens on exits 1 naming the port: it neither joins another
    server's socket (the kernel would spread requests over both) nor blames the database."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if shared:  # as the workers of a running `allotment serve` hold their port
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        done = subprocess.run(
            [ALLOTMENT, "serve", "--port", str(port)], env=cli_env(f"sqlite:///{tmp_path}/serve.db"),
            capture_output=True, text=True, timeout=60, check=False,
        )
    finally:
        holder.close()
    assert done.returncode == 1, done.stderr
    assert f"127.0.0.1:{port}" in done.stderr and "in use" in done.stderr, done.stderr
    assert "database" not in done.stderr, done.stderr


def test_zero_workers_is_refused() -> None:
    """`--workers 0` is a usage error naming the option, not a server of one worker."""
    done = subprocess.run([ALLOTMENT, "serve", "--workers", "0"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 2 and "--workers" in done.stderr, done.stderr
