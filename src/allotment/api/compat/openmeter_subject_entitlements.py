"""OpenMeter's classic v1 entitlements of a subject (`/api/v1/subjects/{s}/entitlements...`).

A subject belongs to at most one customer, and stands here for that customer: each route reads
or changes the owner's entitlements through the code the v2 customer routes use, so a subject
client, a customer client and the native API always see the same entitlements and numbers.
What is v1's own:
- entitlements carry `subjectKey` (the subject of the path) instead of `customerId` and
  `customerKey`; lists are bare arrays.
- a grant's `maxRolloverAmount` defaults to 0, as OpenMeter's v1 does (v2: the grant's amount):
  a v1 grant left untouched keeps nothing across a reset.
- a subject that no customer owns is a 404 naming it, as OpenMeter answers when no customer
  has the subject. No customer is made for it implicitly: that would start attributing the
  subject's events to a customer nobody created. Add the subject to a customer
  (`usageAttribution.subjectKeys`) first. A subject may be named by its key, or by the id
  `/api/v1/subjects` gave it.

Subject keys may contain `/` (the SDK sends `%2F`, decoded before routing), so the subject is a
`:path` parameter. These routes are registered before `GET/DELETE /api/v1/subjects/{key}`
(whose `:path` would otherwise swallow `.../entitlements`).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import Query, Response

from allotment.api.compat import openmeter_entitlements, openmeter_grants, openmeter_history
from allotment.api.compat.openmeter_entitlements import Time
from allotment.api.compat.openmeter_http import openmeter_router
from allotment.api.compat.openmeter_lookup import resolve, resolve_live
from allotment.api.compat.openmeter_schemas import (
    EntitlementCreateIn,
    GrantCreateIn,
    ResetIn,
    entitlement_v1_out,
    grant_out,
    value_out,
)
from allotment.api.deps import Admin, Reader, ReadSession, WriteSession
from allotment.api.responses import Json
from allotment.customers import service as customers
from allotment.entitlements import features, provisioning
from allotment.entitlements.models import CustomerEntitlement
from allotment.metering.windows import WindowSize
from allotment.types import Instant, utcnow

router = openmeter_router()
_PATH = "/v1/subjects/{subject_key:path}/entitlements"
_ONE = _PATH + "/{entitlement_id_or_feature_key}"
IncludeDeleted = Annotated[bool, Query(alias="includeDeleted")]
GrantOrderBy = Annotated[Literal["id", "createdAt", "updatedAt"], Query(alias="orderBy")]


def _out(
    row: CustomerEntitlement, owner: customers.CustomerView, feature_key: str, subject: str,
    at: datetime,
) -> dict[str, Any]:  # fmt: skip
    """The v1 entitlement, held by the subject it was asked through."""
    return entitlement_v1_out(row, owner, feature_key, at=at) | {"subjectKey": subject}


@router.post(_PATH, status_code=201)
async def create_entitlement(
    subject_key: str, body: EntitlementCreateIn, principal: Admin, session: WriteSession
) -> Json:
    """One entitlement per customer and feature, whichever of its subjects asks: a second is a 409."""
    at = utcnow()
    subject, owner = await customers.owner_of_subject(session, principal.tenant_id, subject_key)
    row, key = await openmeter_entitlements.create(session, principal, owner.customer, body, at=at)
    return Json(_out(row, owner, key, subject, at), status_code=201)


@router.get(_PATH)
async def list_entitlements(
    subject_key: str,
    principal: Reader,
    session: ReadSession,
    include_deleted: IncludeDeleted = False,
) -> Json:
    """The owner's current and scheduled entitlements, oldest first; ended ones too with
    `includeDeleted`."""
    at, tenant_id = utcnow(), principal.tenant_id
    subject, owner = await customers.owner_of_subject(session, tenant_id, subject_key)
    rows = openmeter_entitlements.continued(await provisioning.rows_of(session, tenant_id, owner.customer.id))
    if not include_deleted:
        rows = [r for r in rows if r.active_to is None or r.active_to > at]
    rows.sort(key=lambda r: (r.created_at, r.id))
    keys = await features.keys_of(session, tenant_id, {r.feature_id for r in rows})
    return Json([_out(r, owner, keys[r.feature_id], subject, at) for r in rows])


@router.get(_ONE)
async def get_entitlement(
    subject_key: str, entitlement_id_or_feature_key: str, principal: Reader, session: ReadSession
) -> Json:
    """By id (ended ones too, with `deletedAt`) or by feature key; another customer's is a 404."""
    at, tenant_id = utcnow(), principal.tenant_id
    subject, owner = await customers.owner_of_subject(session, tenant_id, subject_key)
    _, row, key = await resolve(
        session, tenant_id, owner.customer.id, entitlement_id_or_feature_key, at
    )
    return Json(_out(row, owner, key, subject, at))


@router.delete(_ONE, status_code=204)
async def delete_entitlement(
    subject_key: str, entitlement_id_or_feature_key: str, principal: Admin, session: WriteSession
) -> Response:
    _, owner = await customers.owner_of_subject(session, principal.tenant_id, subject_key)
    await openmeter_entitlements.remove(
        session, principal, owner.customer.id, entitlement_id_or_feature_key, at=utcnow()
    )
    return Response(status_code=204)


@router.put(_ONE + "/override", status_code=201)
async def override_entitlement(
    subject_key: str,
    entitlement_id_or_feature_key: str,
    body: EntitlementCreateIn,
    principal: Admin,
    session: WriteSession,
) -> Json:
    """As the v2 customer override: the entitlement ends and its replacement starts, at once."""
    at = utcnow()
    subject, owner = await customers.owner_of_subject(session, principal.tenant_id, subject_key)
    _, row, key = await openmeter_entitlements.override(
        session, principal, owner.customer.id, entitlement_id_or_feature_key, body, at=at
    )
    return Json(_out(row, owner, key, subject, at), status_code=201)


@router.post(_ONE + "/reset", status_code=204)
async def reset_entitlement(
    subject_key: str, entitlement_id_or_feature_key: str, body: ResetIn, principal: Admin, session: WriteSession
) -> Response:
    """As the v2 customer reset: a new usage period starts now, under the same id."""
    _, owner = await customers.owner_of_subject(session, principal.tenant_id, subject_key)
    await openmeter_entitlements.reset(session, principal, owner.customer.id, entitlement_id_or_feature_key, body)
    return Response(status_code=204)


@router.get(_ONE + "/history")
async def entitlement_history(
    subject_key: str,
    entitlement_id_or_feature_key: str,
    principal: Reader,
    session: ReadSession,
    window_size: Annotated[WindowSize, Query(alias="windowSize")],
    from_: Annotated[Instant | None, Query(alias="from")] = None,
    to: Annotated[Instant | None, Query()] = None,
    window_time_zone: Annotated[str, Query(alias="windowTimeZone")] = "UTC",
) -> Json:
    """The same history as the v2 customer route."""
    _, owner = await customers.owner_of_subject(session, principal.tenant_id, subject_key)
    return Json(await openmeter_history.history_of(
        session, principal.tenant_id, owner.customer.id, entitlement_id_or_feature_key,
        window_size=window_size, from_=from_, to=to, window_time_zone=window_time_zone,
    ))  # fmt: skip


@router.get(_ONE + "/value")
async def entitlement_value(
    subject_key: str,
    entitlement_id_or_feature_key: str,
    principal: Reader,
    session: ReadSession,
    time: Time = None,
) -> Json:
    """The same value as the customer's v1 value route."""
    tenant_id = principal.tenant_id
    _, owner = await customers.owner_of_subject(session, tenant_id, subject_key)
    state = await openmeter_entitlements.value_at(
        session, tenant_id, owner.customer.id, entitlement_id_or_feature_key, time
    )
    return Json(value_out(state))


# --- grants ------------------------------------------------------------------------------------


@router.post(_ONE + "/grants", status_code=201)
async def create_grant(
    subject_key: str,
    entitlement_id_or_feature_key: str,
    body: GrantCreateIn,
    principal: Admin,
    session: WriteSession,
) -> Json:
    """v1's default `maxRolloverAmount` is 0; everything else as the v2 grants route."""
    at, tenant_id = utcnow(), principal.tenant_id
    if body.max_rollover_amount is None:
        body = body.model_copy(update={"max_rollover_amount": Decimal(0)})
    _, owner = await customers.owner_of_subject(session, tenant_id, subject_key)
    customer, row, key = await resolve_live(
        session, tenant_id, owner.customer.id, entitlement_id_or_feature_key, at
    )
    record = await openmeter_grants.issue(session, principal, customer, key, body, at=at)
    return Json(grant_out(record, row.public_id, at), status_code=201)


@router.get(_ONE + "/grants")
async def list_grants(
    subject_key: str,
    entitlement_id_or_feature_key: str,
    principal: Reader,
    session: ReadSession,
    include_deleted: IncludeDeleted = False,
    order_by: GrantOrderBy = "id",
) -> Json:
    """The owner's grants on the feature, as a bare array, voided ones too (as the v2 route)."""
    at, tenant_id = utcnow(), principal.tenant_id
    _, owner = await customers.owner_of_subject(session, tenant_id, subject_key)
    customer, row, key = await resolve(
        session, tenant_id, owner.customer.id, entitlement_id_or_feature_key, at
    )
    records = await openmeter_grants.all_grants(session, tenant_id, customer.id, key, at)
    records.sort(key=openmeter_grants.ORDER_BY[order_by])
    return Json([grant_out(r, row.public_id, at) for r in records])
