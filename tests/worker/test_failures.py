"""A background loop that keeps failing the same way says so once, and says when it recovered."""

from __future__ import annotations

from structlog.testing import capture_logs

from allotment.worker.failures import Failures


def _fail(failures: Failures, exc: Exception) -> None:
    try:
        raise exc
    except Exception:  # noqa: BLE001 (a loop's handler, as in the workers)
        failures.failed()


def test_the_same_failure_each_round_is_logged_once_then_its_recovery():
    """A database that is down for a minute fails a loop 60 times: one line with the traceback,
    then one line when a round succeeds again, with how many rounds failed."""
    failures = Failures("folding the rollup journal failed")
    with capture_logs() as logs:
        for _ in range(3):
            _fail(failures, ConnectionRefusedError("connection refused"))
        failures.succeeded()
        failures.succeeded()
    assert [(e["event"], e.get("exc_info"), e.get("failed_rounds")) for e in logs] == [
        ("folding the rollup journal failed", True, None),
        ("folding the rollup journal failed: recovered", None, 3),
    ]
    assert logs[1]["log_level"] == "info"


def test_a_different_failure_is_logged_again():
    """A new reason is news: it is logged with its own traceback."""
    failures = Failures("webhook delivery round failed")
    with capture_logs() as logs:
        _fail(failures, ConnectionRefusedError("connection refused"))
        _fail(failures, ConnectionRefusedError("connection refused"))
        _fail(failures, ValueError("a bad row"))
    assert [e["event"] for e in logs] == ["webhook delivery round failed"] * 2
    assert "ValueError" in logs[1]["error"]
