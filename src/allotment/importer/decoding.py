"""Decoding: the API's wire decoder, one record at a time."""

from __future__ import annotations

from typing import Any

from allotment import codec
from allotment.errors import MalformedRequest, Problem
from allotment.importer.source import Item
from allotment.metering.wire import Decoded, decode


def decode_batch(items: list[Item]) -> Decoded:
    """A `Decoded` for `ingest`, indexed by position in the batch, as if posted as one array.

    Records are decoded one by one so that a malformed line costs only itself; `raw` is filled
    (for every position, as `ingest` expects) only when something was rejected.
    """
    decoded = Decoded([], [], None)
    for index, item in enumerate(items):
        if item.reason is not None:
            decoded.problems.append(Problem(index, item.reason, item.field))
            continue
        assert item.body is not None
        try:
            one = decode(item.body, max_events=1)
        except MalformedRequest as exc:
            decoded.problems.append(Problem(index, f"is not valid JSON ({_after_colon(exc.detail)})"))
            continue
        decoded.events.extend((index, event) for _, event in one.events)
        decoded.problems.extend(Problem(index, p.reason, p.field) for p in one.problems)
    if decoded.problems:
        decoded.raw = [_raw(item) for item in items]
    return decoded


def _after_colon(message: str) -> str:
    return message.partition(": ")[2] or message


def _raw(item: Item) -> Any:
    if item.raw is not None:
        return item.raw
    try:
        return codec.loads(item.body or b"")
    except codec.DecodeError:
        return (item.body or b"").decode("utf-8", "replace")
