"""Settings read from the environment; the only place that looks at os.environ."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

DEFAULT_DATABASE_URL = "sqlite:///./allotment.db"


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    # Largest accepted ingest request, in events and in bytes (413 beyond).
    max_batch_events: int = 10_000
    max_body_bytes: int = 20 * 1024 * 1024
    # How long a verified API key is trusted in-process; revocation through this process takes
    # effect at once, through another within this time. Past half of it, a request still
    # answers at once and the key is looked up again in the background, so under steady
    # traffic no request waits on a key lookup (one that did held every request behind it).
    key_cache_seconds: float = 2.0
    # SQLite: FULL survives power loss; NORMAL in WAL mode survives a killed process.
    sqlite_synchronous: str = "FULL"
    log_json: bool = False
    # One log line per request (method, path, status, time); off where a proxy logs them already.
    access_log: bool = True
    # Webhook delivery: off leaves the outbox to `allotment worker` processes (or to tests).
    delivery_enabled: bool = True
    delivery_timeout_seconds: float = 10.0
    delivery_lease_seconds: float = 60.0
    # How long a request's Idempotency-Key (and a check's idempotency_key) is remembered: a
    # retry within it gets the first answer; the workers forget older keys (docs/idempotency.md).
    idempotency_retention_hours: float = 24.0

    @classmethod
    def from_env(cls) -> Settings:
        """Raises SettingError naming the variable whose value cannot be read."""
        env = os.environ
        return cls(
            database_url=env.get("DATABASE_URL", DEFAULT_DATABASE_URL),
            max_batch_events=_number(int, "ALLOTMENT_MAX_BATCH_EVENTS", cls.max_batch_events),
            max_body_bytes=_number(int, "ALLOTMENT_MAX_BODY_BYTES", cls.max_body_bytes),
            key_cache_seconds=_number(float, "ALLOTMENT_KEY_CACHE_SECONDS", cls.key_cache_seconds),
            sqlite_synchronous=env.get("ALLOTMENT_SQLITE_SYNCHRONOUS", cls.sqlite_synchronous),
            log_json=env.get("ALLOTMENT_LOG_JSON", "") not in ("", "0", "false"),
            access_log=env.get("ALLOTMENT_ACCESS_LOG", "1") not in ("0", "false", "off"),
            delivery_enabled=env.get("ALLOTMENT_DELIVERY", "1") not in ("0", "false", "off"),
            delivery_timeout_seconds=_number(
                float, "ALLOTMENT_DELIVERY_TIMEOUT_SECONDS", cls.delivery_timeout_seconds
            ),
            delivery_lease_seconds=_number(float, "ALLOTMENT_DELIVERY_LEASE_SECONDS", cls.delivery_lease_seconds),
            idempotency_retention_hours=_number(
                float, "ALLOTMENT_IDEMPOTENCY_RETENTION_HOURS", cls.idempotency_retention_hours
            ),
        )


class SettingError(ValueError):
    """An environment variable holds what its setting cannot be."""


N = TypeVar("N", int, float)


def _number(kind: type[N], name: str, default: N) -> N:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return kind(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise SettingError(f"{name}: {raw!r} is not {what}") from None
