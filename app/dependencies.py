"""Application-wide dependencies (settings, the per-address rate limiter, the correlation id).

The library's own (`EventsDep`, `StoreDep`) come from `kafka_events.fastapi`.
"""

from __future__ import annotations

from typing import Annotated

from asgi_correlation_id import correlation_id as request_correlation_id
from fastapi import Depends, Request

from app.config import Settings as SettingsModel
from app.ratelimit import EmailRateLimiter
from app.state import AppState


async def get_app_state(request: Request) -> AppState:
    state: AppState = request.state.app
    return state


State = Annotated[AppState, Depends(get_app_state)]


async def get_settings(request: Request) -> SettingsModel:
    state: AppState = request.state.app
    return state.settings


Settings = Annotated[SettingsModel, Depends(get_settings)]


async def get_rate_limiter(request: Request) -> EmailRateLimiter | None:
    state: AppState = request.state.app
    return state.rate_limiter


RateLimiter = Annotated[EmailRateLimiter | None, Depends(get_rate_limiter)]


async def get_correlation_id() -> str | None:
    """The request's correlation id (set by the middleware; None outside a request)."""
    return request_correlation_id.get()


CorrelationId = Annotated[str | None, Depends(get_correlation_id)]
