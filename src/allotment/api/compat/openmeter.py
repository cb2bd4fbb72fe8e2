"""OpenMeter-compatible API (`/api/v1`), a thin adapter over the same services."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api", tags=["openmeter compatibility"])
