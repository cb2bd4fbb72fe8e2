"""Pure folding of accepted events into rollup cells, and the journal that defers it.

Ingest folds a batch into minute cells only and appends them to the journal as one row; the
folder later merges many journal rows into minute, hour and day cells. Merging many batches at
once is what makes rollups cheap: cells of a busy subject are written once per fold, not once
per event.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from allotment.metering.aggregation import Cell, Contribution
from allotment.metering.queries import DistinctRow, RollupRow
from allotment.metering.windows import BUCKET_WIDTHS_US

MINUTE = 60
ALL_WIDTHS = tuple(w // 1_000_000 for w in BUCKET_WIDTHS_US)  # seconds: day, hour, minute
CellKey = tuple[str, int, str, str, int]  # meter_id, width (s), subject, group_key, bucket (s)
# A journal cell: meter_id, subject, group_key, minute bucket (s), n, total, lo, hi, last_value, last_us
JournalCell = tuple[str, str, str, int, int, int, int | None, int | None, int | None, int | None]
JournalToken = tuple[str, str, str, int, str]  # meter_id, subject, group_key, minute bucket, token


@dataclass
class Fold:
    widths: tuple[int, ...] = (MINUTE,)
    cells: dict[CellKey, Cell] = field(default_factory=dict)
    distinct: set[DistinctRow] = field(default_factory=set)

    def add(self, meter_id: str, subject: str, time_us: int, contribution: Contribution) -> None:
        group_key, micros, token = contribution
        minute = time_us // 60_000_000 * MINUTE
        cells = self.cells
        for width in self.widths:
            key = (meter_id, width, subject, group_key, minute // width * width)
            cell = cells.get(key)
            if cell is None:  # most cells of a batch meet one event: made whole, not added to
                cells[key] = Cell.first(micros, time_us)
            else:
                cell.add(micros, time_us)
        if token is not None:
            self.add_token(meter_id, subject, group_key, minute, token)

    def merge(self, other: Fold) -> None:
        """Add another fold of the same widths into this one; `other` is left as it was."""
        for key, cell in other.cells.items():
            mine = self.cells.get(key)
            if mine is None:
                self.cells[key] = mine = Cell()
            mine.merge(cell)
        self.distinct |= other.distinct

    def add_token(self, meter_id: str, subject: str, group_key: str, minute: int, token: str) -> None:
        for width in self.widths:
            self.distinct.add((meter_id, width, subject, group_key, minute // width * width, token))

    def rollup_rows(self) -> list[RollupRow]:
        return [
            (*key, c.n, c.total, c.lo, c.hi, c.last_value, c.last_us)  # type: ignore[misc]
            for key, c in self.cells.items()
        ]

    def journal_payload(self) -> bytes:
        """The minute cells of this fold, for the journal."""
        assert self.widths == (MINUTE,)
        cells = [
            (m, s, g, b, c.n, c.total, c.lo, c.hi, c.last_value, c.last_us)
            for (m, _, s, g, b), c in self.cells.items()
        ]
        tokens = [(m, s, g, b, t) for (m, _, s, g, b, t) in self.distinct]
        return _encoder.encode((cells, tokens))


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(tuple[list[JournalCell], list[JournalToken]])


def read_journal(payload: bytes) -> tuple[list[JournalCell], list[JournalToken]]:
    return _decoder.decode(payload)


def journal_without(payload: bytes, meter_id: str) -> bytes | None:
    """A journal row without the cells and distinct values of one meter: None when it holds
    none of them, empty bytes when nothing else is left."""
    cells, tokens = read_journal(payload)
    kept_cells = [c for c in cells if c[0] != meter_id]
    kept_tokens = [t for t in tokens if t[0] != meter_id]
    if len(kept_cells) == len(cells) and len(kept_tokens) == len(tokens):
        return None
    if not kept_cells and not kept_tokens:
        return b""
    return _encoder.encode((kept_cells, kept_tokens))


def fold_journal(payloads: Iterable[bytes], live_meters: set[str]) -> Fold:
    """Merge journal rows (oldest first) into cells at every width, skipping retired meters."""
    fold = Fold(widths=ALL_WIDTHS)
    cells = fold.cells
    for payload in payloads:
        journal_cells, tokens = read_journal(payload)
        # The hottest loop of folding: each journal cell's values go straight into the cell
        # of each width, with no Cell built for the journal cell itself.
        for meter_id, subject, group_key, minute, n, total, lo, hi, last_value, last_us in journal_cells:
            if meter_id not in live_meters:
                continue
            for width in ALL_WIDTHS:
                key = (meter_id, width, subject, group_key, minute // width * width)
                mine = cells.get(key)
                if mine is None:
                    cells[key] = Cell(n, total, lo, hi, last_value, last_us)
                else:
                    mine.absorb(n, total, lo, hi, last_value, last_us)
        for meter_id, subject, group_key, minute, token in tokens:
            if meter_id in live_meters:
                fold.add_token(meter_id, subject, group_key, minute, token)
    return fold
