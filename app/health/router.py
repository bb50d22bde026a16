"""`/health/live` (the process answers) and `/health/ready` (it can publish now)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.dependencies import RateLimiter
from app.exceptions import ErrorBody, error_response
from kafka_events.fastapi import EventsDep

router = APIRouter(prefix="/health", tags=["health"])


class Live(BaseModel):
    status: Literal["alive"] = "alive"


class Ready(BaseModel):
    status: Literal["ready"] = "ready"


@router.get("/live", response_model=Live, summary="Liveness probe")
async def live() -> Live:
    """Answers as long as the process serves requests."""
    return Live()


@router.get(
    "/ready",
    response_model=Ready,
    summary="Readiness probe",
    responses={
        503: {
            "model": ErrorBody,
            "description": "A producer is not connected, no broker answered in time, the reply "
            "topic is not read, or the relay's store cannot be written; or, with "
            "`RATE_LIMIT__ON_REDIS_ERROR=closed`, the rate limit's Redis does not answer.",
            "content": {
                "application/json": {
                    "example": {
                        "error": "not_ready",
                        "detail": "producer replicated: connecting; reply reader: connecting",
                    }
                }
            },
        }
    },
)
async def ready(*, events: EventsDep, rate_limiter: RateLimiter) -> Ready | JSONResponse:
    """Ready when every policy's producer is connected, a broker answered a metadata request,
    the reply reader reads the reply topic (request-reply), the relay runs with a store it can
    write to, and (fail-closed rate limit) Redis answers."""
    if await events.ready():
        if rate_limiter is not None and (reason := await rate_limiter.not_ready()):
            return error_response(503, "not_ready", reason)
        return Ready()
    problems = events.problems()
    if not problems:
        return error_response(503, "not_ready", "no Kafka broker answered")
    return error_response(503, "not_ready", "; ".join(problems))
