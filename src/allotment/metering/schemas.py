"""API shapes of the metering domain (separate from the tables in models.py)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator
from pydantic.config import JsonDict

from allotment.metering.aggregation import Aggregation
from allotment.metering.bounded import MAX_GROUP_NAMES_CHARS, MAX_GROUPS
from allotment.types import AwareInstant, NotNull, TextMetadata

KEY_PATTERN = r"^[a-z0-9][a-z0-9_\-]{0,63}$"
GROUP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
RESERVED_GROUPS = {"subject", "customer", "customer_id", "customer_key"}


def checked_group_names(value: dict[str, str]) -> dict[str, str]:
    """Group names as a meter may have them (on create and on update alike)."""
    # A cell's group values share one bounded key: these leave each value room (bounded.py).
    if len(value) > MAX_GROUPS:
        raise ValueError(f"at most {MAX_GROUPS} group names are allowed")
    if sum(map(len, value)) > MAX_GROUP_NAMES_CHARS:
        raise ValueError(f"group names may have at most {MAX_GROUP_NAMES_CHARS} characters together")
    for name in value:
        if not GROUP_NAME.match(name):
            raise ValueError(f"group name '{name}' must be letters, digits and underscores")
        if name in RESERVED_GROUPS:
            raise ValueError(f"group name '{name}' is reserved")
    return value


# The names `checked_group_names` takes, as the schema states them (all but their total length).
GROUP_BY_SCHEMA: JsonDict = {
    "maxProperties": MAX_GROUPS,
    "propertyNames": {"pattern": GROUP_NAME.pattern, "not": {"enum": [*sorted(RESERVED_GROUPS)]}},
}


AGGREGATION_DESCRIPTION = (
    "How the values of a window's events make one number: SUM, COUNT (events), MIN, MAX, AVG,"
    " UNIQUE_COUNT (distinct values, exact) or LATEST (the value of the latest event by time; of"
    " events at the same time, the last to arrive of one subject and group, the greatest across them)."
)
_GROUP_BY_DESCRIPTION = (
    f"Group name -> JSONPath into data; at most {MAX_GROUPS} names, {MAX_GROUP_NAMES_CHARS} characters together."
)


class MeterFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    property: str = Field(description="JSONPath into the event's data, e.g. `$.region`.")
    op: Literal["eq", "ne", "in", "not_in", "exists"] = Field(
        "eq", description="eq, ne: equal or not to `value` (a missing property is `ne` anything); in, not_in:"
        " among `value`, a list, or not; exists: present when `value` is true, absent when false."
    )
    value: Any = Field(None, description="What the property is compared with (JSON: `1` is not `true`).")

    @field_validator("value")
    @classmethod
    def _list_for_in(cls, value: Any, info: Any) -> Any:
        op = info.data.get("op")
        if op in ("in", "not_in") and not isinstance(value, list):
            raise ValueError(f"must be a list for op '{op}'")
        return value


_FILTERS_DESCRIPTION = "Conditions on the event's data, all of which an event must meet to count."


_EVENT_FROM_DESCRIPTION = (
    "Count only the events whose time is at or after this instant (default: every event): older ones"
    " are stored, listed and left out by this meter, whether stored before it was made or reported late."
)


_METADATA_DESCRIPTION = "The vendor's own key-values, text to text, answered as sent (OpenMeter's meter metadata)."


class MeterCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=KEY_PATTERN, description="Slug, unique per tenant.")
    name: str | None = Field(default=None, max_length=256, description="Display name; the key when left out.")
    description: str | None = Field(default=None, max_length=1024, description="Free text.")
    event_type: str = Field(min_length=1, max_length=256, description="The `type` of the events it counts.")
    aggregation: Aggregation = Field(description=AGGREGATION_DESCRIPTION)
    value_property: str | None = Field(
        default=None, max_length=256, description="JSONPath into data; not used by COUNT."
    )
    group_by: dict[str, str] = Field(default_factory=dict, description=_GROUP_BY_DESCRIPTION,
                                     json_schema_extra=GROUP_BY_SCHEMA)
    filters: list[MeterFilter] = Field(default_factory=list, description=_FILTERS_DESCRIPTION)
    event_from: AwareInstant | None = Field(default=None, description=_EVENT_FROM_DESCRIPTION)
    metadata: TextMetadata | None = Field(default=None, description=_METADATA_DESCRIPTION)

    @field_validator("group_by")
    @classmethod
    def _group_names(cls, value: dict[str, str]) -> dict[str, str]:
        return checked_group_names(value)


class MeterUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str | None, NotNull] = Field(default=None, max_length=256, description="Display name.")
    description: str | None = Field(default=None, max_length=1024, description="Free text; null clears it.")
    group_by: Annotated[dict[str, str] | None, NotNull] = Field(
        default=None,
        description=_GROUP_BY_DESCRIPTION + " A change regroups the meter's whole history (its rollups"
        " are rebuilt from the stored events); a group a feature filters on cannot be removed or changed.",
        json_schema_extra=GROUP_BY_SCHEMA,
    )
    metadata: Annotated[TextMetadata | None, NotNull] = Field(
        default=None, description=_METADATA_DESCRIPTION + " Replaces the meter's; `{}` clears it."
    )

    @field_validator("group_by")
    @classmethod
    def _group_names(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else checked_group_names(value)


class MeterRead(BaseModel):
    id: str = Field(description="Opaque id (`mtr_…`); the meter may be addressed by it or by its key.")
    key: str = Field(description="Slug, unique per tenant.")
    name: str = Field(description="Display name.")
    description: str | None = Field(description="Free text.")
    event_type: str = Field(description="The `type` of the events it counts.")
    aggregation: Aggregation = Field(description=AGGREGATION_DESCRIPTION)
    value_property: str | None = Field(description="JSONPath into data of the value aggregated; null for COUNT.")
    group_by: dict[str, str] = Field(description="Group name -> JSONPath into data.")
    filters: list[MeterFilter] = Field(description=_FILTERS_DESCRIPTION)
    event_from: datetime | None = Field(description=_EVENT_FROM_DESCRIPTION)
    metadata: dict[str, str] | None = Field(
        validation_alias=AliasChoices("metadata_", "metadata"), description=_METADATA_DESCRIPTION + " Null: none."
    )
    created_at: datetime = Field(description="When it was created.")
    updated_at: datetime = Field(description="When it was last changed.")


class MeterCreated(MeterRead):
    backfilled_events: int = Field(description="Stored events the new meter counted at creation.")


class QueryRow(BaseModel):
    window_start: datetime = Field(
        description="Start of the whole window (a boundary in `window_time_zone`), even when `from` falls inside it."
    )
    window_end: datetime = Field(
        description="End of the whole window, even when `to` falls inside it; a DST day is 23 or 25 hours."
    )
    value: float | int | None = Field(
        description="The aggregate of the window's events within [`from`, `to`): 0 for SUM, COUNT and"
        " UNIQUE_COUNT without events, null for MIN, MAX, AVG and LATEST; an exact decimal number."
    )
    subject: str | None = Field(
        None, description="The subject, when grouped by `subject` or filtered by one subject; else null."
    )
    customer: str | None = Field(
        None, description="The customer's key, when grouped by `customer` (null for subjects of no customer)"
        " or filtered by one customer; else null. Subjects count for the customer owning them now."
    )
    group_by: dict[str, str | None] = Field(
        default_factory=dict,
        description="The value of each group the query groups by (but subject and customer); null where"
        " the events lack it. Numbers and flags as their JSON text.",
    )


class QueryResult(BaseModel):
    meter: str = Field(description="The meter's key.")
    aggregation: Aggregation = Field(description=AGGREGATION_DESCRIPTION)
    window_size: str | None = Field(description="MINUTE, HOUR, DAY or MONTH; null: one row for the whole range.")
    window_time_zone: str = Field(description="The IANA time zone the windows are aligned in.")
    from_: datetime | None = Field(
        alias="from", description="Start of the range as asked; null when left out (the meter's first event)."
    )
    to: datetime | None = Field(description="End of the range (exclusive): as asked, else when the query ran.")
    data: list[QueryRow] = Field(
        description="Rows by window, then subject, customer and group values. Ungrouped: one row per window,"
        " empty ones included; grouped: rows for the groups with events only."
    )

    model_config = ConfigDict(populate_by_name=True)


class EventRead(BaseModel):
    """A stored event as it was sent, and what it counts towards."""

    id: str = Field(description="The event's id as its sender gave it; with `source`, it is counted once.")
    source: str = Field(description="Who sent it (CloudEvents `source`).")
    type: str = Field(description="The event type meters select events by.")
    subject: str = Field(description="The subject key, which names the customer.")
    time: datetime = Field(description="When the usage happened: the event's `time`, else when it arrived.")
    received_at: datetime = Field(description="When it was stored.")
    data: dict[str, Any] | None = Field(description="Its data as sent, numbers exact; null when it had none.")
    customer: str | None = Field(description="Key of the customer owning the subject, if any.")
    meters: list[str] = Field(description="Keys of the meters this event counts towards.")
    status: Literal["counted", "unattributed"] = Field(
        description="counted: a customer and at least one meter; unattributed: not both (see `problems`)."
    )
    problems: list[str] = Field(
        default_factory=list,
        description="Why the event is unattributed, or which meters could not use it.",
    )
    duplicates: int = Field(0, description="How many times the same source and id arrived again (not counted).")
    last_duplicate_at: datetime | None = Field(None, description="When the last of those arrived.")


class RejectedRead(BaseModel):
    """An event ingest refused, kept for operators."""

    received_at: datetime = Field(description="When the request that sent it arrived.")
    index: int = Field(description="Its position in that request's batch, from 0.")
    field: str | None = Field(description="The field at fault; null when the event as a whole was refused.")
    reason: str = Field(description="Why it was refused.")
    raw: str = Field(description="The event as sent, cut at 4,096 characters; empty when it could not be kept.")


class IngestError(BaseModel):
    index: int = Field(description="The event's position in the request's batch, from 0.")
    field: str | None = Field(description="The field at fault (e.g. `data.tokens`); null for the event as a whole.")
    message: str = Field(description="Why it was refused.")


class IngestSummary(BaseModel):
    accepted: int = Field(description="Events stored and counted by this request.")
    duplicates: int = Field(description="Events already stored (same source and id): not counted again.")
    rejected: int = Field(description="Events refused (not stored); each is in `errors`.")
    errors: list[IngestError] = Field(description="The refused events, by index.")

