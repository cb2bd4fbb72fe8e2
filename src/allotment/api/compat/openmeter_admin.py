"""OpenMeter's tenant-wide entitlement and grant routes: lists across customers, an entitlement
by id, and voiding a grant (`DELETE /api/v1/grants/{id}`).

Thin adapters over `entitlements.listing` and `grants.void`. How OpenMeter pages them:
`page`/`pageSize` (when either is sent) answer a page object `{items, page, pageSize,
totalCount}`; otherwise `offset`/`limit` (default 0 and 100) answer a bare array on v1 and the
same page object on v2. Filters naming no known customer, subject or feature match nothing.
Ended entitlements (OpenMeter's deleted ones) are left out; `excludeInactive` also leaves out
those that start later. Grants are shown on the customer's metered entitlement to their feature.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.api.compat.openmeter_http import (
    Limit,
    Offset,
    OptionalPage,
    OptionalPageSize,
    Window,
    openmeter_router,
    utc,
)
from allotment.api.compat.openmeter_schemas import entitlement_out, entitlement_v1_out, grant_out
from allotment.api.deps import Admin, Reader, ReadSession, WriteSession
from allotment.api.responses import Json
from allotment.customers import service as customers
from allotment.entitlements import features, grants, listing
from allotment.entitlements.engine import Kind
from allotment.entitlements.models import CustomerEntitlement
from allotment.errors import Conflict, NotFound, ValidationFailed
from allotment.types import Instant, utcnow

router = openmeter_router()

Refs = Annotated[list[str] | None, Query()]
Order = Literal["ASC", "DESC"]
EntitlementType = Literal["metered", "boolean", "static"]
Types = Annotated[list[EntitlementType] | None, Query(alias="entitlementType")]
ExcludeInactive = Annotated[bool, Query(alias="excludeInactive")]
IncludeDeleted = Annotated[bool, Query(alias="includeDeleted")]
EntitlementOrderBy = Annotated[Literal["createdAt", "updatedAt"], Query(alias="orderBy")]
GrantOrderBy = Annotated[Literal["id", "createdAt", "updatedAt"], Query(alias="orderBy")]

_KINDS = {"metered": (Kind.METERED, Kind.SEATS), "boolean": (Kind.BOOLEAN,), "static": (Kind.STATIC,)}
_ORDER_BY: dict[str, Any] = {"id": "id", "createdAt": "created_at", "updatedAt": "updated_at"}
_VOID_LEEWAY = timedelta(minutes=1)  # a client's clock a little off "now"
_VOID_REASON = "voided through the OpenMeter API"


# --- entitlements ------------------------------------------------------------------------------


@router.get("/v1/entitlements")
async def list_entitlements_v1(
    principal: Reader,
    session: ReadSession,
    feature: Refs = None,
    subject: Refs = None,
    entitlement_type: Types = None,
    exclude_inactive: ExcludeInactive = False,
    page: OptionalPage = None,
    page_size: OptionalPageSize = None,
    offset: Offset = None,
    limit: Limit = None,
    order: Order = "ASC",
    order_by: EntitlementOrderBy = "createdAt",
) -> Json:
    """Every customer's entitlements, each held by a subject (OpenMeter's v1 shape)."""
    tenant_id, window = principal.tenant_id, Window(page, page_size, offset, limit, paged=False)
    customer_ids = None if subject is None else await _owners(session, tenant_id, subject)
    found = await _entitlements(
        session, tenant_id, window, customer_ids, feature, entitlement_type, exclude_inactive,
        order, order_by,
    )  # fmt: skip
    return window.answer(await _render(session, tenant_id, found.items, v1=True), found.total)


@router.get("/v2/entitlements")
async def list_entitlements_v2(
    principal: Reader,
    session: ReadSession,
    feature: Refs = None,
    customer_keys: Annotated[list[str] | None, Query(alias="customerKeys")] = None,
    customer_ids: Annotated[list[str] | None, Query(alias="customerIds")] = None,
    entitlement_type: Types = None,
    exclude_inactive: ExcludeInactive = False,
    page: OptionalPage = None,
    page_size: OptionalPageSize = None,
    offset: Offset = None,
    limit: Limit = None,
    order: Order = "ASC",
    order_by: EntitlementOrderBy = "createdAt",
) -> Json:
    """Every customer's entitlements; `customerKeys` and `customerIds` together match either."""
    tenant_id, window = principal.tenant_id, Window(page, page_size, offset, limit, paged=True)
    named = None
    if customer_keys is not None or customer_ids is not None:
        named = await _customers(session, tenant_id, [*(customer_keys or ()), *(customer_ids or ())])
    found = await _entitlements(
        session, tenant_id, window, named, feature, entitlement_type, exclude_inactive,
        order, order_by,
    )  # fmt: skip
    return window.answer(await _render(session, tenant_id, found.items, v1=False), found.total)


@router.get("/v1/entitlements/{entitlement_id}")
async def get_entitlement_v1(entitlement_id: str, principal: Reader, session: ReadSession) -> Json:
    row = await listing.entitlement(session, principal.tenant_id, entitlement_id)
    return Json((await _render(session, principal.tenant_id, [row], v1=True))[0])


@router.get("/v2/entitlements/{entitlement_id}")
async def get_entitlement_v2(entitlement_id: str, principal: Reader, session: ReadSession) -> Json:
    """An entitlement by id, ended ones too (with `deletedAt`)."""
    row = await listing.entitlement(session, principal.tenant_id, entitlement_id)
    return Json((await _render(session, principal.tenant_id, [row], v1=False))[0])


async def _entitlements(
    session: AsyncSession,
    tenant_id: str,
    window: Window,
    customer_ids: set[str] | None,
    feature_refs: list[str] | None,
    types: list[EntitlementType] | None,
    exclude_inactive: bool,
    order: Order,
    order_by: str,
) -> listing.Page[CustomerEntitlement]:
    return await listing.entitlements(
        session, tenant_id, at=utcnow(), customer_ids=customer_ids,
        feature_ids=await _features(session, tenant_id, feature_refs),
        kinds=None if types is None else {k for t in types for k in _KINDS[t]},
        scheduled=not exclude_inactive, order_by=_ORDER_BY[order_by], descending=order == "DESC",
        offset=window.offset, limit=window.size,
    )  # fmt: skip


async def _render(
    session: AsyncSession, tenant_id: str, rows: Sequence[CustomerEntitlement], *, v1: bool
) -> list[dict[str, Any]]:
    at = utcnow()
    views = await customers.views_of(session, tenant_id, {r.customer_id for r in rows})
    keys = await features.keys_of(session, tenant_id, {r.feature_id for r in rows})
    if v1:
        return [entitlement_v1_out(r, views[r.customer_id], keys[r.feature_id], at=at) for r in rows]
    return [entitlement_out(r, views[r.customer_id].customer, keys[r.feature_id], at=at) for r in rows]


# --- grants ------------------------------------------------------------------------------------


@router.get("/v1/grants")
async def list_grants_v1(
    principal: Reader,
    session: ReadSession,
    feature: Refs = None,
    subject: Refs = None,
    include_deleted: IncludeDeleted = False,
    page: OptionalPage = None,
    page_size: OptionalPageSize = None,
    offset: Offset = None,
    limit: Limit = None,
    order: Order = "ASC",
    order_by: GrantOrderBy = "id",
) -> Json:
    """Every customer's grants, voided ones too (with `voidedAt`), as OpenMeter lists them."""
    tenant_id, window = principal.tenant_id, Window(page, page_size, offset, limit, paged=False)
    customer_ids = None if subject is None else await _owners(session, tenant_id, subject)
    return await _grants(
        session, tenant_id, window, customer_ids, feature, order, order_by
    )


@router.get("/v2/grants")
async def list_grants_v2(
    principal: Reader,
    session: ReadSession,
    feature: Refs = None,
    customer: Refs = None,
    include_deleted: IncludeDeleted = False,
    page: OptionalPage = None,
    page_size: OptionalPageSize = None,
    offset: Offset = None,
    limit: Limit = None,
    order: Order = "ASC",
    order_by: GrantOrderBy = "id",
) -> Json:
    """Every customer's grants (`customer` by id or key), voided ones too (with `voidedAt`)."""
    tenant_id, window = principal.tenant_id, Window(page, page_size, offset, limit, paged=True)
    customer_ids = None if customer is None else await _customers(session, tenant_id, customer)
    return await _grants(
        session, tenant_id, window, customer_ids, feature, order, order_by
    )


async def _grants(
    session: AsyncSession,
    tenant_id: str,
    window: Window,
    customer_ids: set[str] | None,
    feature_refs: list[str] | None,
    order: Order,
    order_by: str,
) -> Json:
    """OpenMeter lists voided grants with the others (`includeDeleted` is about deleted ones,
    which a grant here never is: it belongs to the customer and feature, not to an entitlement
    that a delete could take it away with)."""
    at = utcnow()
    found = await listing.grants(
        session, tenant_id, customer_ids=customer_ids,
        feature_ids=await _features(session, tenant_id, feature_refs), voided=True,
        order_by=_ORDER_BY[order_by], descending=order == "DESC", offset=window.offset,
        limit=window.size,
    )  # fmt: skip
    held_by = await listing.entitlements_of_grants(session, tenant_id, found.items, at=at)
    return window.answer([grant_out(g, held_by.get(g.id, ""), at) for g in found.items], found.total)


@router.delete("/v1/grants/{grant_id}", status_code=204)
async def void_grant(
    grant_id: str, principal: Admin, session: WriteSession, at: Instant | None = None
) -> Response:
    """Voids the grant now: from then on it holds nothing; what it paid for stays paid. A
    grant already voided is a 400, as in OpenMeter."""
    now, asked = utcnow(), utc(at)
    if asked is not None and asked > now + _VOID_LEEWAY:
        raise ValidationFailed.on("at", "must not be in the future")
    if asked is not None and asked < now - _VOID_LEEWAY:
        raise ValidationFailed.on("at", "a past instant is not supported: a grant is voided when asked")
    try:
        await grants.void(
            session, principal.tenant_id, grant_id, reason=_VOID_REASON, at=now, actor=principal.key_id
        )
    except Conflict as err:
        if err.code != "grant_voided":
            raise
        raise ValidationFailed.on("grantId", f"grant already voided: {err}") from None
    return Response(status_code=204)


# --- filters -----------------------------------------------------------------------------------


async def _features(session: AsyncSession, tenant_id: str, refs: list[str] | None) -> set[str] | None:
    """Feature ids named by key or id; unknown ones name nothing."""
    if refs is None:
        return None
    out = set()
    for ref in dict.fromkeys(refs):
        try:
            out.add((await features.get(session, tenant_id, ref, archived=True)).id)
        except NotFound:
            continue
    return out


async def _customers(session: AsyncSession, tenant_id: str, refs: list[str]) -> set[str]:
    """Customer ids named by key or id; unknown (or deleted) ones name nothing."""
    out = set()
    for ref in dict.fromkeys(refs):
        try:
            out.add((await customers.find(session, tenant_id, ref)).id)
        except NotFound:
            continue
    return out


async def _owners(session: AsyncSession, tenant_id: str, subjects: list[str]) -> set[str]:
    """The ids of the customers owning these subjects (v1 filters by subject)."""
    owners = await customers.owners_of_subjects(session, tenant_id, sorted(set(subjects)))
    return await _customers(session, tenant_id, sorted(set(owners.values())))
