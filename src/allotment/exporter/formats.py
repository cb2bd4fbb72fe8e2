"""A stored event as a line of JSON Lines (a CloudEvent) or CSV (the columns `import` reads)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

import msgspec

from allotment.metering.models import Event
from allotment.types import from_micros

CSV_HEADER = ("id", "source", "type", "subject", "time", "data")

_text = msgspec.json.encode


def event_time(us: int) -> str:
    """RFC 3339 in UTC, with microseconds only when the event has them."""
    return from_micros(us).isoformat().replace("+00:00", "Z")


def jsonl_line(event: Event) -> str:
    # The stored data is JSON text already: written as it is, every digit of a number stays.
    data = f',"data":{event.data}' if event.data else ""
    return (f'{{"specversion":"1.0","id":{_text(event.event_id).decode()},'
            f'"source":{_text(event.source).decode()},"type":{_text(event.type).decode()},'
            f'"subject":{_text(event.subject).decode()},"time":"{event_time(event.time_us)}"{data}}}\n')


def csv_writer() -> tuple[str, Callable[[Event], str]]:
    """The header line, and a function writing one event as a CSV line (data as a JSON cell)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")

    def line(row: tuple[str, ...]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(row)
        return buffer.getvalue()

    def of(event: Event) -> str:
        return line((event.event_id, event.source, event.type, event.subject, event_time(event.time_us),
                     event.data or ""))

    return line(CSV_HEADER), of
