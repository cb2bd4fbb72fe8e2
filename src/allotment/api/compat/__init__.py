"""Compatibility surfaces: existing clients of other metering products work unchanged."""
