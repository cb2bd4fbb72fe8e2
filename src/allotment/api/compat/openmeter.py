"""OpenMeter-compatible API (`/api/v1`, `/api/v2`), a thin adapter over the same services.

Existing OpenMeter clients (the official SDKs included) work unchanged: same paths, status
codes (ingest 204, creates 201, subject upsert 200, deletes 204), camelCase bodies, bare JSON
arrays where OpenMeter answers with them, and problem+json errors with an `instance`. Keys and
scopes are the native ones.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from allotment.api import errors
from allotment.api.compat import (
    openmeter_admin,
    openmeter_customers,
    openmeter_entitlements,
    openmeter_events,
    openmeter_events_v2,
    openmeter_features,
    openmeter_grants,
    openmeter_history,
    openmeter_meters,
    openmeter_notifications,
    openmeter_subject_entitlements,
)
from allotment.api.compat.openmeter_http import problem_for

PREFIX = "/api"
router = APIRouter(prefix=PREFIX, tags=["openmeter compatibility"])
# Subject entitlements come before the customers module: its `/v1/subjects/{key:path}` would
# otherwise take `/v1/subjects/{key}/entitlements...` for a subject key.
for _module in (
    openmeter_events,
    openmeter_events_v2,
    openmeter_meters,
    openmeter_subject_entitlements,
    openmeter_customers,
    openmeter_features,
    openmeter_entitlements,
    openmeter_grants,
    openmeter_history,
    openmeter_admin,
    openmeter_notifications,
):
    router.include_router(_module.router)


def install(app: FastAPI) -> None:
    """Mount the routes, and render every error under /api/ the way OpenMeter clients expect."""
    app.include_router(router)
    errors.add_dialect(app, PREFIX + "/", problem_for)
