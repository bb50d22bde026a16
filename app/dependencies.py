"""Application-wide dependencies (settings, the per-address rate limiter, the correlation id),
and the verification request with its redirect host checked against the settings.

The library's own (`EventsDep`, `StoreDep`) come from `kafka_events.fastapi`.
"""

from __future__ import annotations

from typing import Annotated

from asgi_correlation_id import correlation_id as request_correlation_id
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError

from app.config import Settings as SettingsModel
from app.ratelimit import EmailRateLimiter
from app.state import AppState
from app.verification import hosts
from app.verification.schemas import VerificationEmailRequest


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


async def get_verification_request(
    body: VerificationEmailRequest, request: Request
) -> VerificationEmailRequest:
    """The request body, once its `redirect_url` host passes `VERIFICATION__REDIRECT_HOSTS`
    (`app.verification.hosts.refusal`); else a 422 like any other invalid field.

    (The settings come from the request's state rather than a dependency of their own: each
    dependency costs FastAPI a resolution per request.)"""
    assert body.redirect_url.host is not None  # the schema requires one
    state: AppState = request.state.app
    why = hosts.refusal(body.redirect_url.host, state.settings.verification.redirect_host_list)
    if why is not None:
        raise RequestValidationError(
            [{"loc": ("body", "redirect_url"), "msg": why, "type": "redirect_host_refused"}]
        )
    return body


VerificationRequest = Annotated[VerificationEmailRequest, Depends(get_verification_request)]
