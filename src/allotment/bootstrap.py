"""First start: a default tenant and its first admin key, created once."""

from __future__ import annotations

from allotment.db import Database
from allotment.tenancy import service as tenancy
from allotment.types import utcnow


async def ensure_default_tenant(db: Database, *, first_key: bool = True) -> tuple[str, str | None]:
    """Returns the default tenant's id, and a new admin secret if it was just created (none
    without `first_key`: a caller making its own key shows that one instead)."""
    async with db.transaction() as session:
        tenant = await tenancy.first_tenant(session)
        if tenant is not None:
            return tenant.id, None
        now = utcnow()
        tenant = await tenancy.create_tenant(session, "default", at=now)
        if not first_key:
            return tenant.id, None
        _, secret = await tenancy.create_key(session, tenant.id, scope="admin", name="first admin key", at=now)
        return tenant.id, secret
