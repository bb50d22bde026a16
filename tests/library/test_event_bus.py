"""The in-process event bus: injection, isolation, and configuration errors found at start."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from kafka_events.bus import EventBus, EventBusStateError, EventConfigurationError
from kafka_events.errors import BrokerUnavailable


@dataclass(frozen=True)
class Signed:
    user: str


@dataclass(frozen=True)
class Unused:
    pass


class Mailer:
    def __init__(self) -> None:
        self.sent: list[str] = []


class Audit:
    pass


async def send_welcome(event: Signed, mailer: Mailer) -> str:
    mailer.sent.append(event.user)
    return f"welcomed {event.user}"


async def broken(event: Signed) -> None:
    raise RuntimeError("listener bug")


async def unpublished(event: Signed) -> None:
    raise BrokerUnavailable("down", event_id="e-1")


async def needs_audit(event: Signed, audit: Audit) -> None:
    return None


def bus_with(*listeners: object, raises: tuple[type, ...] = (Signed,)) -> EventBus:
    bus = EventBus()
    bus.raises(*raises)
    for listener in listeners:
        bus.listen(Signed, listener)  # type: ignore[arg-type]
    return bus


async def test_listeners_get_their_dependencies_and_return_results() -> None:
    mailer = Mailer()
    bus = bus_with(send_welcome)
    bus.start({Mailer: mailer})

    dispatched = await bus.dispatch(Signed("ada"))

    assert dispatched.result_of(send_welcome) == "welcomed ada"
    assert mailer.sent == ["ada"]


async def test_a_failing_listener_is_isolated_from_its_siblings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mailer = Mailer()
    bus = bus_with(broken, unpublished, send_welcome)
    bus.start({Mailer: mailer})

    dispatched = await bus.dispatch(Signed("ada"))

    assert [o.ok for o in dispatched.outcomes] == [False, False, True]
    assert mailer.sent == ["ada"]  # ran after two failures
    with pytest.raises(RuntimeError, match="listener bug"):
        dispatched.result_of(broken)
    with pytest.raises(BrokerUnavailable):
        dispatched.result_of(unpublished)
    assert "listener tests.library.test_event_bus.broken failed" in caplog.text


def test_a_raised_event_without_listener_fails_at_start() -> None:
    bus = bus_with(send_welcome, raises=(Signed, Unused))

    with pytest.raises(EventConfigurationError, match="Unused is raised but has no listener"):
        bus.start({Mailer: Mailer()})


def test_a_listener_of_an_event_never_raised_fails_at_start() -> None:
    bus = bus_with(send_welcome, raises=())

    with pytest.raises(EventConfigurationError, match="Signed has listeners but is never raised"):
        bus.start({Mailer: Mailer()})


def test_a_dependency_without_provider_fails_at_start_naming_it() -> None:
    bus = bus_with(send_welcome, needs_audit)

    with pytest.raises(EventConfigurationError, match="needs_audit: nothing provides audit"):
        bus.start({Mailer: Mailer()})


def test_listeners_must_be_async_and_take_the_event_first() -> None:
    bus = EventBus()

    def sync_listener(event: Signed) -> None:
        return None

    async def wrong_first(mailer: Mailer, event: Signed) -> None:
        return None

    with pytest.raises(EventConfigurationError, match="must be `async def`"):
        bus.listen(Signed, sync_listener)  # type: ignore[arg-type]
    with pytest.raises(EventConfigurationError, match="first parameter must be annotated Signed"):
        bus.listen(Signed, wrong_first)


async def test_dispatch_outside_the_bus_lifetime_or_of_an_undeclared_event_is_refused() -> None:
    bus = bus_with(send_welcome)
    with pytest.raises(EventBusStateError):
        await bus.dispatch(Signed("ada"))

    bus.start({Mailer: Mailer()})
    with pytest.raises(EventConfigurationError, match="Unused was not declared"):
        await bus.dispatch(Unused())

    bus.stop()
    with pytest.raises(EventBusStateError):
        await bus.dispatch(Signed("ada"))
