"""Rows packed into one text come back from PostgreSQL as the same typed values."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allotment.packed import pack, rows_of
from tests.conftest import _admin_dsn

COLUMNS = ["name text", "n int8", "flag bool", "at timestamptz null", "note text null"]
SQL = "SELECT k.name, k.n, k.flag, k.at, k.note, k.i FROM " + rows_of("$1", COLUMNS) + " ORDER BY k.i"

# Any character PostgreSQL text can hold, but the two separators (and NUL, which it cannot).
texts = st.text(st.characters(blacklist_characters="\x00\x1e\x1f", blacklist_categories=("Cs",)), min_size=1)
times = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1),
                     timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]))
rows = st.lists(st.tuples(texts, st.integers(-(2**63), 2**63 - 1), st.booleans(), st.none() | times,
                          st.none() | texts), min_size=1, max_size=20)


@pytest.fixture
async def conn(postgres_database: str) -> AsyncIterator[Any]:
    connection = await asyncpg.connect(_admin_dsn(postgres_database))
    yield connection
    await connection.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows)
async def test_rows_come_back_as_sent(conn: Any, rows: list[tuple[Any, ...]]) -> None:
    """Every value, its type and its order survive: quotes, commas, backslashes, newlines,
    any script, 64-bit extremes, times in any offset (compared as instants), NULLs."""
    packed = pack(rows)
    assert packed is not None
    got = [tuple(r) for r in await conn.fetch(SQL, packed)]
    assert got == [(*row, i) for i, row in enumerate(rows, 1)]


def test_a_value_holding_a_separator_is_not_packed() -> None:
    """The caller is told to send the rows another way rather than have them split wrongly."""
    assert pack([("a\x1fb", 1, True, None, None)]) is None
    assert pack([("a", 1, True, None, "x\x1ey")]) is None
    assert pack([("a", 1, True, None, None)]) == "a\x1f1\x1ft\x1f\x1f"


async def test_rows_that_could_not_be_packed_unpack_to_nothing(conn: Any) -> None:
    """`pack`'s None, sent as the parameter, is no rows: a read finds nothing, never a wrong row."""
    assert await conn.fetch(SQL, pack([("a\x1fb", 1, True, None, None)])) == []
