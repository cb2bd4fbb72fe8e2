"""Lago plans (`/plans`, keyed by `code`) are our plans, published as they are made.

`code` is the plan key, `interval` its billing interval (weekly, monthly, yearly: we have no
quarter or half year) and each charge a metered entitlement to the feature that counts its
billable metric, over that interval, without a limit. An update publishes the plan's next
version (subscriptions keep theirs, as for any plan); a delete archives the plan and
terminates its subscriptions. Pricing is kept as sent (see lago_plan_documents).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.api.compat import lago_plan_documents as documents
from allotment.api.compat.lago_http import Page, PerPage, at, invalid, lago_router, meta
from allotment.api.deps import Admin, Reader, ReadSession, WriteSession
from allotment.api.responses import Json
from allotment.entitlements import external_plans, features, plans
from allotment.entitlements.engine import Kind
from allotment.entitlements.models import Plan
from allotment.entitlements.schemas import KEY_PATTERN, BillingInterval
from allotment.errors import AlreadyExists, NotFound
from allotment.metering import meters
from allotment.metering.models import Meter
from allotment.tenancy.service import Principal
from allotment.types import utcnow

router = lago_router()
_KEY = re.compile(KEY_PATTERN)
Sent = ConfigDict(extra="allow")  # what we do not model is kept and answered as sent


# Fields we keep without modelling are typed as Lago's clients read them back: a value of
# another type would be kept, answered, and then refused by the client on every read of the plan.
class LagoChargeFilter(BaseModel):
    model_config = Sent

    invoice_display_name: str | None = None
    properties: dict[str, Any] | None = None
    values: dict[str, list[str]] | None = None


class LagoCharge(BaseModel):
    model_config = Sent

    id: str | None = Field(default=None, max_length=64)
    billable_metric_id: str | None = Field(default=None, min_length=1, max_length=64)
    charge_model: str | None = None
    tax_codes: list[str] | None = None
    code: str | None = None
    invoice_display_name: str | None = None
    pay_in_advance: bool | None = None
    prorated: bool | None = None
    invoiceable: bool | None = None
    accepts_target_wallet: bool | None = None
    regroup_paid_fees: str | None = None
    min_amount_cents: int | None = Field(default=None, ge=0)
    properties: dict[str, Any] | None = None
    filters: list[LagoChargeFilter] | None = None


class LagoThreshold(BaseModel):
    model_config = Sent

    id: str | None = Field(default=None, max_length=64)
    amount_cents: int = Field(ge=0)
    threshold_display_name: str | None = None
    recurring: bool | None = None


class LagoCommitment(BaseModel):
    model_config = Sent

    amount_cents: int = Field(ge=0)
    tax_codes: list[str] | None = None
    invoice_display_name: str | None = None


class LagoPlan(BaseModel):
    model_config = Sent

    name: str | None = Field(default=None, min_length=1, max_length=256)
    code: str | None = None
    interval: str | None = None
    description: str | None = Field(default=None, max_length=1024)
    amount_cents: int | None = Field(default=None, ge=0)
    amount_currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    invoice_display_name: str | None = None
    trial_period: float | None = Field(default=None, ge=0)  # days, not money: Lago's clients send a float
    pay_in_advance: bool | None = None
    bill_charges_monthly: bool | None = None
    bill_fixed_charges_monthly: bool | None = None
    metadata: dict[str, str | None] | None = None
    charges: list[LagoCharge] | None = None
    usage_thresholds: list[LagoThreshold] | None = None
    minimum_commitment: LagoCommitment | None = None
    tax_codes: list[str] | None = None
    fixed_charges: list[dict[str, Any]] | None = None


class PlanBody(BaseModel):
    plan: LagoPlan


def _refused(data: LagoPlan, *, creating: bool) -> dict[str, list[str]]:
    """What is wrong with the plan, under Lago's field names (nothing has been written)."""
    out: dict[str, list[str]] = {}
    if creating:
        for name in ("name", "code", "interval", "amount_cents", "amount_currency"):
            if getattr(data, name) is None:
                out[name] = ["value_is_mandatory"]
    if data.code is not None and not _KEY.match(data.code):
        out["code"] = ["must be 1 to 64 lower-case letters, digits, '_' or '-', starting with a letter or digit"]
    if data.interval is not None and data.interval not in documents.INTERVALS:
        out["interval"] = [f"'{data.interval}' is not supported; use one of " + ", ".join(documents.INTERVALS)]
    if data.fixed_charges:
        out["fixed_charges"] = ["is not supported (add-ons are not built)"]
    taxed = [("tax_codes", data.tax_codes), ("minimum_commitment.tax_codes",
                                             data.minimum_commitment and data.minimum_commitment.tax_codes)]
    taxed += [(f"charges.{i}.tax_codes", c.tax_codes) for i, c in enumerate(data.charges or [])]
    out.update({name: ["is not supported (taxes are not built)"] for name, codes in taxed if codes})
    for i, charge in enumerate(data.charges or []):
        if charge.charge_model is not None and charge.charge_model not in documents.CHARGE_MODELS:
            out[f"charges.{i}.charge_model"] = [f"'{charge.charge_model}' is not one of "
                                                + ", ".join(documents.CHARGE_MODELS)]
    return out


def _incomplete(charges: list[dict[str, Any]]) -> dict[str, list[str]]:
    """A charge must name its metric and model (a charge updated by id keeps its own)."""
    return {f"charges.{i}.{name}": ["value_is_mandatory"]
            for i, c in enumerate(charges) for name in ("billable_metric_id", "charge_model") if not c.get(name)}


async def _metrics(session: AsyncSession, tenant_id: str, charges: list[dict[str, Any]]) -> list[Meter]:
    """Each charge's meter; the charge's metric is then named by the meter id (its lago_id)."""
    found = []
    for charge in charges:
        try:
            meter = await meters.get(session, tenant_id, charge["billable_metric_id"])
        except NotFound:
            raise NotFound("billable_metric", charge["billable_metric_id"]) from None
        charge["billable_metric_id"] = meter.id
        found.append(meter)
    return found


async def _answer(session: AsyncSession, tenant_id: str, plan: Plan) -> dict[str, Any]:
    document = plan.external_document or documents.derived(plan, await _metered(session, tenant_id, plan))
    codes = {}
    for charge in document.get("charges", []):
        try:
            codes[charge["billable_metric_id"]] = (await meters.get(session, tenant_id,
                                                                    charge["billable_metric_id"])).key
        except NotFound:
            continue  # deleted since (its feature was archived first): answered without a code
    return documents.plan_out(plan, document, codes)


async def _metered(session: AsyncSession, tenant_id: str, plan: Plan) -> list[str]:
    """The meters of the plan's metered features, as a plan made natively's charges."""
    out = []
    for row in await plans.entitlements_of(session, plan):
        if row.kind == Kind.METERED:
            feature = await features.get(session, tenant_id, row.feature_id, archived=True)
            if feature.meter_id is not None and feature.meter_id not in out:
                out.append(feature.meter_id)
    return out


async def _published(
    session: AsyncSession, principal: Principal, *, code: str, name: str, description: str | None,
    interval: str, document: dict[str, Any], previous: Plan | None = None,
) -> Plan:
    """Resolves the charges' metrics, entitles a feature per metric and publishes the version:
    the plan's first (a create) or the one after `previous` (an update), keeping what that
    version entitles beyond its charges."""
    charges = document.setdefault("charges", [])
    metrics = await _metrics(session, principal.tenant_id, charges)
    billing_interval: BillingInterval = documents.INTERVALS[interval]  # type: ignore[assignment]
    kept, covered = ([], set()) if previous is None else await external_plans.carried(
        session, previous, meter_ids={m.id for m in metrics}, billing_interval=billing_interval)
    now, keys = utcnow(), []
    for i, meter in enumerate(metrics):
        if meter.id not in covered:
            keys.append(await external_plans.feature_for(session, principal.tenant_id, meter,
                                                         field=f"charges.{i}.billable_metric_id",
                                                         actor=principal.key_id, at=now))
    view = await external_plans.publish(
        session, principal.tenant_id, key=code, name=name, description=description,
        billing_interval=billing_interval, currency=document.get("amount_currency"), feature_keys=keys,
        kept=kept, document=document, actor=principal.key_id, at=now, new=previous is None,
    )
    return view.plan


@router.post("/v1/plans", summary="Create a plan (Lago)")
async def create_plan(body: PlanBody, principal: Admin, session: WriteSession) -> Json:
    data = body.plan
    sent = data.model_dump(exclude_none=True)
    charges = documents.with_ids(sent.get("charges", []), [], "chg")
    if bad := _refused(data, creating=True) | _incomplete(charges):
        return invalid(bad)
    code = data.code or ""
    if await external_plans.is_published(session, principal.tenant_id, code):
        raise AlreadyExists("plan", code)  # Lago: a validation error, `value_already_exist` on code
    document = {k: v for k, v in documents.kept(sent).items() if k not in documents.NATIVE} | {"charges": charges}
    _thresholds_and_commitment(document, {})
    plan = await _published(session, principal, code=code, name=data.name or code, description=data.description,
                            interval=data.interval or "", document=document)
    plan.external_document = {**document, "lago_id": plan.id, "created_at": at(plan.created_at)}
    await session.flush()
    return Json({"plan": await _answer(session, principal.tenant_id, plan)})


def _thresholds_and_commitment(document: dict[str, Any], before: dict[str, Any]) -> None:
    if "usage_thresholds" in document:
        document["usage_thresholds"] = documents.with_ids(document["usage_thresholds"],
                                                          before.get("usage_thresholds", []), "ut")
    if "minimum_commitment" in document:
        document["minimum_commitment"] = documents.commitment(document["minimum_commitment"],
                                                              before.get("minimum_commitment"))


@router.get("/v1/plans/{code}", summary="One plan (Lago)")
async def get_plan(code: str, principal: Reader, session: ReadSession) -> Json:
    view = await plans.get(session, principal.tenant_id, code)
    return Json({"plan": await _answer(session, principal.tenant_id, view.plan)})


@router.get("/v1/plans", summary="Plans, page by page (Lago)")
async def list_plans(principal: Reader, session: ReadSession, page: Page = 1, per_page: PerPage = 20) -> Json:
    rows, total = await plans.published_page(session, principal.tenant_id, offset=(page - 1) * per_page,
                                             limit=per_page)
    return Json({"plans": [await _answer(session, principal.tenant_id, p) for p in rows],
                 "meta": meta(page, per_page, total)})


@router.put("/v1/plans/{code}", summary="Update a plan: its next version, published (Lago)")
async def update_plan(code: str, body: PlanBody, principal: Admin, session: WriteSession) -> Json:
    """Fields left out (or null) keep their values; charges sent replace the plan's, a charge
    sent with its `id` keeping its lago_id and the fields it leaves out. The code cannot change."""
    current = (await plans.get(session, principal.tenant_id, code)).plan
    data = body.plan
    bad = _refused(data, creating=False)
    if data.code is not None and data.code != code:
        bad["code"] = ["cannot be changed"]
    sent = data.model_dump(exclude_none=True)
    before = current.external_document or documents.derived(current, await _metered(session, principal.tenant_id,
                                                                                    current))
    charges = documents.with_ids(sent["charges"], before.get("charges", []), "chg") if "charges" in sent \
        else [dict(c) for c in before.get("charges", [])]
    if bad := bad | _incomplete(charges):
        return invalid(bad)
    changes = {k: v for k, v in documents.kept(sent).items() if k not in documents.NATIVE and k != "charges"}
    _thresholds_and_commitment(changes, before)
    document = {**before, **changes, "charges": charges}
    plan = await _published(
        session, principal, code=code, name=data.name or current.name,
        description=data.description if data.description is not None else current.description,
        interval=data.interval or documents.LAGO_INTERVALS[current.billing_interval], document=document,
        previous=current,
    )
    return Json({"plan": await _answer(session, principal.tenant_id, plan)})


@router.delete("/v1/plans/{code}", summary="Delete a plan, terminating its subscriptions (Lago)")
async def delete_plan(code: str, principal: Admin, session: WriteSession) -> Json:
    """Every version is archived (kept for the subscriptions that had it) and the subscriptions
    still on one end now: Lago deletes the plan and terminates them."""
    view = await plans.get(session, principal.tenant_id, code)
    out = await _answer(session, principal.tenant_id, view.plan)
    await external_plans.remove(session, principal.tenant_id, code, actor=principal.key_id, at=utcnow())
    return Json({"plan": out})
