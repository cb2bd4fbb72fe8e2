"""Background work that runs inside `allotment serve` (and, later, `allotment worker`)."""
