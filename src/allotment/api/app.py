"""The application factory."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl

from fastapi import Depends, FastAPI, Request
from fastapi_offline import FastAPIOffline
from starlette.types import Receive, Scope, Send

from allotment import __version__
from allotment.api import access_log, body, errors, openapi
from allotment.api.compat import lago, openmeter
from allotment.api.deps import known_query
from allotment.api.routers import (
    audit_log,
    check,
    customer_entitlements,
    customers,
    entitlements_admin,
    events,
    features,
    grants,
    health,
    keys,
    meters,
    notification_rules,
    overdraft,
    plans,
    reservations,
    seats,
    subscriptions,
    upsell,
    webhooks,
)
from allotment.api.routers import notifications as notifications_router
from allotment.config import Settings
from allotment.db import Database
from allotment.errors import AllotmentError, FieldError, MalformedRequest
from allotment.logging import configure_logging
from allotment.worker.delivery import DeliveryOptions, run_delivery
from allotment.worker.folder import run_folder
from allotment.worker.stopping import stop_loops

# Requests allocate many short-lived containers (a 500-event batch: thousands), nearly all
# freed by reference counting alone. Python's default first threshold (700) ran the cycle
# collector several times per batch: a fifth of the ingest's CPU. Every 20,000 allocations
# costs almost no time, and each run stays short (a few ms): at 100,000 a run took 40 ms on
# ingest and over 100 ms after admin traffic, a stall for every request in flight.
GC_THRESHOLDS = (20_000, 20, 100)


def create_app(settings: Settings | None = None, db: Database | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    configure_logging(json=settings.log_json)
    database = db or Database(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        loops = [asyncio.create_task(run_folder(database, stop))]
        options = DeliveryOptions.from_settings(settings)
        if settings.delivery_enabled:
            loops.append(asyncio.create_task(run_delivery(database, options, stop)))
        # What start-up built lives as long as the process: keeping it out of the collector's
        # full passes keeps those passes (which pause every request) short.
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        try:
            yield
        finally:
            # A round in flight ends with its transaction; a send is bounded by its timeout.
            await stop_loops(stop, loops, grace=options.timeout + 5)
            if db is None:  # the app owns the database it opened
                await database.dispose()
            access_log.flush()

    # The interactive docs are served from assets installed with the package: no CDN.
    app = FastAPIOffline(
        title="Allotment",
        version=__version__,
        summary="Usage metering and real-time entitlement enforcement",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = database
    errors.install(app)
    # Routes are matched in order: the hot paths (check, ingest) come first.
    for module in (check, events, health, meters, customers, keys, features, plans, subscriptions,
                   entitlements_admin, customer_entitlements, audit_log, seats,
                   reservations, grants, webhooks, notifications_router, notification_rules, upsell, overdraft):
        app.include_router(module.router, dependencies=[Depends(known_query)])
    lago.install(app)  # first: its error dialect for /api/v1/events/batch precedes OpenMeter's /api/
    openmeter.install(app)
    openapi.install(app)
    app.__class__ = _App  # FastAPIOffline builds a FastAPI; this adds only the entry below
    return app


class _App(FastAPI):
    """The application, with the check answered straight from its ASGI entry.

    Vendors call the check before every request they serve. FastAPI's middleware, routing
    and dependency layers cost more than the check itself, so `POST /v1/check` skips them
    (check.serve renders errors as the app's handlers do). Its router entry is what
    documents it in the OpenAPI schema.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings = self.state.settings
        if scope["type"] != "http":
            await self._answer(scope, receive, send)
        elif scope["path"] == "/v1/check" and scope["method"] == "POST":
            scope["app"] = self  # the check writes its own log line: it knows what it answered
            await check.serve(self.state, scope, receive, send)
        elif settings.access_log:
            await access_log.logged(self._answer, scope, receive, send, json=settings.log_json)
        else:
            await self._answer(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            bad = _nul_in_address(scope)
            if bad is None and scope["method"] in _WITH_BODY and scope["path"] not in body.SELF_DECODED:
                receive, bad = await body.screened(scope, receive, self.state.settings.max_body_bytes)
            if bad is not None:
                scope["app"] = self
                await errors.answer(Request(scope, receive), bad)(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


def _nul_in_address(scope: Scope) -> AllotmentError | None:
    """No key, name or filter may hold NUL (PostgreSQL text cannot): the same answer on both
    backends, naming the parameter, before anything looks the value up."""
    where = "path" if "\x00" in scope["path"] else None
    if where is None and b"%00" in scope["query_string"]:
        pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        where = next((name for name, value in pairs if "\x00" in name + value), "query")
    if where is None:
        return None
    return MalformedRequest(f"{where}: holds the NUL character (%00)",
                            errors=[FieldError(where, "must not hold the NUL character (%00)")])
