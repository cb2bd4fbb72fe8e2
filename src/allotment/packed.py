"""Many rows sent to PostgreSQL as one text parameter, split back into typed columns there.

The hot statements take many rows at once. Sent as one array per column, asyncpg encodes
every element on its own, at about a microsecond each (two for a timestamp): for a batch of
500 events that was more client CPU than the rest of the insert. One text, with the fields
of a row joined by U+001F and the rows by U+001E, costs one string join in Python and a
`split_part` per field in the server, about a sixth of the client's work and less of the
server's (docs/storage.md).

The two separators are control characters, which no value sent this way holds: CloudEvents
forbids them in event attributes (the ingest decoder refuses them) and keys and ids cannot hold
them. Should one ever come, `pack` answers None rather than split it wrongly; as a parameter,
None is NULL, which unpacks to no rows at all (a read then finds nothing: the full way).

So statements whose rows are many and hold only keys, ids, numbers and times take them packed;
rows of values from event data (group-by values, distinct values), which may hold anything,
and statements of a few rows keep one array per column.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

FIELD, ROW = "\x1f", "\x1e"
Value = str | int | bool | datetime | None


def pack(rows: Sequence[Sequence[Value]]) -> str | None:
    """The rows as one text, or None when a value holds a separator.

    None travels as an empty field: a column declared `null` in `rows_of` turns it back into
    NULL, so only columns whose values are never the empty string may be declared so."""
    if not rows:
        return ""
    width = len(rows[0])
    text = ROW.join(FIELD.join(_text(value) for value in row) for row in rows)
    if text.count(FIELD) != len(rows) * (width - 1) or text.count(ROW) != len(rows) - 1:
        return None
    return text


def _text(value: Value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def rows_of(param: str, columns: Iterable[str], *, alias: str = "k") -> str:
    """A FROM item: the packed rows of `param` as `alias(columns..., i)`, i counting from 1.

    Each column is `name type`, or `name type null` when an empty field means NULL."""
    fields = []
    for n, column in enumerate(columns, 1):
        name, type_, *null = column.split()
        value = f"split_part(p.r, chr(31), {n})"
        if null:
            value = f"NULLIF({value}, '')"
        fields.append(f"{value}::{type_} AS {name}")
    return (f"(SELECT {', '.join(fields)}, p.i FROM unnest(string_to_array({param}::text, chr(30)))"
            f" WITH ORDINALITY AS p(r, i)) AS {alias}")
