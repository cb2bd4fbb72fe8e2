"""Prometheus metrics. With several worker processes the multiprocess collector is used
(PROMETHEUS_MULTIPROC_DIR, set by `allotment serve`), so any worker answers for all."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

EVENTS_ACCEPTED = Counter("allotment_events_accepted_total", "Events stored and counted")
EVENTS_DUPLICATE = Counter("allotment_events_duplicate_total", "Events already stored, not counted again")
EVENTS_REJECTED = Counter("allotment_events_rejected_total", "Events refused with a reason")
INGEST_SECONDS = Histogram(
    "allotment_ingest_seconds",
    "Time to validate, store and roll up one ingest request",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
