from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from allotment.types import Metadata, NotNull

KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,255}$"
SubjectKey = Annotated[str, Field(min_length=1, max_length=256)]


class CustomerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=KEY_PATTERN, description="The vendor's own id for the customer.")
    name: str = Field(min_length=1, max_length=256)
    description: str | None = Field(default=None, max_length=1024)
    email: str | None = Field(default=None, max_length=320)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
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
    metadata: Annotated[Metadata | None, NotNull] = None
    subject_keys: Annotated[list[SubjectKey] | None, NotNull] = None


class CustomerRead(BaseModel):
    id: str
    key: str
    name: str
    description: str | None
    email: str | None
    currency: str | None
    metadata: dict[str, Any]
    subject_keys: list[str]
    created_at: datetime
    updated_at: datetime


class SubjectUpsert(BaseModel):
    key: str = Field(min_length=1, max_length=256)
    display_name: str | None = Field(default=None, max_length=256)
    metadata: dict[str, Any] | None = None
