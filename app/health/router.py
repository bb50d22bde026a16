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
            "description": "A producer is not connected or no broker answered in time; or, "
            "with `RATE_LIMIT__ON_REDIS_ERROR=closed`, the rate limit's Redis does not answer.",
            "content": {
                "application/json": {
                    "example": {
                        "error": "not_ready",
                        "detail": "no Kafka broker answered (replicated: connecting)",
                    }
                }
            },
        }
    },
)
async def ready(*, events: EventsDep, rate_limiter: RateLimiter) -> Ready | JSONResponse:
    """Ready when every policy's producer is connected and a broker answered a metadata request."""
    if await events.ready():
        if rate_limiter is not None and (reason := await rate_limiter.not_ready()):
            return error_response(503, "not_ready", reason)
        return Ready()
    publishers = events.publishers.values()
    not_ready = [p for p in publishers if p.state.value != "ready"]
    states = ", ".join(f"{p.name}: {p.state.value}" for p in not_ready) or "no answer"
    return error_response(503, "not_ready", f"no Kafka broker answered ({states})")
