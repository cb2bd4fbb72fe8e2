"""Customers and the subject keys that attribute events to them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.customers.models import Customer, CustomerSubject, Subject
from allotment.customers.schemas import CustomerCreate, CustomerUpdate, SubjectUpsert
from allotment.db import flush_unique
from allotment.entitlements import audit
from allotment.errors import AlreadyExists, Conflict, NotFound, ValidationFailed
from allotment.types import new_id


@dataclass
class CustomerView:
    customer: Customer
    subject_keys: list[str]


async def _live(session: AsyncSession, tenant_id: str, key: str) -> Customer | None:
    found: Customer | None = await session.scalar(
        select(Customer).where(
            Customer.tenant_id == tenant_id,
            (Customer.key == key) | (Customer.id == key),
            Customer.deleted_at.is_(None),
        )
    )
    return found


async def get(session: AsyncSession, tenant_id: str, key: str) -> CustomerView:
    customer = await find(session, tenant_id, key)
    return CustomerView(customer, await _subject_keys(session, tenant_id, customer.id))


async def find(session: AsyncSession, tenant_id: str, key: str) -> Customer:
    """The live customer with this key or id, without its subjects (one query); else 404."""
    customer = await _live(session, tenant_id, key)
    if customer is None:
        raise NotFound("customer", key)
    return customer


async def keys_of(session: AsyncSession, tenant_id: str, ids: Iterable[str]) -> dict[str, str]:
    """customer id -> key, deleted customers included (their records still name them)."""
    rows = await session.execute(
        select(Customer.id, Customer.key).where(Customer.tenant_id == tenant_id, Customer.id.in_(set(ids)))
    )
    return {customer_id: key for customer_id, key in rows}


async def views_of(session: AsyncSession, tenant_id: str, ids: Iterable[str]) -> dict[str, CustomerView]:
    """customer id -> the customer and its subjects, deleted customers included (what they
    were entitled to still names them)."""
    rows = list(await session.scalars(
        select(Customer).where(Customer.tenant_id == tenant_id, Customer.id.in_(sorted(set(ids))))
    ))
    subjects = await _subjects_by_customer(session, tenant_id, [c.id for c in rows])
    return {c.id: CustomerView(c, subjects.get(c.id, [])) for c in rows}


async def _subject_keys(session: AsyncSession, tenant_id: str, customer_id: str) -> list[str]:
    rows = await session.scalars(
        select(CustomerSubject.subject_key)
        .where(CustomerSubject.tenant_id == tenant_id, CustomerSubject.customer_id == customer_id)
        .order_by(CustomerSubject.subject_key)
    )
    return list(rows)


async def _claim_subjects(
    session: AsyncSession, tenant_id: str, customer_id: str, keys: list[str]
) -> None:
    """Attach subjects; a subject owned by another customer is a conflict naming both."""
    for index, key in enumerate(keys):
        if not key or len(key) > 256:
            raise ValidationFailed.on(f"subject_keys[{index}]", "must be 1 to 256 characters")
    clean = sorted(set(keys))
    if not clean:
        return
    taken = await session.execute(
        select(CustomerSubject.subject_key, Customer.key)
        .join(Customer, Customer.id == CustomerSubject.customer_id)
        .where(
            CustomerSubject.tenant_id == tenant_id,
            CustomerSubject.subject_key.in_(clean),
            CustomerSubject.customer_id != customer_id,
        )
    )
    for subject_key, owner in taken:
        raise Conflict(f"subject '{subject_key}' already belongs to customer '{owner}'")
    mine = set(await _subject_keys(session, tenant_id, customer_id))
    for key in clean:
        if key not in mine:
            session.add(CustomerSubject(tenant_id=tenant_id, subject_key=key, customer_id=customer_id))


def _subject_raced() -> Conflict:
    return Conflict("a subject key was claimed by another customer at the same time; retry")


async def create(
    session: AsyncSession, tenant_id: str, data: CustomerCreate, *, at: datetime, actor: str = audit.SYSTEM
) -> CustomerView:
    if await _live(session, tenant_id, data.key) is not None:
        raise AlreadyExists("customer", data.key)
    customer = Customer(
        id=new_id("cus"),
        tenant_id=tenant_id,
        key=data.key,
        name=data.name,
        description=data.description,
        email=data.email,
        currency=data.currency,
        billing_address=None if data.billing_address is None else data.billing_address.stored(),
        metadata_=data.metadata,
        created_at=at,
        updated_at=at,
    )
    session.add(customer)
    # The check above cannot see a create still in flight: its unique key is what decides.
    await flush_unique(session, AlreadyExists("customer", data.key))
    await _claim_subjects(session, tenant_id, customer.id, data.subject_keys)
    await flush_unique(session, _subject_raced())
    view = await get(session, tenant_id, customer.id)
    await _audit(session, "customer.created", None, view, actor=actor, at=at)
    return view


async def update(
    session: AsyncSession, tenant_id: str, key: str, data: CustomerUpdate, *, at: datetime,
    actor: str = audit.SYSTEM,
) -> CustomerView:
    before = await get(session, tenant_id, key)
    was = _snapshot(before)
    customer = before.customer
    changes = data.model_dump(exclude_unset=True)
    for name in ("name", "description", "email", "currency"):
        if name in changes and not (name == "name" and changes[name] is None):
            setattr(customer, name, changes[name])
    if changes.get("metadata") is not None:
        customer.metadata_ = changes["metadata"]
    if "billing_address" in changes:
        customer.billing_address = None if data.billing_address is None else data.billing_address.stored()
    if data.subject_keys is not None:
        await session.execute(
            delete(CustomerSubject).where(
                CustomerSubject.tenant_id == tenant_id,
                CustomerSubject.customer_id == customer.id,
                CustomerSubject.subject_key.not_in(data.subject_keys),
            )
        )
        await _claim_subjects(session, tenant_id, customer.id, data.subject_keys)
    customer.updated_at = at
    await flush_unique(session, _subject_raced())
    view = await get(session, tenant_id, customer.id)
    await _audit(session, "customer.updated", was, view, actor=actor, at=at)
    return view


async def delete_(
    session: AsyncSession, tenant_id: str, key: str, *, at: datetime, actor: str = audit.SYSTEM
) -> None:
    """Soft-delete; its subjects are released so that their events become unattributed."""
    view = await get(session, tenant_id, key)
    was = _snapshot(view)
    customer = view.customer
    customer.deleted_at = at
    await session.execute(
        delete(CustomerSubject).where(
            CustomerSubject.tenant_id == tenant_id, CustomerSubject.customer_id == customer.id
        )
    )
    await session.flush()
    await audit.record(session, tenant_id, actor=actor, action="customer.deleted", entity_type="customer",
                       entity_id=customer.id, before=was, after=None, at=at)


def _snapshot(view: CustomerView) -> dict[str, Any] | None:
    """The customer as the audit log keeps it: its columns and the subjects it owns."""
    return (audit.snapshot(view.customer) or {}) | {"subject_keys": list(view.subject_keys)}


async def _audit(session: AsyncSession, action: str, before: dict[str, Any] | None, after: CustomerView, *,
                 actor: str, at: datetime) -> None:
    await audit.record(session, after.customer.tenant_id, actor=actor, action=action, entity_type="customer",
                       entity_id=after.customer.id, before=before, after=_snapshot(after), at=at)


async def list_(
    session: AsyncSession, tenant_id: str, *, after: str | None, limit: int, offset: int = 0,
    include_deleted: bool = False,
) -> list[CustomerView]:
    """Live customers in id order; with `include_deleted`, deleted ones too (owning no subjects)."""
    stmt = select(Customer).where(Customer.tenant_id == tenant_id)
    if not include_deleted:
        stmt = stmt.where(Customer.deleted_at.is_(None))
    if after:
        stmt = stmt.where(Customer.id > after)
    rows = list(await session.scalars(stmt.order_by(Customer.id).offset(offset).limit(limit)))
    subjects = await _subjects_by_customer(session, tenant_id, [c.id for c in rows])
    return [CustomerView(c, subjects.get(c.id, [])) for c in rows]


async def count(session: AsyncSession, tenant_id: str, *, include_deleted: bool = False) -> int:
    stmt = select(func.count()).select_from(Customer).where(Customer.tenant_id == tenant_id)
    if not include_deleted:
        stmt = stmt.where(Customer.deleted_at.is_(None))
    return int(await session.scalar(stmt) or 0)


async def _subjects_by_customer(
    session: AsyncSession, tenant_id: str, customer_ids: list[str]
) -> dict[str, list[str]]:
    if not customer_ids:
        return {}
    rows = await session.execute(
        select(CustomerSubject.customer_id, CustomerSubject.subject_key)
        .where(CustomerSubject.tenant_id == tenant_id, CustomerSubject.customer_id.in_(customer_ids))
        .order_by(CustomerSubject.subject_key)
    )
    out: dict[str, list[str]] = {}
    for customer_id, subject_key in rows:
        out.setdefault(customer_id, []).append(subject_key)
    return out


async def subjects_of(session: AsyncSession, tenant_id: str, customer_keys: list[str]) -> list[str]:
    """Subjects owned by the given customers (by key or id); unknown customers are a 404."""
    out: list[str] = []
    for key in customer_keys:
        out += (await get(session, tenant_id, key)).subject_keys
    return out


async def owners_of_subjects(
    session: AsyncSession, tenant_id: str, subjects: list[str] | None
) -> dict[str, str]:
    """subject key -> owning customer's key (for every subject when `subjects` is None)."""
    stmt = (
        select(CustomerSubject.subject_key, Customer.key)
        .join(Customer, Customer.id == CustomerSubject.customer_id)
        .where(CustomerSubject.tenant_id == tenant_id)
    )
    if subjects is None:
        return {subject: key for subject, key in await session.execute(stmt)}
    owners: dict[str, str] = {}
    for i in range(0, len(subjects), _IN_CHUNK):  # each database caps a statement's parameters
        chunk = stmt.where(CustomerSubject.subject_key.in_(subjects[i : i + _IN_CHUNK]))
        owners.update({subject: key for subject, key in await session.execute(chunk)})
    return owners


_IN_CHUNK = 10_000


async def owner_of_subject(session: AsyncSession, tenant_id: str, ref: str) -> tuple[str, CustomerView]:
    """The subject named by `ref` (its key, else the id the subjects list gave it) and the live
    customer owning it. A subject no customer owns is a 404 naming it: it has no entitlements
    of its own, and none are made for it implicitly."""
    by_id = await session.scalar(select(Subject.key).where(Subject.tenant_id == tenant_id, Subject.id == ref))
    for key in dict.fromkeys(k for k in (ref, by_id) if k is not None):
        owners = await owners_of_subjects(session, tenant_id, [key])
        if key in owners:
            return key, await get(session, tenant_id, owners[key])
    raise NotFound("subject", ref, detail=f"subject '{ref}' belongs to no customer")


async def upsert_subject(session: AsyncSession, tenant_id: str, data: SubjectUpsert, *, at: datetime) -> Subject:
    subject = await session.get(Subject, (tenant_id, data.key))
    if subject is None:
        subject = Subject(tenant_id=tenant_id, key=data.key, id=new_id("sbj"), created_at=at)
        session.add(subject)
    subject.display_name = data.display_name
    subject.metadata_ = data.metadata
    subject.stripe_customer_id = data.stripe_customer_id
    subject.current_period_start = data.current_period_start
    subject.current_period_end = data.current_period_end
    subject.updated_at = at
    await session.flush()
    return subject


async def list_subjects(session: AsyncSession, tenant_id: str) -> list[Subject]:
    return list(
        await session.scalars(select(Subject).where(Subject.tenant_id == tenant_id).order_by(Subject.key))
    )


async def get_subject(session: AsyncSession, tenant_id: str, ref: str) -> Subject:
    """The subject named by `ref`: its key, else the id the subjects list gave it. Only subjects
    made through the subjects API exist here; events alone make none (nor does OpenMeter)."""
    subject = await session.get(Subject, (tenant_id, ref))
    if subject is None:
        subject = await session.scalar(select(Subject).where(Subject.tenant_id == tenant_id, Subject.id == ref))
    if subject is None:
        raise NotFound("subject", ref)
    return subject


async def delete_subject(session: AsyncSession, tenant_id: str, ref: str) -> None:
    await session.delete(await get_subject(session, tenant_id, ref))
