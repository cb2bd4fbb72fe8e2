"""Customers (`/v1/customers`)."""

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
from allotment.customers import service
from allotment.customers.schemas import Address, CustomerCreate, CustomerRead, CustomerUpdate
from allotment.entitlements import references
from allotment.types import utcnow

router = APIRouter(prefix="/v1/customers", tags=["customers"])
_LIST = "/v1/customers"


def customer_read(view: service.CustomerView) -> CustomerRead:
    c = view.customer
    return CustomerRead(
        id=c.id, key=c.key, name=c.name, description=c.description, email=c.email,
        currency=c.currency, billing_address=None if c.billing_address is None else Address(**c.billing_address), metadata=c.metadata_, subject_keys=view.subject_keys,
        created_at=c.created_at, updated_at=c.updated_at,
    )


@router.post("", status_code=201, response_model=CustomerRead)
async def create_customer(data: CustomerCreate, principal: Admin, session: WriteSession, idem: Idempotent) -> Response:
    return await idem.respond(201, customer_read(await service.create(session, principal.tenant_id, data, actor=principal.key_id, at=utcnow())))


@router.get("", response_model=Page[CustomerRead])
async def list_customers(principal: Reader, session: ReadSession, limit: Limit = 50, cursor: Cursor = None) -> dict[str, object]:
    rows = await service.list_(session, principal.tenant_id, after=decode_cursor(cursor, of=_LIST), limit=limit)
    return page(
        [customer_read(v) for v in rows],
        rows, limit=limit, position=lambda r: r.customer.id, of=_LIST,
    )


@router.get("/{customer_key}", response_model=CustomerRead)
async def get_customer(customer_key: str, principal: Reader, session: ReadSession) -> CustomerRead:
    return customer_read(await service.get(session, principal.tenant_id, customer_key))


@router.patch("/{customer_key}", response_model=CustomerRead)
async def update_customer(customer_key: str, data: CustomerUpdate, principal: Admin, session: WriteSession) -> CustomerRead:
    return customer_read(await service.update(session, principal.tenant_id, customer_key, data, actor=principal.key_id, at=utcnow()))


@router.delete("/{customer_key}", status_code=204)
async def delete_customer(customer_key: str, principal: Admin, session: WriteSession) -> Response:
    at = utcnow()
    customer = await service.find(session, principal.tenant_id, customer_key)
    await references.refuse_customer_in_use(session, principal.tenant_id, customer.id, customer_key, at=at)
    await service.delete_(session, principal.tenant_id, customer_key, actor=principal.key_id, at=at)
    return Response(status_code=204)
