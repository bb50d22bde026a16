"""In-process domain events: listeners registered per event type, dependencies injected.

Dispatch runs on blinker (one `Signal` per event type; `send_async` awaits each receiver and
returns its result). What blinker leaves to us, and this module adds:

- **injection**: a listener is `async def on_x(event: X, events: KafkaEvents, ...)`;
  every parameter after the event is resolved by its annotated type from the providers handed
  to `start()` (`KafkaEvents` provides itself, its store and its config; the application adds
  its own). A listener whose dependency has no provider is a start-up
  error, never a first-request error;
- **completeness**: event types the app raises are declared (`raises`), and `start()` fails
  when one has no listener, or when a listener's event type is never raised;
- **isolation**: blinker stops at the first receiver that raises; here each listener runs
  wrapped, its failure is logged and returned as its outcome, and its siblings still run.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, get_type_hints

from blinker import Signal

from kafka_events.errors import KafkaEventsError, PublishError

logger = logging.getLogger(__name__)

Listener = Callable[..., Awaitable[Any]]


class EventConfigurationError(KafkaEventsError, RuntimeError):
    """Listeners and events do not fit together; found when the bus starts."""


class EventBusStateError(KafkaEventsError, RuntimeError):
    """The bus was used before `start()` or after `stop()`."""


@dataclass(frozen=True, slots=True)
class ListenerOutcome:
    """What one listener did with one event: its result, or the error it raised."""

    listener: str
    result: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class Dispatched:
    """The outcomes of every listener of one event, in registration order (they run one after
    another, in an order that is not guaranteed: listeners must not depend on each other)."""

    event: object
    outcomes: tuple[ListenerOutcome, ...] = field(default=())

    def result_of(self, listener: Listener | str) -> Any:
        """The result of `listener`; re-raises its error if it failed.

        Raises:
            KeyError: `listener` did not handle this event.
        """
        name = listener if isinstance(listener, str) else _name(listener)
        for outcome in self.outcomes:
            if outcome.listener == name:
                if outcome.error is not None:
                    raise outcome.error
                return outcome.result
        raise KeyError(f"{name} did not handle {type(self.event).__name__}")


@dataclass(frozen=True, slots=True)
class _Registration:
    event_type: type
    listener: Listener
    dependencies: Mapping[str, type]


class EventBus:
    """Routes domain events to their listeners. Register, `start(providers)`, `dispatch`."""

    def __init__(self) -> None:
        self._raised: set[type] = set()
        self._registrations: list[_Registration] = []
        self._signals: dict[type, Signal] = {}
        self._started = False

    # -- registration (at application build time) --------------------------------------------

    def raises(self, *event_types: type) -> None:
        """Declare event types the application dispatches; each needs a listener."""
        self._raised.update(event_types)

    def listen(self, event_type: type, listener: Listener) -> None:
        """Register `listener` for `event_type`; its other parameters are dependencies."""
        if self._started:
            raise EventBusStateError("listeners are registered before the bus starts")
        if not inspect.iscoroutinefunction(listener):
            raise EventConfigurationError(f"listener {_name(listener)} must be `async def`")
        hints = get_type_hints(listener)
        params = list(inspect.signature(listener).parameters)
        if not params or hints.get(params[0]) is not event_type:
            raise EventConfigurationError(
                f"listener {_name(listener)}: its first parameter must be annotated "
                f"{event_type.__name__}"
            )
        missing = [p for p in params[1:] if p not in hints]
        if missing:
            raise EventConfigurationError(
                f"listener {_name(listener)}: annotate {', '.join(missing)} with the type to inject"
            )
        self._registrations.append(
            _Registration(event_type, listener, {p: hints[p] for p in params[1:]})
        )

    # -- lifecycle (the lifespan) ------------------------------------------------------------

    def start(self, providers: Mapping[type, object]) -> None:
        """Inject dependencies and connect listeners.

        Raises:
            EventConfigurationError: a raised event without listener, a listener for an event
                never raised, or a dependency without provider. All problems at once.
        """
        if self._started:
            raise EventBusStateError("the event bus was already started")
        problems = self._check(providers)
        if problems:
            raise EventConfigurationError("; ".join(problems))
        for registration in self._registrations:
            bound = partial(
                registration.listener,
                **{name: providers[kind] for name, kind in registration.dependencies.items()},
            )
            receiver = _isolated(_name(registration.listener), bound)
            signal = self._signals.setdefault(registration.event_type, Signal())
            signal.connect(receiver, weak=False)
        self._started = True
        logger.info(
            "event bus started: %s",
            ", ".join(
                f"{r.event_type.__name__} -> {_name(r.listener)}" for r in self._registrations
            ),
        )

    def stop(self) -> None:
        for signal in self._signals.values():
            for receiver in list(signal.receivers.values()):
                signal.disconnect(receiver)
        self._signals.clear()
        self._started = False

    def _check(self, providers: Mapping[type, object]) -> list[str]:
        handled = {r.event_type for r in self._registrations}
        problems = [
            f"{t.__name__} is raised but has no listener"
            for t in sorted(self._raised - handled, key=lambda t: t.__name__)
        ]
        problems += [
            f"{t.__name__} has listeners but is never raised (declare it with raises())"
            for t in sorted(handled - self._raised, key=lambda t: t.__name__)
        ]
        for registration in self._registrations:
            for name, kind in registration.dependencies.items():
                if kind not in providers:
                    problems.append(
                        f"listener {_name(registration.listener)}: nothing provides "
                        f"{name}: {getattr(kind, '__name__', kind)}"
                    )
        return problems

    # -- dispatch (requests) -----------------------------------------------------------------

    async def dispatch(self, event: object) -> Dispatched:
        """Run every listener of `event`'s type, one at a time; never raises their errors.

        Raises:
            EventBusStateError: before `start()` or after `stop()`.
            EventConfigurationError: `event`'s type was not declared with `raises()`.
        """
        if not self._started:
            raise EventBusStateError("the event bus is not running")
        if type(event) not in self._raised:
            raise EventConfigurationError(f"{type(event).__name__} was not declared as raised")
        results = await self._signals[type(event)].send_async(event)
        # blinker's call order is not defined; report outcomes in registration order
        order = {name: i for i, (_, name) in enumerate(self.listeners)}
        outcomes = sorted((outcome for _, outcome in results), key=lambda o: order[o.listener])
        return Dispatched(event=event, outcomes=tuple(outcomes))

    @property
    def listeners(self) -> Iterable[tuple[type, str]]:
        return [(r.event_type, _name(r.listener)) for r in self._registrations]


def _isolated(name: str, bound: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def receiver(event: object) -> ListenerOutcome:
        try:
            return ListenerOutcome(listener=name, result=await bound(event))
        except PublishError as error:  # expected: already logged and recorded by delivery
            logger.info("listener %s: %s not published: %s", name, error.event_id, error.kind)
            return ListenerOutcome(listener=name, error=error)
        except Exception as error:
            logger.exception("listener %s failed on %s", name, type(event).__name__)
            return ListenerOutcome(listener=name, error=error)

    return receiver


def _name(listener: Callable[..., Any]) -> str:
    return f"{listener.__module__}.{getattr(listener, '__qualname__', repr(listener))}"
