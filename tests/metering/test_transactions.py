"""Statements on the driver connection run inside the unit of work, on both backends."""

from __future__ import annotations

from allotment.metering import queries


async def test_raw_writes_roll_back_with_the_transaction(db, backend):
    """A failed unit of work leaves nothing behind, even for statements sent on the driver."""
    try:
        async with db.transaction() as session:
            await queries.append_journal(session, "ten_x", b"\x90")
            raise RuntimeError("abort")
    except RuntimeError:
        pass
    async with db.transaction(readonly=True) as session:
        assert await queries.pending_journal(session, "ten_x") == []


async def test_claimed_journal_rows_are_locked_until_commit(db, backend):
    """A claimed row is invisible to a second claimer until the first commits (no double fold)."""
    async with db.transaction() as session:
        await queries.append_journal(session, "ten_x", b"\x90")
    if backend == "sqlite":
        return  # one writer at a time: the second claimer waits for the lock instead
    async with db.transaction() as first:
        assert len(await queries.claim_journal(first, 10)) == 1
        async with db.transaction() as second:
            assert await queries.claim_journal(second, 10) == []
