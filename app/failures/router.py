"""Routes over the message store: event status (public) and operations (admin, token)."""

from __future__ import annotations

import secrets
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Path, Query

from app.dependencies import Settings
from app.exceptions import (
    ApiError,
    BodyTooLarge,
    RequestInvalid,
    error_responses,
    responses_for,
)
from app.failures.schemas import (
    ID_MAX_LENGTH,
    ID_PATTERN,
    MAX_LIST_LIMIT,
    MAX_SEQ,
    CountBody,
    EventStatus,
    ReplayRequest,
    StoredRecord,
)
from kafka_events import StoreError
from kafka_events.fastapi import EventsDep, StoreDep
from kafka_events.store import Status, StoredMessage

events_router = APIRouter(tags=["events"])
admin_router = APIRouter(prefix="/admin", tags=["admin"])

# Every parameter is bounded (a value out of bounds gets 422, never a 500 from the store).
EventId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=ID_MAX_LENGTH,
        pattern=ID_PATTERN,
        description="The event id of the `202` or `503` answer.",
    ),
]
RecordId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=ID_MAX_LENGTH,
        pattern=ID_PATTERN,
        description="The `record_id` of a `503` answer or of a listed message.",
    ),
]
Limit = Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT, description="At most this many messages.")]
AfterSeq = Annotated[
    int,
    Query(
        ge=0,
        le=MAX_SEQ,
        description="Only messages stored after this position (`seq`), to page through them.",
    ),
]


@events_router.get(
    "/events/{event_id}",
    response_model=EventStatus,
    summary="Status of a stored event",
    responses={**error_responses(404), **responses_for(RequestInvalid, StoreError)},
)
async def get_event(*, event_id: EventId, store: StoreDep) -> EventStatus:
    """Status of an event that went through the store (outbox, or a recorded failure)."""
    record = await store.find_event(event_id)
    if record is None:
        raise ApiError(404, "not_found", "no stored event with this id")
    return EventStatus.of(record)


async def require_admin(
    settings: Settings, authorization: Annotated[str | None, Header()] = None
) -> None:
    """Admin routes need `Authorization: Bearer <ADMIN__TOKEN>`; they are off without a token."""
    token = settings.admin.token
    if token is None:
        raise ApiError(403, "admin_disabled", "set ADMIN__TOKEN to enable the admin routes")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(
        given.encode(), token.get_secret_value().encode()
    ):
        raise ApiError(
            401,
            "unauthorized",
            "a valid bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )


Admin = Depends(require_admin)


def _record(record: StoredMessage) -> StoredRecord:
    return StoredRecord(
        **EventStatus.of(record).model_dump(),
        seq=record.seq,
        error=record.error,
        key=record.key.decode(errors="replace") if record.key is not None else None,
    )


@admin_router.get(
    "/messages",
    response_model=list[StoredRecord],
    dependencies=[Admin],
    summary="List stored messages",
    responses={**error_responses(401, 403), **responses_for(RequestInvalid, StoreError)},
)
async def list_messages(
    *, store: StoreDep, status: Status | None = None, limit: Limit = 100, after_seq: AfterSeq = 0
) -> list[StoredRecord]:
    """Stored messages in the order they were stored, optionally of one status."""
    return [_record(r) for r in await store.list(status=status, limit=limit, after_seq=after_seq)]


@admin_router.get(
    "/messages/{record_id}",
    response_model=StoredRecord,
    dependencies=[Admin],
    summary="Show one stored message",
    responses={**error_responses(401, 403, 404), **responses_for(RequestInvalid, StoreError)},
)
async def show_message(*, record_id: RecordId, store: StoreDep) -> StoredRecord:
    """One stored message, with its last error."""
    record = await store.get(record_id)
    if record is None:
        raise ApiError(404, "not_found", "no stored message with this id")
    return _record(record)


@admin_router.post(
    "/messages/replay",
    response_model=CountBody,
    dependencies=[Admin],
    summary="Replay abandoned messages",
    responses={**error_responses(401, 403, 422), **responses_for(BodyTooLarge, StoreError)},
)
async def replay_messages(*, body: ReplayRequest, events: EventsDep) -> CountBody:
    """Make abandoned messages (the given ids, or all) pending again; the relay sends them."""
    if not body.all and not body.ids:
        raise ApiError(422, "invalid_request", "give ids, or all=true")
    count = await events.store.requeue(None if body.all else body.ids)
    events.relay.wake()
    return CountBody(count=count)


@admin_router.delete(
    "/messages",
    response_model=CountBody,
    dependencies=[Admin],
    summary="Purge stored messages",
    responses={**error_responses(401, 403), **responses_for(RequestInvalid, StoreError)},
)
async def purge_messages(
    *,
    store: StoreDep,
    status: Annotated[
        Literal[Status.DELIVERED, Status.ABANDONED],
        Query(description="Pending messages are never purged: replay them."),
    ] = Status.DELIVERED,
) -> CountBody:
    """Delete stored messages of a status (delivered by default)."""
    return CountBody(count=await store.purge(status=status))
