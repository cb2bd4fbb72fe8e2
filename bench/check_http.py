"""Throughput of `POST /v1/check` over HTTP against a bare Starlette app, in the same run.

    .venv/bin/python bench/check_http.py [--backends sqlite,postgresql] [--seconds 6]
        [--rounds 3] [--connections 64] [--workers 2] [--customers 1000] [--cases check,spread,hot]

Needs `wrk` (Debian package `wrk`). The baseline is a hello-world Starlette app on uvicorn
with the same worker count. Against it, `allotment serve` on a fresh database of each
backend: one plan with a metered feature, `--customers` customers, and wrk checking
customers in turn (no consume; then `consume=true` against a high hard limit, spread over
the customers and on one hot customer). Prints requests/s, p50/p99 latency and the ratio
to the baseline. Both servers run throughout and each case runs in rounds, the baseline
right before the case in each, because this machine's speed drifts by tens of percent
within minutes: each round's ratio is against the baseline beside it, and the round with
the median ratio is printed, with the range. Load generator and servers share the cores.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from common import drop_database, free_port, fresh_database, server

HERE = Path(__file__).parent
CASES = ("check", "spread", "hot")

# wrk runs this per request: the next customer's check, with the bearer key.
LUA = """
local customers = {customers}
local consume = "{consume}"
local hot = {hot}
local n = 0
request = function()
  n = n + 1
  local who = hot and "c0" or ("c" .. (n % customers))
  local body = '{{"customer":"' .. who .. '","feature":"api-calls","consume":' .. consume .. '}}'
  return wrk.format("POST", "/v1/check", {{["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer {key}"}}, body)
end
"""


def wrk(url: str, seconds: int, connections: int, script: str | None = None) -> dict[str, float]:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        if script is not None:
            f.write(script)
            cmd += ["-s", f.name]
    out = subprocess.run([*cmd, url], check=True, capture_output=True, text=True).stdout
    os.unlink(f.name)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
        "p99": _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


@contextmanager
def baseline_server(workers: int) -> Iterator[str]:
    """The hello-world app on uvicorn with `workers` processes; yields its URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "hello:app", "--app-dir", str(HERE), "--port", str(port),
         "--workers", str(workers), "--log-level", "warning", "--no-access-log"],
    )
    try:
        _wait(f"http://127.0.0.1:{port}/")
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


def _wait(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def setup(url: str, key: str, customers: int) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        for path, body in [
            ("/v1/features", {"key": "api-calls", "name": "API calls"}),
            ("/v1/plans", {"key": "starter", "name": "Starter", "entitlements": [
                {"feature": "api-calls", "kind": "metered", "usage_period": "MONTH",
                 "included": 10**9, "soft_limit": 10**9, "hard_limit": 10**10}]}),
            ("/v1/plans/starter/publish", None),
        ]:
            c.post(path, json=body).raise_for_status()
        for i in range(customers):
            c.post("/v1/customers", json={"key": f"c{i}", "name": f"Customer {i}"}).raise_for_status()
            c.post("/v1/subscriptions", json={"customer": f"c{i}", "plan": "starter"}).raise_for_status()


def run(backend: str, args: argparse.Namespace, hello: str) -> None:
    url = fresh_database(backend)
    try:
        from allotment.migrate import upgrade

        upgrade(url)
        with server(url, workers=args.workers) as (base_url, key):
            setup(base_url, key, args.customers)
            cases = [("check", "false", "false"), ("consume, spread", "true", "false"),
                     ("consume, one hot", "true", "true")]
            cases = [case for case, name in zip(cases, CASES, strict=True) if name in args.cases.split(",")]
            for n, (label, consume, hot) in enumerate(cases):
                script = LUA.format(customers=args.customers, consume=consume, hot=hot, key=key)
                # Warm up: every worker process resolves every customer's names once, for good.
                wrk(base_url, 12 if n == 0 else 2, args.connections, script)
                rounds = []
                for _ in range(args.rounds):
                    base = wrk(hello, args.seconds, args.connections)
                    got = wrk(base_url, args.seconds, args.connections, script)
                    rounds.append((got["rps"] / base["rps"], got, base))
                rounds.sort(key=lambda r: r[0])
                ratio, got, base = rounds[len(rounds) // 2]
                spread = f"{rounds[0][0]:.0%}-{rounds[-1][0]:.0%}"
                print(f"{backend:>10}: {label:<17} {got['rps']:9,.0f} req/s  p50 {got['p50']:6.2f} ms"
                      f"  p99 {got['p99']:6.2f} ms  = {ratio:.0%} of baseline ({base['rps']:,.0f} req/s"
                      f" just before; {spread} over {len(rounds)} rounds)"
                      + (f"  ({got['errors']:.0f} non-2xx!)" if got["errors"] else ""))
    finally:
        drop_database(url)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--cases", default=",".join(CASES), help="Some of: " + ", ".join(CASES))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("this benchmark needs wrk (Debian package `wrk`)")
    with baseline_server(args.workers) as hello:
        base = wrk(hello, args.seconds, args.connections)
        print(f"{'baseline':>10}: Starlette hello   {base['rps']:9,.0f} req/s  p50 {base['p50']:6.2f} ms"
              f"  p99 {base['p99']:6.2f} ms  ({args.workers} workers, {args.connections} connections)")
        for backend in args.backends.split(","):
            run(backend, args, hello)


if __name__ == "__main__":
    main()
