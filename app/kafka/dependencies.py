"""FastAPI dependencies of the Kafka integration: one getter and one `Annotated` alias each.

Routes and listeners ask for what they need by name, like NestJS's named clients::

    async def route(*, delivery: Delivery) -> ...                 # deliver by any policy
    async def route(*, publisher: ReplicatedPublisher) -> ...     # one policy's publisher
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from app.config import PolicyName
from app.kafka.delivery import DeliveryService
from app.kafka.publisher import KafkaPublisher
from app.state import AppState


async def get_delivery(request: Request) -> DeliveryService:
    """The delivery service (publish by policy, record failures, outbox)."""
    state: AppState = request.state.app
    return state.delivery


def publisher_for(policy: PolicyName) -> Callable[[Request], Awaitable[KafkaPublisher]]:
    """A dependency giving the long-lived publisher of `policy`."""

    async def get_publisher(request: Request) -> KafkaPublisher:
        state: AppState = request.state.app
        return state.publishers[policy]

    return get_publisher


async def get_publishers(request: Request) -> list[KafkaPublisher]:
    """Every policy's publisher (for health checks)."""
    state: AppState = request.state.app
    return list(state.publishers.values())


Delivery = Annotated[DeliveryService, Depends(get_delivery)]
Publishers = Annotated[list[KafkaPublisher], Depends(get_publishers)]
FireAndForgetPublisher = Annotated[
    KafkaPublisher, Depends(publisher_for(PolicyName.FIRE_AND_FORGET))
]
LeaderPublisher = Annotated[KafkaPublisher, Depends(publisher_for(PolicyName.LEADER))]
ReplicatedPublisher = Annotated[KafkaPublisher, Depends(publisher_for(PolicyName.REPLICATED))]
