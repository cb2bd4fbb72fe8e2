"""Real-time checks (`/v1/check`) and the denials they recorded (`/v1/denials`)."""

from __future__ import annotations

from time import perf_counter
from typing import Annotated

import pydantic
from fastapi import APIRouter, Query, Request, Response
from starlette.datastructures import State
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from allotment import codec
from allotment.api import access_log, errors
from allotment.api.body import problem_in, read_limited
from allotment.api.deps import (
    ALLOWED,
    Cursor,
    Limit,
    Reader,
    ReadSession,
    decode_cursor,
    page,
    principal_of,
)
from allotment.api.idempotency import HEADER, one_idempotency_key
from allotment.api.pages import Page
from allotment.customers import service as customers
from allotment.db import Database
from allotment.entitlements import check as service
from allotment.entitlements import fastpath, features, upsell_hint
from allotment.entitlements.engine import Verdict
from allotment.entitlements.schemas import (
    CheckIn,
    CheckRead,
    DenialRead,
    UpsellHintRead,
)
from allotment.errors import Forbidden, MalformedRequest, PayloadTooLarge, ValidationFailed
from allotment.types import AwareInstant, utcnow

router = APIRouter(tags=["check"])
_LIST = "/v1/denials"


def check_body(result: service.CheckResult, upsell: UpsellHintRead | None = None) -> bytes:
    """The `CheckRead` document of an answer, written straight to JSON: building the model
    first would cost more than the check."""
    d, number = result.decision, codec.optional_number
    return codec.render({
        "decision": d.decision.value, "reason": str(d.reason), "usage": number(d.usage),
        "included": number(d.included), "soft_limit": number(d.soft_limit),
        "hard_limit": number(d.hard_limit), "balance": number(d.balance),
        "overage": number(d.overage), "period_start": result.period_start,
        "period_end": result.period_end, "config": None if d.config is None else dict(d.config),
        "upsell": None if upsell is None else upsell.model_dump(mode="json"),
    })


def _check_in(body: bytes, content_type: str | None) -> CheckIn:
    declared_other = content_type is not None and not content_type.startswith("application/json")
    if declared_other and (bad := problem_in(body, content_type)) is not None:
        raise bad  # a body declared as another media type: the 415 any endpoint answers
    if b"\\u0000" in body and (bad := problem_in(body, None)) is not None:
        raise bad  # the answer any endpoint gives, whatever the backend
    try:
        return CheckIn.model_validate_json(body)
    except pydantic.ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise MalformedRequest.body("is not valid JSON") from None
        raise  # a 422 naming each field


@router.post(
    "/v1/check",
    response_model=CheckRead,
    responses={415: {"description": "The body is not sent as JSON (`Content-Type: application/json`)"}},
    openapi_extra={
        "requestBody": {
            "required": True, "content": {"application/json": {"schema": CheckIn.model_json_schema()}},
        },
        # The endpoint reads its headers itself (no dependency declares this one).
        "parameters": [{"name": HEADER, "in": "header", "required": False, "schema": {"type": "string"},
                        "description": "A consume retried with the same key and body gets the first "
                        "answer again (`Idempotent-Replayed: true`); the same key with another request "
                        "is a 409. Same as `idempotency_key` in the body."}],
    },
)
async def check(request: Request) -> Response:
    """May the customer use `quantity` of the feature now? With `consume`, use it atomically.

    Any key may check; consuming needs an `ingest` or `admin` key.
    """
    headers, state = request.headers, request.app.state
    body, replayed = await _answer(state, headers.get("authorization", ""), headers.get("idempotency-key"),
                                   await read_limited(request, state.settings.max_body_bytes),
                                   headers.get("content-type"))
    return Response(body, media_type="application/json",
                    headers={"Idempotent-Replayed": "true"} if replayed else None)


async def _answer(state: State, authorization: str, idempotency_key: str | None,
                  body: bytes, content_type: str | None = None) -> tuple[bytes, bool]:
    """The answer's JSON, and whether it replays an earlier consume's."""
    # The hottest endpoint reads its key, body and database itself: resolving dependencies
    # and a body model per request costs more than the check.
    principal = await principal_of(authorization, state)
    data = _check_in(body, content_type)
    if data.consume and principal.scope not in ALLOWED["ingest"]:
        raise Forbidden(f"this API key has scope '{principal.scope}'; consuming needs 'ingest'")
    key = one_idempotency_key(data.idempotency_key, idempotency_key)
    request_ = service.CheckRequest(data.customer, data.feature, data.quantity, data.consume, key)
    db: Database = state.db
    at = utcnow()
    result = await fastpath.check(db, principal.tenant_id, request_, at)
    if result is None:
        async with db.transaction() as session:
            result = await service.check(session, principal.tenant_id, request_, at=at)
    hint = None
    if result.decision.decision is not Verdict.ALLOW:  # an allow never pays for a hint
        # A replay projects from the moment of the first answer, so that it is the same.
        hint = await upsell_hint.hint(db, principal.tenant_id, request_, result, at=result.decided_at or at)
    return check_body(result, hint), result.replayed


_JSON = (b"content-type", b"application/json")
_REPLAYED = (b"idempotent-replayed", b"true")


async def serve(state: State, scope: Scope, receive: Receive, send: Send) -> None:
    """`POST /v1/check` as a bare ASGI app, answering errors as the app's handlers would.

    The request's two headers and body are read straight from the ASGI messages, and the
    answer goes out as the two ASGI messages themselves: Starlette's request and response
    objects cost more per request than the check does. For the same reason the check writes
    its own log line: the wrapper that learns other answers' statuses from their messages
    costs a check a few microseconds."""
    settings = state.settings
    started = perf_counter()
    authorization, idempotency_key, content_type, length = None, None, None, None
    for name, value in scope["headers"]:  # the first of repeated headers counts, as in Starlette
        if name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
        elif name == b"idempotency-key" and idempotency_key is None:
            idempotency_key = value.decode("latin-1")
        elif name == b"content-type" and content_type is None:
            content_type = value.decode("latin-1")
        elif name == b"content-length" and length is None:
            length = value
    try:
        raw = await _body(receive, settings.max_body_bytes, length)
        body, replayed = await _answer(state, authorization or "", idempotency_key, raw, content_type)
    except Exception as exc:  # noqa: BLE001  (rendered, and logged when unexpected, as the app does)
        respond = errors.render(Request(scope, receive), exc)
        if settings.access_log:
            await access_log.logged(respond, scope, receive, send, json=settings.log_json, started=started)
        else:
            await respond(scope, receive, send)
        return
    headers = [_JSON, (b"content-length", b"%d" % len(body))]
    if replayed:
        headers.append(_REPLAYED)
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    if settings.access_log:
        access_log.write_request(scope, 200, started, json=settings.log_json)


async def _body(receive: Receive, limit: int, declared: bytes | None) -> bytes:
    """The whole body, refused (413) past `limit` bytes before more of it is buffered, as the
    other endpoints refuse theirs."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body is {declared.decode()} bytes; at most {limit} are accepted")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


@router.get("/v1/denials", response_model=Page[DenialRead])
async def list_denials(
    principal: Reader,
    session: ReadSession,
    customer: str | None = None,
    feature: str | None = None,
    from_: Annotated[AwareInstant | None, Query(alias="from", description="Refused at or after.")] = None,
    to: Annotated[AwareInstant | None, Query(description="Refused before.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, object]:
    """Refused checks, reservations and seat activations, oldest first; filter by customer and
    feature (key or id) and by when, [from, to)."""
    if from_ is not None and to is not None and from_ >= to:
        raise ValidationFailed.on("from", "must be before 'to'")
    rows = await service.list_denials(
        session, principal.tenant_id, customer=customer, feature=feature, start=from_, end=to,
        after=decode_cursor(cursor, of=_LIST), limit=limit,
    )
    customer_keys = await customers.keys_of(session, principal.tenant_id, {r.customer_id for r in rows})
    feature_keys = await features.keys_of(session, principal.tenant_id, {r.feature_id for r in rows})
    return page(
        [DenialRead(id=r.id, customer=customer_keys[r.customer_id], customer_id=r.customer_id,
                    feature=feature_keys[r.feature_id], feature_id=r.feature_id, at=r.at,
                    quantity=r.quantity, reason=r.reason, item=r.item) for r in rows],
        rows, limit=limit, position=lambda r: r.id, of=_LIST,
    )
