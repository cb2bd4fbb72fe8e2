"""Lago-compatible API (`/lago/api/v1`), a thin adapter over the same services.

Lago's official clients work unchanged when pointed at `http://host/lago/`: the same paths,
bodies wrapped in their root key (`{"customer": {...}}`), status 200 for creates and deletes,
and Lago's error bodies. OpenMeter owns `/api/v1`; there, only what cannot be mistaken for
an OpenMeter request is Lago's: `POST /api/v1/events` with a body `{"event": {...}}` (see
openmeter_events) and `POST /api/v1/events/batch`, so a Lago client pointed at the root can
send usage. Keys and scopes are the native ones.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request, Response

from allotment.api import errors
from allotment.api.compat import (
    lago_customers,
    lago_events,
    lago_metrics,
    lago_plans,
    lago_subscriptions,
)
from allotment.api.compat.lago_http import PREFIX, lago_router, problem_for
from allotment.api.deps import Ingester

router = APIRouter(prefix=PREFIX, tags=["lago compatibility"])
for _module in (lago_events, lago_metrics, lago_plans, lago_customers, lago_subscriptions):
    router.include_router(_module.router)

ROOT_BATCH = "/api/v1/events/batch"
root = lago_router()


@root.post(ROOT_BATCH, summary="Send a batch of usage events (Lago client pointed at the root)")
async def create_events_at_root(request: Request, principal: Ingester) -> Response:
    return await lago_events.create_events(request, principal)


def install(app: FastAPI) -> None:
    """Mount the routes, with Lago's error bodies under /lago/ and on the root batch path.
    Call before the OpenMeter surface: its dialect covers the rest of /api/."""
    app.include_router(router)
    app.include_router(root)
    errors.add_dialect(app, "/lago/", problem_for)
    errors.add_dialect(app, ROOT_BATCH, problem_for)
