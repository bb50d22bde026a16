"""In-process domain events and their listeners (see `bus`)."""

from app.events.bus import (
    Dispatched,
    EventBus,
    EventBusStateError,
    EventConfigurationError,
    ListenerOutcome,
)

__all__ = [
    "Dispatched",
    "EventBus",
    "EventBusStateError",
    "EventConfigurationError",
    "ListenerOutcome",
]
