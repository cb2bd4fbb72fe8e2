"""Domain errors. They know nothing of HTTP: `api/errors.py` maps each to a status."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FieldError:
    field: str
    message: str


class AllotmentError(Exception):
    """Base of every error a caller can cause; `code` is a stable slug."""

    code = "error"
    title = "Error"

    def __init__(self, detail: str, *, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class ValidationFailed(AllotmentError):
    code = "validation_failed"
    title = "Invalid input"

    @classmethod
    def on(cls, field_name: str, message: str) -> ValidationFailed:
        return cls(f"{field_name}: {message}", errors=[FieldError(field_name, message)])


class MalformedRequest(AllotmentError):
    code = "malformed_request"
    title = "Malformed request"

    @classmethod
    def body(cls, reason: str) -> MalformedRequest:
        """The request's body as a whole is unusable (not JSON, empty, nested too deeply)."""
        return cls(f"body {reason}", errors=[FieldError("body", reason)])


class PayloadTooLarge(AllotmentError):
    code = "payload_too_large"
    title = "Payload too large"


class UnsupportedMediaType(AllotmentError):
    code = "unsupported_media_type"
    title = "Unsupported media type"


class NotFound(AllotmentError):
    code = "not_found"
    title = "Not found"

    def __init__(self, kind: str, key: str, *, detail: str | None = None) -> None:
        super().__init__(detail or f"{kind} '{key}' not found")
        self.code = f"{kind}_not_found"
        self.kind = kind
        self.key = key


class Conflict(AllotmentError):
    code = "conflict"
    title = "Conflict"


class AlreadyExists(Conflict):
    """A create naming a key that is taken: `type` says what kind (`meter_exists`), so a
    client creating idempotently by key can tell it from other conflicts."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} '{key}' already exists")
        self.code = f"{kind}_exists"
        self.kind = kind
        self.key = key


class IdempotencyConflict(Conflict):
    """An idempotency key reused for a different request."""

    code = "idempotency_conflict"


class Unauthenticated(AllotmentError):
    code = "unauthenticated"
    title = "Unauthenticated"


class Forbidden(AllotmentError):
    code = "forbidden"
    title = "Forbidden"


class Unavailable(AllotmentError):
    """The database cannot be reached now; the same request may succeed when retried."""

    code = "database_unavailable"
    title = "Service unavailable"


@dataclass
class Problem:
    """What a rejected item in a batch reports: its position and why."""

    index: int
    reason: str
    field: str | None = None
