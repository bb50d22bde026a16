"""Application-wide dependencies (settings)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings as SettingsModel
from app.state import AppState


async def get_settings(request: Request) -> SettingsModel:
    state: AppState = request.state.app
    return state.settings


Settings = Annotated[SettingsModel, Depends(get_settings)]
