"""OpenMeter customers (`/api/v1/customers`) and subjects (`/api/v1/subjects`).

A customer's `usageAttribution.subjectKeys` are our subject keys and `primaryEmail` our
email. A customer created without a key gets a generated one, because our customers are
addressed by key.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Literal

from fastapi import Query, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.api.compat.openmeter_http import (
    Page,
    PageSize,
    openmeter_fields,
    openmeter_router,
    utc,
)
from allotment.api.compat.openmeter_schemas import (
    CUSTOMER_FIELDS,
    CustomerIn,
    SubjectUpsertIn,
    customer_out,
    subject_out,
)
from allotment.api.deps import Admin, Reader, ReadSession, WriteSession
from allotment.api.responses import Json
from allotment.customers import service as customers
from allotment.customers.models import Subject
from allotment.customers.schemas import CustomerCreate, CustomerUpdate, SubjectUpsert
from allotment.entitlements import plans, provisioning, references, subscriptions
from allotment.errors import Conflict, NotFound, ValidationFailed
from allotment.types import new_id, utcnow

router = openmeter_router()
_PAGE = 1000  # rows read per statement when every customer has to be seen


@router.post("/v1/customers", status_code=201)
async def create_customer(body: CustomerIn, principal: Admin, session: WriteSession) -> Json:
    with openmeter_fields(CUSTOMER_FIELDS):
        data = CustomerCreate.model_validate({
            "key": body.key or new_id("cus"),
            "name": body.name,
            "description": body.description,
            "email": body.primary_email,
            "currency": body.currency,
            "billing_address": body.address(),  # checked by the native schema, so errors name it
            "metadata": body.metadata or {},
            "subject_keys": body.usage_attribution.subject_keys if body.usage_attribution else [],
        })
        view = await customers.create(session, principal.tenant_id, data, actor=principal.key_id, at=utcnow())
    return Json(customer_out(view), status_code=201)


@router.get("/v1/customers")
async def list_customers(
    principal: Reader,
    session: ReadSession,
    page: Page = 1,
    page_size: PageSize = 100,
    order: Literal["ASC", "DESC"] = "ASC",
    order_by: Annotated[Literal["id", "name", "createdAt"], Query(alias="orderBy")] = "id",
    key: str | None = None,
    name: str | None = None,
    primary_email: Annotated[str | None, Query(alias="primaryEmail")] = None,
    subject: str | None = None,
    plan_key: Annotated[str | None, Query(alias="planKey")] = None,
    include_deleted: Annotated[bool, Query(alias="includeDeleted")] = False,
) -> Json:
    """`{items, page, pageSize, totalCount}`. Each filter matches a part of its field, ignoring
    case, as OpenMeter documents (`subject`: a part of any of the customer's subject keys);
    `planKey` keeps the customers with a subscription active now on a version of that plan.
    Deleted customers only with `includeDeleted` (marked by their `deletedAt`)."""
    tenant_id = principal.tenant_id
    filters = (key, name, primary_email, subject, plan_key)
    if filters == (None,) * len(filters) and (order, order_by) == ("ASC", "id"):
        total = await customers.count(session, tenant_id, include_deleted=include_deleted)
        views = await customers.list_(
            session, tenant_id, after=None, limit=page_size, offset=(page - 1) * page_size,
            include_deleted=include_deleted,
        )
    else:
        subscribed = None if plan_key is None else await _on_plan(session, tenant_id, plan_key, utcnow())
        views = [
            v
            for v in await _all_customers(session, tenant_id, include_deleted=include_deleted)
            if _matches(v, key, name, primary_email, subject)
            and (subscribed is None or v.customer.id in subscribed)
        ]
        views.sort(key=lambda v: _sort_value(v, order_by), reverse=order == "DESC")
        total = len(views)
        views = views[(page - 1) * page_size : page * page_size]
    return Json(
        {
            "items": [customer_out(v) for v in views],
            "page": page,
            "pageSize": page_size,
            "totalCount": total,
        }
    )


async def _all_customers(
    session: AsyncSession, tenant_id: str, *, include_deleted: bool = False
) -> list[customers.CustomerView]:
    out: list[customers.CustomerView] = []
    while True:
        after = out[-1].customer.id if out else None
        chunk = await customers.list_(session, tenant_id, after=after, limit=_PAGE, include_deleted=include_deleted)
        out += chunk
        if len(chunk) < _PAGE:
            return out


async def _on_plan(session: AsyncSession, tenant_id: str, plan_key: str, at: datetime) -> set[str]:
    """Ids of the customers whose subscription is active at `at` on any version of the plan."""
    versions = await plans.list_(session, tenant_id, key=plan_key, status=None, after=None, limit=_PAGE)
    on_plan = await subscriptions.live_on(session, tenant_id, [v.plan.id for v in versions], at)
    return {s.customer_id for s in on_plan if subscriptions.status_at(s, at) == "active"}


def _matches(
    view: customers.CustomerView,
    key: str | None,
    name: str | None,
    email: str | None,
    subject: str | None,
) -> bool:
    c = view.customer
    return (
        _part(key, c.key)
        and _part(name, c.name)
        and _part(email, c.email)
        and (subject is None or any(_part(subject, k) for k in view.subject_keys))
    )


def _part(wanted: str | None, value: str | None) -> bool:
    return wanted is None or wanted.casefold() in (value or "").casefold()


def _sort_value(view: customers.CustomerView, order_by: str) -> str:
    c = view.customer
    return {"id": c.id, "name": c.name, "createdAt": c.created_at.isoformat()}[order_by]


@router.get("/v1/customers/{customer_id_or_key}")
async def get_customer(customer_id_or_key: str, principal: Reader, session: ReadSession) -> Json:
    """The live customer with this key or id; else, as OpenMeter answers, the deleted customer
    with this id, marked by its `deletedAt` (a key names live customers only: a new customer
    may have taken it)."""
    try:
        view = await customers.get(session, principal.tenant_id, customer_id_or_key)
    except NotFound:
        deleted = await customers.views_of(session, principal.tenant_id, [customer_id_or_key])
        if customer_id_or_key not in deleted:
            raise
        view = deleted[customer_id_or_key]
    return Json(customer_out(view))


@router.put("/v1/customers/{customer_id_or_key}")
async def replace_customer(
    customer_id_or_key: str, body: CustomerIn, principal: Admin, session: WriteSession
) -> Json:
    """A replace: optional fields left out are cleared; subject keys are kept when
    `usageAttribution` is left out. The key cannot change."""
    tenant_id = principal.tenant_id
    with openmeter_fields(CUSTOMER_FIELDS):
        current = await customers.find(session, tenant_id, customer_id_or_key)
        if body.key is not None and body.key != current.key:
            raise ValidationFailed.on("key", "cannot be changed")
        subjects = {} if body.usage_attribution is None else {"subject_keys": body.usage_attribution.subject_keys}
        data = CustomerUpdate.model_validate({
            "name": body.name,
            "description": body.description,
            "email": body.primary_email,
            "currency": body.currency,
            "billing_address": body.address(),
            "metadata": body.metadata or {},
            **subjects,  # left out: kept
        })
        view = await customers.update(session, tenant_id, current.id, data, actor=principal.key_id, at=utcnow())
    return Json(customer_out(view))


@router.delete("/v1/customers/{customer_id_or_key}", status_code=204)
async def delete_customer(
    customer_id_or_key: str, principal: Admin, session: WriteSession
) -> Response:
    """As in OpenMeter, a customer with live entitlements is not deleted (409): they would
    stay behind, spending and listed, for a customer no one can address any more."""
    at = utcnow()
    customer = await customers.find(session, principal.tenant_id, customer_id_or_key)
    await references.refuse_customer_in_use(session, principal.tenant_id, customer.id, customer.key, at=at)
    live = sorted({row.public_id for row in await provisioning.open_rows(session, principal.tenant_id, customer.id, at)})
    if live:
        listed = ", ".join(f"'{e}'" for e in live)
        raise Conflict(f"customer '{customer.key}' still has active entitlements ({listed}): delete them first")
    await customers.delete_(session, principal.tenant_id, customer_id_or_key, actor=principal.key_id, at=at)
    return Response(status_code=204)


# --- subjects ----------------------------------------------------------------------------------


@router.post("/v1/subjects")
async def upsert_subjects(
    body: list[SubjectUpsertIn], principal: Admin, session: WriteSession
) -> Json:
    """Creates each subject, or updates the fields sent of one that exists (a field left out
    is kept, one sent as null is cleared), as OpenMeter does; answers 200 with them."""
    at, out = utcnow(), []
    for item in body:
        out.append(subject_out(await _upsert_subject(session, principal.tenant_id, item, at)))
    return Json(out)


async def _upsert_subject(session: AsyncSession, tenant_id: str, item: SubjectUpsertIn, at: datetime) -> Subject:
    """Upserts racing to create one subject both find none, and the database refuses the
    second insert: that one then updates the subject the first made, as an upsert sent just
    after it would. The savepoint keeps the transaction usable after the refusal."""
    try:
        async with session.begin_nested():
            data = await _merged(session, tenant_id, item)
            return await customers.upsert_subject(session, tenant_id, data, at=at)
    except IntegrityError:
        data = await _merged(session, tenant_id, item)
        return await customers.upsert_subject(session, tenant_id, data, at=at)


_SUBJECT_FIELDS = ("display_name", "metadata", "stripe_customer_id", "current_period_start", "current_period_end")


async def _merged(session: AsyncSession, tenant_id: str, item: SubjectUpsertIn) -> SubjectUpsert:
    """The subject as it will be: the fields sent, and the stored values of those left out."""
    sent = {name: getattr(item, name) for name in item.model_fields_set & set(_SUBJECT_FIELDS)}
    sent |= {name: utc(sent[name]) for name in ("current_period_start", "current_period_end") if name in sent}
    try:
        current: Subject | None = await customers.get_subject(session, tenant_id, item.key)
    except NotFound:
        current = None
    kept = {}
    if current is not None and current.key == item.key:  # `get_subject` also finds a subject by id
        kept = {name: getattr(current, "metadata_" if name == "metadata" else name) for name in _SUBJECT_FIELDS}
    return SubjectUpsert.model_validate({"key": item.key, **kept, **sent})


@router.get("/v1/subjects")
async def list_subjects(principal: Reader, session: ReadSession) -> Json:
    return Json(
        [subject_out(s) for s in await customers.list_subjects(session, principal.tenant_id)]
    )


# `:path` because a subject key may contain `/` (sent as %2F, which is decoded before routing).
# The key or the subject's id, as OpenMeter's `subjectIdOrKey`.
@router.get("/v1/subjects/{subject_key:path}")
async def get_subject(subject_key: str, principal: Reader, session: ReadSession) -> Json:
    return Json(subject_out(await customers.get_subject(session, principal.tenant_id, subject_key)))


@router.delete("/v1/subjects/{subject_key:path}", status_code=204)
async def delete_subject(subject_key: str, principal: Admin, session: WriteSession) -> Response:
    await customers.delete_subject(session, principal.tenant_id, subject_key)
    return Response(status_code=204)


# --- shared with the event and meter adapters --------------------------------------------------


async def customer_ids(session: AsyncSession, tenant_id: str, keys: set[str]) -> dict[str, str]:
    """Customer key -> id. Attribution is by key; OpenMeter clients are answered with ids."""
    out = {}
    for key in sorted(keys):
        try:
            out[key] = (await customers.find(session, tenant_id, key)).id
        except NotFound:
            continue  # deleted since the events were attributed: leave it out
    return out


async def known_customers(session: AsyncSession, tenant_id: str, refs: list[str]) -> list[str]:
    """The customers named (by id or key) that exist: as OpenMeter, a filter naming an unknown
    customer matches nothing of it rather than being refused."""
    out = []
    for ref in dict.fromkeys(refs):
        try:
            out.append((await customers.find(session, tenant_id, ref)).id)
        except NotFound:
            continue
    return out


@contextmanager
def unknown_customer_is_invalid(field: str) -> Iterator[None]:
    """A customer named in a filter that does not exist is bad input, not a missing resource
    (the SDK would report a 404 on a meter query as "meter not found")."""
    try:
        yield
    except NotFound as exc:
        if exc.kind != "customer":
            raise
        raise ValidationFailed.on(field, f"customer '{exc.key}' not found") from None
