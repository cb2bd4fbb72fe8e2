from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from allotment.types import AwareInstant, Metadata, NotNull

KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,255}$"
SubjectKey = Annotated[str, Field(min_length=1, max_length=256)]


class Address(BaseModel):
    """Where the customer is billed; every part optional, kept and answered as sent."""

    model_config = ConfigDict(extra="forbid")

    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2 code.")
    postal_code: str | None = Field(default=None, max_length=64)
    state: str | None = Field(default=None, max_length=256)
    city: str | None = Field(default=None, max_length=256)
    line1: str | None = Field(default=None, max_length=256)
    line2: str | None = Field(default=None, max_length=256)
    phone_number: str | None = Field(default=None, max_length=64)

    def stored(self) -> dict[str, str]:
        return self.model_dump(exclude_none=True)


class CustomerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=KEY_PATTERN, description="The vendor's own id for the customer.")
    name: str = Field(min_length=1, max_length=256)
    description: str | None = Field(default=None, max_length=1024)
    email: str | None = Field(default=None, max_length=320)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    billing_address: Address | None = None
    metadata: Metadata = Field(default_factory=dict)
    subject_keys: list[SubjectKey] = Field(
        default_factory=list,
        description="Subjects whose events belong to this customer (unique per tenant).",
    )


class CustomerUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str | None, NotNull] = Field(default=None, min_length=1, max_length=256)
    description: str | None = Field(default=None, max_length=1024)
    email: str | None = Field(default=None, max_length=320)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    billing_address: Address | None = Field(default=None, description="Replaces the whole address; null clears it.")
    metadata: Annotated[Metadata | None, NotNull] = None
    subject_keys: Annotated[list[SubjectKey] | None, NotNull] = None


class CustomerRead(BaseModel):
    id: str
    key: str
    name: str
    description: str | None
    email: str | None
    currency: str | None
    billing_address: Address | None
    metadata: dict[str, Any]
    subject_keys: list[str]
    created_at: datetime
    updated_at: datetime


class SubjectUpsert(BaseModel):
    key: str = Field(min_length=1, max_length=256)
    display_name: str | None = Field(default=None, max_length=256)
    metadata: dict[str, Any] | None = None
    stripe_customer_id: str | None = Field(default=None, max_length=256)
    current_period_start: AwareInstant | None = None
    current_period_end: AwareInstant | None = None
