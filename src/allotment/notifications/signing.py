"""Standard Webhooks signatures (https://www.standardwebhooks.com): pure, no I/O.

`webhook-id` is the notification's id, identical on every redelivery and for every endpoint,
so receivers de-duplicate on it; `webhook-timestamp` is the time of the attempt (receivers
reject stale ones to stop replays); the signature covers id, timestamp and body.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache

from standardwebhooks import Webhook

PREFIX = "whsec_"
SECRET_BYTES = 32
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64


def generate_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_problem(secret: str) -> str | None:
    """Why `secret` cannot sign, or None: `whsec_` + base64 of 24 to 64 bytes."""
    if not secret.startswith(PREFIX):
        return f"must start with '{PREFIX}'"
    try:
        raw = base64.b64decode(secret.removeprefix(PREFIX), validate=True)
    except (binascii.Error, ValueError):
        return f"must be '{PREFIX}' followed by base64"
    if not MIN_SECRET_BYTES <= len(raw) <= MAX_SECRET_BYTES:
        return f"must encode {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes"
    return None


@lru_cache(maxsize=1024)
def _signer(secret: str) -> Webhook:
    return Webhook(secret)


def headers(secrets: Sequence[str], *, message_id: str, at: datetime, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt, signed with each of `secrets`
    (space-separated signatures: a receiver holding any one of the secrets verifies)."""
    text = body.decode()
    signature = " ".join(_signer(secret).sign(message_id, at, text) for secret in secrets)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }
