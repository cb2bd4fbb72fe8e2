"""Request dependencies: the unit of work, the caller's identity and scope, pagination."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Request
from fastapi.dependencies.models import Dependant
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import State

from allotment.config import Settings
from allotment.db import Database
from allotment.errors import (
    FieldError,
    Forbidden,
    MalformedRequest,
    Unauthenticated,
    ValidationFailed,
)
from allotment.tenancy import service as tenancy
from allotment.tenancy.service import Principal, Scope


def database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def settings(request: Request) -> Settings:
    value: Settings = request.app.state.settings
    return value


async def _write_session(request: Request) -> AsyncIterator[AsyncSession]:
    # Committed when the endpoint returns, before the response is sent: acknowledged = durable.
    async with database(request).transaction() as session:
        yield session


async def _read_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with database(request).transaction(readonly=True) as session:
        yield session


async def _database(request: Request) -> Database:
    return database(request)  # as an async dependency: a plain one would run in a thread


Db = Annotated[Database, Depends(_database)]
WriteSession = Annotated[AsyncSession, Depends(_write_session, scope="function")]
ReadSession = Annotated[AsyncSession, Depends(_read_session, scope="function")]

# Which scopes may do what: admin everything, ingest sends usage, read only reads. What both
# the readers and the senders of usage need to see (reservations) is open to any key.
ALLOWED: dict[str, set[Scope]] = {
    "admin": {Scope.ADMIN},
    "ingest": {Scope.ADMIN, Scope.INGEST},
    "read": {Scope.ADMIN, Scope.READ},
    "any": set(Scope),
}


async def authenticate(request: Request) -> Principal:
    return await principal_of(request.headers.get("authorization", ""), request.app.state)


async def principal_of(header: str, state: State) -> Principal:
    """Who the `Authorization` header's key belongs to; `state` is the app's (db, settings)."""
    scheme, _, secret = header.partition(" ")
    if not header:
        raise Unauthenticated("missing Authorization header: send 'Authorization: Bearer <api key>'")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <api key>'")
    secret = secret.strip()
    known = tenancy.remembered(secret)  # most requests: no transaction at all
    if known is not None:
        principal, renew = known
        if renew:  # looked up again in the background, before it lapses: nobody waits for it
            _lookup(state, secret)
        return principal
    return await asyncio.shield(_lookup(state, secret))


# One lookup per key at a time: the requests that need a key looked up while a lookup is in
# flight wait for that one instead of each queueing a transaction.
_lookups: dict[str, asyncio.Future[Principal]] = {}


def _lookup(state: State, secret: str) -> asyncio.Future[Principal]:
    lookup = _lookups.get(secret)
    if lookup is None:
        lookup = _lookups[secret] = asyncio.ensure_future(_look_up(state, secret))
        lookup.add_done_callback(lambda done: _settled(secret, done))
    return lookup


def _settled(secret: str, lookup: asyncio.Future[Principal]) -> None:
    _lookups.pop(secret, None)
    if not lookup.cancelled():
        lookup.exception()  # a renewal nobody awaited fails quietly: the next request verifies


async def _look_up(state: State, secret: str) -> Principal:
    db: Database = state.db
    async with db.transaction(readonly=True) as session:
        return await tenancy.verify(session, secret, cache_seconds=state.settings.key_cache_seconds)


def require(need: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    async def dependency(request: Request) -> Principal:
        principal = await authenticate(request)
        if principal.scope not in ALLOWED[need]:
            raise Forbidden(f"this API key has scope '{principal.scope}'; this call needs '{need}'")
        return principal

    dependency.needs_key = True  # type: ignore[attr-defined]  # see known_query
    return dependency


Admin = Annotated[Principal, Depends(require("admin"))]
Reader = Annotated[Principal, Depends(require("read"))]
Ingester = Annotated[Principal, Depends(require("ingest"))]
AnyKey = Annotated[Principal, Depends(require("any"))]


R = TypeVar("R")
# A cursor is the list that returned it and a position in that list, `/v1/meters?after=<position>`
# in URL-safe base64: a position read by another list would page it from a meaningless place.
# Cursors handed out before they named their list are `after:<position>` and are still taken.
_AFTER = "?after="
_UNBOUND_MARK = "after:"


def encode_cursor(value: str, *, of: str) -> str:
    """A cursor after `value` in the list at path `of` (its route, as declared)."""
    return base64.urlsafe_b64encode(f"{of}{_AFTER}{value}".encode()).decode().rstrip("=")


def page(
    items: list[Any], rows: Sequence[R], *, limit: int, position: Callable[[R], object], of: str
) -> dict[str, object]:
    """A list answer: its items, and a cursor after the last row when the page is full."""
    full = len(rows) == limit
    return {"items": items, "next_cursor": encode_cursor(str(position(rows[-1])), of=of) if full else None}


def decode_cursor(cursor: str | None, *, of: str) -> str | None:
    """The position a cursor of the list `of` stands for; anything this list did not hand out is a 400."""
    if not cursor:
        return None
    try:
        text = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        text = ""
    if "\x00" in text:
        raise bad_cursor()
    if text.startswith(_UNBOUND_MARK):
        return text.removeprefix(_UNBOUND_MARK)
    owner, after, position = text.partition(_AFTER)
    if not after or not owner.startswith("/"):
        raise bad_cursor()
    if owner != of:
        raise bad_cursor(f"does not belong to this list: it was returned by GET {owner}")
    return position


def decode_seq_cursor(cursor: str | None, *, of: str) -> int | None:
    """The log position (`seq`) a cursor of a list in log order stands for."""
    position = decode_cursor(cursor, of=of)
    if position is None:
        return None
    if not position.isdigit():
        raise bad_cursor()
    return int(position)


def decode_pair_cursor(cursor: str | None, *, of: str) -> tuple[str, str] | None:
    """The (key, id) a cursor of a list in key order stands for (`pair_position` made it);
    keys and ids never hold a space."""
    position = decode_cursor(cursor, of=of)
    if position is None:
        return None
    key, space, id_ = position.partition(" ")
    if not space:
        raise bad_cursor()
    return key, id_


def pair_position(key: str, id_: str) -> str:
    return f"{key} {id_}"


def bad_cursor(reason: str = "is not a cursor this API returned") -> MalformedRequest:
    return MalformedRequest(f"cursor: {reason}", errors=[FieldError("cursor", reason)])


Limit = Annotated[int, Query(ge=1, le=1000, description="Page size (default 50, max 1000).")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]


# --- query parameters ------------------------------------------------------------------------

async def known_query(request: Request) -> None:
    """Refuse a query parameter the endpoint does not declare, naming it: a misspelt or
    unsupported filter would otherwise be ignored and the unfiltered answer taken for the
    filtered one. The key is judged first (401/403), so that a caller without one learns
    nothing of the endpoint's parameters."""
    if not request.query_params:
        return
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    declared: frozenset[str] | None = getattr(route, "_query_names", None)
    if declared is None:  # worked out once per route, kept with it
        declared = frozenset(_query_names(dependant))
        route._query_names = declared  # type: ignore[union-attr]
    unknown = sorted(set(request.query_params) - declared)
    if unknown:
        for key_check in _key_checks(dependant):
            await key_check(request)
        takes = ", ".join(sorted(declared)) or "none"
        raise ValidationFailed(
            f"unknown query parameter(s): {', '.join(unknown)}",
            errors=[FieldError(name, f"is not a parameter of this endpoint (it takes: {takes})") for name in unknown],
        )


def _key_checks(dependant: Dependant) -> Iterator[Callable[[Request], Awaitable[Principal]]]:
    """The API key checks (`require`) among an endpoint's dependencies."""
    for inner in dependant.dependencies:
        if getattr(inner.call, "needs_key", False):
            yield inner.call  # type: ignore[misc]
        yield from _key_checks(inner)


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameters an endpoint and its dependencies declare, by the name sent."""
    names = {p.alias for p in dependant.query_params}
    for inner in dependant.dependencies:
        names |= _query_names(inner)
    return names
