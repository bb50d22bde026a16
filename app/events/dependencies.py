"""The event bus as a FastAPI dependency."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.events.bus import EventBus
from app.state import AppState


async def get_events(request: Request) -> EventBus:
    state: AppState = request.state.app
    return state.events


Events = Annotated[EventBus, Depends(get_events)]
