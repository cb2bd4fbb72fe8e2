"""The application factory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from allotment import __version__
from allotment.api import errors
from allotment.api.compat import openmeter
from allotment.api.routers import (
    audit_log,
    check,
    customer_entitlements,
    customers,
    entitlements_admin,
    events,
    features,
    health,
    keys,
    meters,
    plans,
    reservations,
    seats,
    subscriptions,
)
from allotment.config import Settings
from allotment.db import Database
from allotment.logging import configure_logging
from allotment.worker.folder import run_folder


def create_app(settings: Settings | None = None, db: Database | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    configure_logging(json=settings.log_json)
    database = db or Database(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        folder = asyncio.create_task(run_folder(database))
        try:
            yield
        finally:
            folder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await folder
            if db is None:  # the app owns the database it opened
                await database.dispose()

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
    for module in (health, events, meters, customers, keys, features, plans, subscriptions,
                   entitlements_admin, customer_entitlements, audit_log, check, seats,
                   reservations):
        app.include_router(module.router)
    openmeter.install(app)
    return app
