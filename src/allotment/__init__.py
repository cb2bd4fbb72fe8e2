"""Allotment: open usage metering and real-time entitlement enforcement."""

__version__ = "0.1.0"
