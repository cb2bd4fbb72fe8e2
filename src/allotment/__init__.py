"""Allotment: open usage metering and real-time entitlement enforcement."""

import decimal

__version__ = "0.1.0"

# Quantities and limits hold up to 38 digits (NUMERIC(38, 6)); Python's default decimal
# context keeps 28 and would round their sums and differences silently. Every thread and task
# of a process that uses Allotment computes with enough digits to stay exact.
_DIGITS = 60
decimal.DefaultContext.prec = _DIGITS
decimal.getcontext().prec = _DIGITS
