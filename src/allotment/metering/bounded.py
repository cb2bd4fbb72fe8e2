"""Bounded key texts: any group value or UNIQUE_COUNT value fits the rollup keys.

`rollups.group_key` holds the JSON of all of a cell's group values (VARCHAR(1024)) and
`rollup_distinct.value` one distinct value (VARCHAR(512)); PostgreSQL enforces both lengths,
and a btree entry may not pass about 2,704 bytes. Event data has no length limit, so a text
past its budget (in UTF-8 bytes) is kept as its bounded form: the longest prefix that fits,
cut between characters, then `…` and 32 hex digits (128 bits) of the SHA-256 of the whole
text. The form is a function of the text alone, so ingest, backfill and filters agree; the
digest keeps distinct texts apart (UNIQUE_COUNT stays exact); a form fits its own budget, so
mapping it again leaves it as it is (a filter may name a value as a query showed it).

Budgets, with a subject of at most 256 characters (1,024 bytes) and ids of 40: the primary
key of `rollup_distinct` stays under about 2,300 bytes, the column lengths are never reached.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from allotment import codec

GROUP_KEY_BYTES = 768  # the JSON of all group values of a cell
DISTINCT_BYTES = 384  # one UNIQUE_COUNT value
# A meter's groups are limited (schemas.py) so that each value has at least this much.
MIN_GROUP_VALUE_BYTES = 64
MAX_GROUPS = 8
MAX_GROUP_NAMES_CHARS = 160  # all group names of a meter together

MARK = "…"
_DIGEST_HEX = 32
_TAIL = len(MARK.encode()) + _DIGEST_HEX  # neither is escaped in JSON


def json_size(text: str) -> int:
    """UTF-8 bytes of a text as a JSON string, quotes included (as group keys encode it)."""
    return len(codec.dumps(text).encode())


def utf8_size(text: str) -> int:
    return len(text.encode())


def bounded(text: str, budget: int, size: Callable[[str], int]) -> str:
    """`text` when `size(text) <= budget`, else its bounded form, whose size is at most `budget`.

    `size` must not shrink as a text grows, and mark and digest must add exactly `_TAIL` to it."""
    if size(text) <= budget:
        return text
    room = budget - _TAIL
    digest = hashlib.sha256(text.encode()).hexdigest()[:_DIGEST_HEX]
    lo, hi = 0, min(len(text), room)  # every character takes at least one byte
    while lo < hi:  # the longest prefix within `room`
        mid = (lo + hi + 1) // 2
        if size(text[:mid]) <= room:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + MARK + digest


def group_value_budget(names: Sequence[str]) -> int:
    """Bytes each group value's JSON may take, so that the JSON of all of a meter's values
    (under these names, null for missing ones) stays within GROUP_KEY_BYTES."""
    if not names:
        return GROUP_KEY_BYTES
    # Braces, names, colons and commas: the key with every value null, less the nulls.
    skeleton = len(codec.dumps(dict.fromkeys(names)).encode()) - len("null") * len(names)
    return max((GROUP_KEY_BYTES - skeleton) // len(names), MIN_GROUP_VALUE_BYTES)


def group_value_form(text: str, budget: int) -> str:
    """What a group value's text is stored as, in a meter whose values have `budget` bytes."""
    if len(text) * 6 + 2 <= budget:  # 6: the longest escape of one character (`\\u001f`)
        return text
    return bounded(text, budget, json_size)


def distinct_form(token: str) -> str:
    """What a UNIQUE_COUNT value is stored as."""
    if len(token) * 4 <= DISTINCT_BYTES:  # 4: the longest UTF-8 character
        return token
    return bounded(token, DISTINCT_BYTES, utf8_size)
