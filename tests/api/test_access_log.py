"""One structured log line per request from a running server, and never a secret in the logs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.servers import Server


@pytest.fixture
def json_logging_server(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setenv("ALLOTMENT_LOG_JSON", "1")
    server = Server(database_url, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _json_lines(server: Server) -> list[dict[str, object]]:
    text = (server.logs / "stdout").read_text() + (server.logs / "stderr").read_text()
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def test_each_request_is_one_json_line_with_method_path_and_status(json_logging_server: Server) -> None:
    """Every answered request, the check's fast path included, is logged once as a JSON line."""
    server = json_logging_server
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/v1/customers").status_code == 401
        assert client.post("/v1/check", json={}).status_code == 401
    server.stop()
    requests = [line for line in _json_lines(server) if line.get("event") == "request"]
    seen = {(line["method"], line["path"], line["status"]) for line in requests}
    assert {("GET", "/v1/customers", 401), ("POST", "/v1/check", 401)} <= seen
    assert all(isinstance(line["ms"], float) and line["level"] == "info" for line in requests)


def test_an_answered_check_is_logged_with_its_status(json_logging_server: Server) -> None:
    """A check answered 200 (an unknown customer, a 404) is logged once, with its status."""
    server = json_logging_server
    headers = {"Authorization": f"Bearer {server.first_admin_key()}"}
    with httpx.Client(base_url=server.url, headers=headers) as client:
        assert client.post("/v1/features", json={"key": "sso"}).status_code == 201
        assert client.post("/v1/customers", json={"key": "acme", "name": "Acme"}).status_code == 201
        assert client.post("/v1/check", json={"customer": "acme", "feature": "sso"}).status_code == 200
        assert client.post("/v1/check", json={"customer": "nobody", "feature": "sso"}).status_code == 404
    server.stop()
    checks = [(line["status"], line["method"]) for line in _json_lines(server) if line.get("path") == "/v1/check"]
    assert checks == [(200, "POST"), (404, "POST")]


def test_keys_and_query_strings_are_not_logged(json_logging_server: Server) -> None:
    """A request's Authorization header and its query string stay out of the log."""
    server = json_logging_server
    headers = {"Authorization": "Bearer alm_not-a-real-secret-123"}
    with httpx.Client(base_url=server.url, headers=headers) as client:
        client.get("/v1/customers", params={"token": "query-secret-456"})
    server.stop()
    logs = (server.logs / "stdout").read_text() + (server.logs / "stderr").read_text()
    assert "alm_not-a-real-secret-123" not in logs and "query-secret-456" not in logs
    assert any(line.get("path") == "/v1/customers" for line in _json_lines(server))


def test_a_request_is_logged_while_the_server_keeps_running(json_logging_server: Server) -> None:
    """Lines are written in small batches, but a quiet server writes its last line soon, not at exit."""
    import time

    server = json_logging_server
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/v1/meters").status_code == 401
    deadline = time.monotonic() + 10
    while not any(line.get("path") == "/v1/meters" for line in _json_lines(server)):
        assert time.monotonic() < deadline, "no request line while the server runs"
        time.sleep(0.05)
