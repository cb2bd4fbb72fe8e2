"""Features (`/v1/features`)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from allotment.api.deps import (
    Admin,
    Cursor,
    Limit,
    Reader,
    ReadSession,
    WriteSession,
    decode_cursor,
    page,
)
from allotment.api.idempotency import Idempotent
from allotment.api.pages import Page
from allotment.entitlements import features as service
from allotment.entitlements.schemas import FeatureCreate, FeatureRead, FeatureUpdate
from allotment.types import utcnow

router = APIRouter(prefix="/v1/features", tags=["features"])
_LIST = "/v1/features"


def feature_read(view: service.FeatureView) -> FeatureRead:
    f = view.feature
    return FeatureRead(
        id=f.id, key=f.key, name=f.name, unit=f.unit, meter=view.meter_key,
        meter_group_filter=f.meter_group_filter, metadata=f.metadata_, created_at=f.created_at,
        updated_at=f.updated_at, archived_at=f.archived_at,
    )


@router.post("", status_code=201, response_model=FeatureRead)
async def create_feature(data: FeatureCreate, principal: Admin, session: WriteSession, idem: Idempotent) -> Response:
    """Create a feature, linked to a meter (by key) when it is metered."""
    view = await service.create(
        session, principal.tenant_id, data, actor=principal.key_id, at=utcnow()
    )
    return await idem.respond(201, feature_read(view))


@router.get("", response_model=Page[FeatureRead])
async def list_features(
    principal: Reader, session: ReadSession, limit: Limit = 50, cursor: Cursor = None
) -> dict[str, object]:
    rows = await service.list_(session, principal.tenant_id, after=decode_cursor(cursor, of=_LIST), limit=limit)
    return page([feature_read(v) for v in rows], rows, limit=limit, position=lambda r: r.feature.id, of=_LIST)


@router.get("/{feature_key}", response_model=FeatureRead)
async def get_feature(feature_key: str, principal: Reader, session: ReadSession) -> FeatureRead:
    feature = await service.get(session, principal.tenant_id, feature_key)
    return feature_read(await service.view(session, principal.tenant_id, feature))


@router.patch("/{feature_key}", response_model=FeatureRead)
async def update_feature(
    feature_key: str, data: FeatureUpdate, principal: Admin, session: WriteSession
) -> FeatureRead:
    view = await service.update(
        session, principal.tenant_id, feature_key, data, actor=principal.key_id, at=utcnow()
    )
    return feature_read(view)


@router.delete("/{feature_key}", status_code=204)
async def archive_feature(feature_key: str, principal: Admin, session: WriteSession) -> Response:
    """Archive: plans and customers that have the feature keep it; new plans cannot add it."""
    await service.archive(session, principal.tenant_id, feature_key, actor=principal.key_id, at=utcnow())
    return Response(status_code=204)
