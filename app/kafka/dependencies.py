"""FastAPI dependencies of the Kafka integration: one getter and one `Annotated` alias each."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.kafka.publisher import KafkaPublisher
from app.state import AppState


async def get_publisher(request: Request) -> KafkaPublisher:
    """The process-wide publisher started by the lifespan."""
    state: AppState = request.state.app
    return state.publisher


Publisher = Annotated[KafkaPublisher, Depends(get_publisher)]
