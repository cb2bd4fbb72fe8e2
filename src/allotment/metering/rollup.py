"""Pure folding of accepted events into rollup rows (one per meter, width, subject, group, bucket)."""

from __future__ import annotations

from dataclasses import dataclass, field

from allotment.metering.aggregation import Cell, Contribution
from allotment.metering.queries import DistinctRow, RollupRow
from allotment.metering.windows import BUCKET_WIDTHS_US

CellKey = tuple[str, int, str, str, int]  # meter_id, width (s), subject, group_key, bucket (s)


@dataclass
class Fold:
    cells: dict[CellKey, Cell] = field(default_factory=dict)
    distinct: set[DistinctRow] = field(default_factory=set)

    def add(self, meter_id: str, subject: str, time_us: int, contribution: Contribution) -> None:
        for width_us in BUCKET_WIDTHS_US:
            width = width_us // 1_000_000
            bucket = time_us // width_us * width
            key = (meter_id, width, subject, contribution.group_key, bucket)
            if contribution.token is not None:
                self.distinct.add((*key, contribution.token))
            cell = self.cells.get(key)
            if cell is None:
                cell = self.cells[key] = Cell()
            cell.add(contribution.micros, time_us)

    def rollup_rows(self) -> list[RollupRow]:
        return [
            (*key, c.n, c.total, c.lo, c.hi, c.last_value, c.last_us)  # type: ignore[misc]
            for key, c in self.cells.items()
        ]
