"""OpenMeter customer entitlements, their values and a customer's access.

Entitlements created here are our ad-hoc entitlements (`overrides.create_adhoc`); values come
from the same entitlement state a native `GET /v1/customers/{key}/entitlements` reports, so
both APIs always agree. How OpenMeter's metered fields map to ours:

- `issueAfterReset` (or `issue.amount`): OpenMeter issues a grant of that amount with every
  reset, with rollover bounds that bring it back to the same amount each period. That is
  exactly our `included`: the units every usage period starts with. Its priority is not kept:
  included units burn at priority 1 (OpenMeter's default), expiring at the period end.
- `isSoftLimit` false (the default): access ends when the balance is spent, i.e. a hard limit
  at the included units (live grants raise it). true: no hard limit; usage past the balance is
  allowed and reported as overage.
- `preserveOverageAtReset`: overage is carried into the next period (true) or forgiven. The
  carry lowers the next period's balance; the value's `usage` leaves it out, as OpenMeter does.
- `usagePeriod`: `DAY`/`WEEK`/`MONTH`/`YEAR` or an ISO-8601 duration of that length (`P1D`,
  `PT24H`, `P1W`, `P7D`, `P1M`, `P1Y`, `P12M`...; openmeter_intervals.py), aligned on `anchor`
  (default: now), in UTC.
- `measureUsageFrom`: `NOW` (OpenMeter's default) counts usage from the entitlement's creation;
  `CURRENT_PERIOD_START` or an instant in the past backdates it (native `starts_at`): the usage
  the customer's events reported since then counts. As in OpenMeter, it and the anchor are
  truncated to the minute.
- `grants` are created with the entitlement, as the grants endpoint would.
- `metadata` (text to text) is kept with the entitlement and answered as sent.

An override ends an ad-hoc entitlement and creates its replacement in the same transaction
(`overrides.replace_adhoc`); docs/openmeter-entitlements.md says what carries over. A reset
starts a new usage period now (`usage_resets.reset_usage`), under the same id.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.api.compat import openmeter_grants
from allotment.api.compat.openmeter_http import (
    Page,
    PageSize,
    json_text,
    openmeter_fields,
    openmeter_router,
    to_minute,
    utc,
)
from allotment.api.compat.openmeter_intervals import interval_of
from allotment.api.compat.openmeter_lookup import resolve, resolve_live
from allotment.api.compat.openmeter_schemas import (
    ENTITLEMENT_FIELDS,
    EntitlementCreateIn,
    ResetIn,
    entitlement_out,
    value_out,
    value_v2_out,
)
from allotment.api.deps import Admin, Reader, ReadSession, WriteSession
from allotment.api.responses import Json
from allotment.customers import service as customers
from allotment.customers.models import Customer
from allotment.entitlements import (
    features,
    metered_usage,
    overrides,
    provisioning,
    state,
    usage_resets,
)
from allotment.entitlements.engine import ZERO, Kind
from allotment.entitlements.models import CustomerEntitlement, Feature
from allotment.entitlements.periods import UsagePeriod, period_at
from allotment.entitlements.schemas import AdhocIn
from allotment.entitlements.standing import reset_between
from allotment.errors import Conflict, NotFound, ValidationFailed
from allotment.tenancy.service import Principal
from allotment.types import OUT_OF_RANGE, Instant, utcnow, within_range

router = openmeter_router()
_V2 = "/v2/customers/{customer_id_or_key}/entitlements"
_ORDER_BY = {
    "createdAt": lambda r: (r.created_at, r.id),
    "updatedAt": lambda r: (r.updated_at, r.id),
}
Time = Annotated[Instant | None, Query(description="The instant to evaluate (default: now).")]


@router.post(_V2, status_code=201)
async def create_entitlement(
    customer_id_or_key: str, body: EntitlementCreateIn, principal: Admin, session: WriteSession
) -> Json:
    """One entitlement per customer and feature: a second one is a 409, as in OpenMeter."""
    at = utcnow()
    customer = await customers.find(session, principal.tenant_id, customer_id_or_key)
    row, feature_key = await create(session, principal, customer, body, at=at)
    return Json(entitlement_out(row, customer, feature_key, at=at), status_code=201)


@router.put(_V2 + "/{entitlement_id_or_feature_key}/override", status_code=201)
async def override_entitlement(
    customer_id_or_key: str,
    entitlement_id_or_feature_key: str,
    body: EntitlementCreateIn,
    principal: Admin,
    session: WriteSession,
) -> Json:
    """The entitlement ends now and one built from the body (as a create's) starts now, in one
    transaction, answered as a create. Grants stay: they belong to the customer and feature."""
    at = utcnow()
    customer, row, key = await override(session, principal, customer_id_or_key, entitlement_id_or_feature_key,
                                        body, at=at)
    return Json(entitlement_out(row, customer, key, at=at), status_code=201)


async def override(
    session: AsyncSession, principal: Principal, customer_ref: str, ref: str, body: EntitlementCreateIn,
    *, at: datetime,
) -> tuple[Customer, CustomerEntitlement, str]:
    """Replace the customer's ad-hoc entitlement `ref` by the one `body` describes."""
    customer, row, key = await resolve(session, principal.tenant_id, customer_ref, ref, at)
    _require_adhoc(row, customer, key, ref=ref, at=at)
    new_row, feature_key = await create(session, principal, customer, body, at=at, replacing=row)
    return customer, new_row, feature_key


_RESET_LEEWAY = timedelta(minutes=1)  # a client's clock a little off "now"


@router.post(_V2 + "/{entitlement_id_or_feature_key}/reset", status_code=204)
async def reset_entitlement(
    customer_id_or_key: str,
    entitlement_id_or_feature_key: str,
    body: ResetIn,
    principal: Admin,
    session: WriteSession,
) -> Response:
    """A new usage period starts now (usage_resets.py); the entitlement keeps its id. Only
    now: an `effectiveAt` further than a minute from it is a 400 naming it (a past reset would
    rewrite periods already counted)."""
    await reset(session, principal, customer_id_or_key, entitlement_id_or_feature_key, body)
    return Response(status_code=204)


async def reset(session: AsyncSession, principal: Principal, customer_ref: str, ref: str, body: ResetIn) -> None:
    """Reset the usage of the customer's entitlement `ref` now, as `body` asks."""
    at = utcnow()
    asked = utc(body.effective_at)
    if asked is not None and asked > at + _RESET_LEEWAY:
        raise ValidationFailed.on("effectiveAt", "must not be in the future")
    if asked is not None and asked < at - _RESET_LEEWAY:
        raise ValidationFailed.on("effectiveAt", "a past instant is not supported: usage is reset when asked")
    _, row, _ = await resolve(session, principal.tenant_id, customer_ref, ref, at)
    await usage_resets.reset_usage(
        session, row, retain_anchor=bool(body.retain_anchor), preserve_overage=body.preserve_overage,
        actor=principal.key_id, at=at, field="entitlementIdOrFeatureKey",
    )


def continued(rows: list[CustomerEntitlement]) -> list[CustomerEntitlement]:
    """`rows` without those a usage reset ended: the row after each continues it (same id)."""
    started = [r for r in rows if r.reset_overage is not None]
    return [r for r in rows if not any(reset_between(r, s) for s in started)]


def _require_adhoc(row: CustomerEntitlement, customer: Customer, key: str, *, ref: str, at: datetime) -> None:
    """Only a live entitlement made through this API is ended or replaced here: an ended one is
    gone (404), one from a subscription follows the subscription (409)."""
    if row.active_to is not None and row.active_to <= at:
        raise NotFound("entitlement", ref)
    if row.source != "adhoc":
        raise Conflict(
            f"the entitlement of '{customer.key}' to '{key}' comes from its subscription; "
            "change the subscription or its override instead"
        )


async def create(
    session: AsyncSession,
    principal: Principal,
    customer: Customer,
    body: EntitlementCreateIn,
    *,
    at: datetime,
    replacing: CustomerEntitlement | None = None,
) -> tuple[CustomerEntitlement, str]:
    """The ad-hoc entitlement (and grants) the body describes, made new or `replacing` one;
    returns the row and its feature key."""
    tenant_id, actor = principal.tenant_id, principal.key_id
    with openmeter_fields(ENTITLEMENT_FIELDS):
        data = AdhocIn.model_validate(_adhoc(body, at, replacing=replacing is not None))
        feature = await features.get(session, tenant_id, data.feature)
        if data.kind is Kind.METERED:
            await _require_meter(session, tenant_id, feature)
        if replacing is not None:
            view = await overrides.replace_adhoc(
                session, tenant_id, customer.id, data, replaced=replacing, actor=actor, at=at, metadata=body.metadata
            )
        elif await provisioning.open_rows(session, tenant_id, customer.id, at, feature_id=feature.id):
            raise Conflict(
                f"customer '{customer.key}' already has an entitlement to '{feature.key}'; override"
                " it (PUT .../override) or delete it first (one from a subscription changes with"
                " the subscription)"
            )
        else:
            view = await overrides.create_adhoc(
                session, tenant_id, customer.id, data, actor=actor, at=at, metadata=body.metadata
            )
    for i, grant in enumerate(body.grants or ()):
        await openmeter_grants.issue(
            session, principal, customer, view.feature_key, grant, at=at, field=f"grants[{i}]."
        )
    return view.row, view.feature_key


def _adhoc(body: EntitlementCreateIn, at: datetime, *, replacing: bool = False) -> dict[str, Any]:
    """The native ad-hoc entitlement an OpenMeter create request describes."""
    feature = body.feature_key or body.feature_id
    if not feature:
        raise ValidationFailed.on("featureKey", "featureKey or featureId is required")
    kind = body.type.lower()
    if kind == "boolean":
        return {"feature": feature, "kind": "boolean", "has_access": True}
    if kind == "static":
        return {"feature": feature, "kind": "static", "config": _config(body.config)}
    if kind == "metered":
        return {"feature": feature, "kind": "metered", **_metered(body, at, replacing=replacing)}
    raise ValidationFailed.on("type", "must be one of metered, boolean, static")


async def _require_meter(session: AsyncSession, tenant_id: str, feature: Feature) -> None:
    """OpenMeter measures a metered entitlement with its feature's meter: without one it is
    refused (natively, usage could still come from checks that consume)."""
    if (await features.view(session, tenant_id, feature)).meter_key is None:
        raise ValidationFailed.on(
            "featureKey", f"feature '{feature.key}' has no meter: a metered entitlement needs one"
        )


def _config(raw: str | None) -> dict[str, Any]:
    if raw is None:
        raise ValidationFailed.on("config", "is required for static entitlements")
    parsed = json_text("config", raw)
    if not isinstance(parsed, dict):
        raise ValidationFailed.on("config", 'must be a JSON object such as {"seats": 5}')
    return parsed


def _metered(body: EntitlementCreateIn, at: datetime, *, replacing: bool) -> dict[str, Any]:
    """OpenMeter measures metered usage from whole minutes: `measureUsageFrom` (now by default)
    and the anchor are truncated to the minute, so usage sent earlier in the minute counts. A
    replacement starts where the entitlement it replaces ends (overrides.replace_adhoc)."""
    if body.usage_period is None:
        raise ValidationFailed.on("usagePeriod", "is required for metered entitlements")
    interval = interval_of(body.usage_period.interval, "usagePeriod.interval")
    anchor = to_minute(utc(body.usage_period.anchor))
    every = UsagePeriod(interval, anchor or at, ZoneInfo("UTC"))
    starts_at = to_minute(_measured_from(body.measure_usage_from, every, at))
    if starts_at is None and not replacing:
        starts_at = to_minute(at)
    included = body.issue_after_reset
    if included is None and body.issue is not None:
        included = body.issue.amount
    return {
        "usage_period": interval,
        "included": included,
        "hard_limit": None if body.is_soft_limit else (included or 0),
        "overage_at_reset": "carry" if body.preserve_overage_at_reset else "forgive",
        "usage_anchor": anchor if anchor is not None or starts_at is None else starts_at,
        "starts_at": starts_at,
    }


def _measured_from(given: str | None, every: UsagePeriod, at: datetime) -> datetime | None:
    """`measureUsageFrom` as the instant the entitlement starts (None: now)."""
    if given is None or given.upper() == "NOW":
        return None
    if given.upper() == "CURRENT_PERIOD_START":
        return period_at(every, at)[0]
    try:
        instant = utc(datetime.fromisoformat(given))
    except ValueError:
        raise ValidationFailed.on(
            "measureUsageFrom", "must be NOW, CURRENT_PERIOD_START or an RFC 3339 instant"
        ) from None
    assert instant is not None
    if not within_range(instant):
        raise ValidationFailed.on("measureUsageFrom", OUT_OF_RANGE)
    if instant > at:
        raise ValidationFailed.on("measureUsageFrom", "must not be in the future")
    return instant


@router.get(_V2)
async def list_entitlements(
    customer_id_or_key: str,
    principal: Reader,
    session: ReadSession,
    include_deleted: Annotated[bool, Query(alias="includeDeleted")] = False,
    page: Page = 1,
    page_size: PageSize = 100,
    order: Literal["ASC", "DESC"] = "ASC",
    order_by: Annotated[Literal["createdAt", "updatedAt"], Query(alias="orderBy")] = "createdAt",
) -> Json:
    """Current and scheduled entitlements; ended ones too with `includeDeleted`."""
    at, tenant_id = utcnow(), principal.tenant_id
    customer = await customers.find(session, tenant_id, customer_id_or_key)
    rows = continued(await provisioning.rows_of(session, tenant_id, customer.id))
    if not include_deleted:
        rows = [r for r in rows if r.active_to is None or r.active_to > at]
    rows.sort(key=_ORDER_BY[order_by], reverse=order == "DESC")
    keys = await features.keys_of(session, tenant_id, {r.feature_id for r in rows})
    shown = rows[(page - 1) * page_size : page * page_size]
    return Json(
        {
            "items": [entitlement_out(r, customer, keys[r.feature_id], at=at) for r in shown],
            "page": page,
            "pageSize": page_size,
            "totalCount": len(rows),
        }
    )


@router.get(_V2 + "/{entitlement_id_or_feature_key}")
async def get_entitlement(
    customer_id_or_key: str,
    entitlement_id_or_feature_key: str,
    principal: Reader,
    session: ReadSession,
) -> Json:
    at = utcnow()
    customer, row, key = await resolve(
        session, principal.tenant_id, customer_id_or_key, entitlement_id_or_feature_key, at
    )
    return Json(entitlement_out(row, customer, key, at=at))


@router.delete(_V2 + "/{entitlement_id_or_feature_key}", status_code=204)
async def delete_entitlement(
    customer_id_or_key: str,
    entitlement_id_or_feature_key: str,
    principal: Admin,
    session: WriteSession,
) -> Response:
    await remove(session, principal, customer_id_or_key, entitlement_id_or_feature_key, at=utcnow())
    return Response(status_code=204)


async def remove(
    session: AsyncSession, principal: Principal, customer_ref: str, ref: str, *, at: datetime
) -> None:
    """Ends an entitlement created through this API; plan entitlements follow the subscription."""
    tenant_id = principal.tenant_id
    customer, row, key = await resolve(session, tenant_id, customer_ref, ref, at)
    _require_adhoc(row, customer, key, ref=ref, at=at)
    await overrides.remove_adhoc(
        session, tenant_id, customer.id, key, actor=principal.key_id, at=at
    )


@router.get(_V2 + "/{entitlement_id_or_feature_key}/value")
async def entitlement_value_v2(
    customer_id_or_key: str,
    entitlement_id_or_feature_key: str,
    principal: Reader,
    session: ReadSession,
    time: Time = None,
) -> Json:
    return Json(value_v2_out(await value_at(session, principal.tenant_id, customer_id_or_key,
                                            entitlement_id_or_feature_key, time)))


@router.get("/v1/customers/{customer_id_or_key}/entitlements/{feature_key}/value")
async def entitlement_value(
    customer_id_or_key: str,
    feature_key: str,
    principal: Reader,
    session: ReadSession,
    time: Time = None,
) -> Json:
    """As in OpenMeter, a feature the customer is not entitled to (at `time`) is answered as no
    access, not a 404: this is the call that checks access. An unknown customer is a 404."""
    tenant_id = principal.tenant_id
    customer = await customers.find(session, tenant_id, customer_id_or_key)
    try:
        return Json(value_out(await value_at(session, tenant_id, customer.id, feature_key, time)))
    except NotFound:
        return Json({"hasAccess": False})


_FURTHEST = timedelta(days=366)


async def value_at(
    session: AsyncSession, tenant_id: str, customer_ref: str, ref: str, time: datetime | None
) -> state.EntitlementState:
    """The entitlement as it stood at `time` (default now): for an instant past, the usage
    its customer's events reported after it is left out of its period's counter."""
    now = utcnow()
    at = utc(time) or now
    if at > now + _FURTHEST:  # each period up to it is worked out: keep that bounded
        raise ValidationFailed.on("time", f"must be at most {_FURTHEST.days} days ahead")
    _, row, key = await resolve_live(session, tenant_id, customer_ref, ref, at)
    later = await metered_usage.reported_since(session, row, at) if row.kind == "metered" and at < now else ZERO
    return await state.state_of(session, row, key, at, later=later)


@router.get("/v1/customers/{customer_id_or_key}/access")
async def customer_access(customer_id_or_key: str, principal: Reader, session: ReadSession) -> Json:
    """Every feature the customer is entitled to now, by key, with its value."""
    states = await state.list_states(session, principal.tenant_id, customer_id_or_key, at=utcnow())
    return Json({"entitlements": {s.feature_key: value_out(s) for s in states}})
