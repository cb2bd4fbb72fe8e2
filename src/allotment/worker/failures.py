"""What a background loop logs when its rounds fail.

The loops retry every second or so, so a database that is down for an hour would otherwise
write thousands of identical tracebacks per process. A failure is logged with its traceback
when it is new (the first, or a different reason from the last one logged); the same failure
again is only counted, and the first round that succeeds after failures says how many failed.
"""

from __future__ import annotations

import sys

import structlog

log = structlog.get_logger()


class Failures:
    """The failures of one loop; call `failed()` inside its `except` block."""

    def __init__(self, message: str) -> None:
        self.message = message
        self._last: str | None = None
        self._count = 0

    def failed(self) -> None:
        exc = sys.exc_info()[1]
        reason = f"{type(exc).__name__}: {exc}"
        self._count += 1
        if reason != self._last:
            log.exception(self.message, error=reason)  # called inside the loop's except block
            self._last = reason

    def succeeded(self) -> None:
        if self._count:
            log.info(f"{self.message}: recovered", failed_rounds=self._count)
        self._last, self._count = None, 0
