"""Liveness, readiness and metrics (no authentication)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from allotment.api import metrics
from allotment.api.deps import database
from allotment.api.responses import Json
from allotment.migrate import current_revision_of, head_revision

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> Json:
    """Ready when the database answers and its schema is at the newest migration."""
    db = database(request)
    try:
        async with db.read_engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            current = await conn.run_sync(current_revision_of)
    except (OSError, SQLAlchemyError) as exc:
        return Json({"status": "unavailable", "database": str(exc)[:200]}, status_code=503)
    head = head_revision()
    if current != head:
        return Json(
            {"status": "migrations_pending", "current": current, "head": head}, status_code=503
        )
    return Json({"status": "ready", "migration": current})


@router.get("/metrics", include_in_schema=False)
async def prometheus() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
