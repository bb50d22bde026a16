"""HTTP request metrics: `http_requests_total` and `http_request_duration_seconds`.

The series prometheus-fastapi-instrumentator made before (same names, help texts, labels
`handler`, `method`, `status`, and meaning), counted by a middleware that does per request
only what the series need: its status, its duration, and its route template. The template is
the route the router matched (`scope["route"]`), found once per route; a request answered
before routing (413, 431, 408) or matching no route (404) is named by matching it against
the routes, as the instrumentator did for every request: the template of a route whose path
matches (405), else `none`. Handlers matching an excluded pattern are not counted.

A route's name is kept per route object: one router included twice under two prefixes would
be counted under the first name seen (the service includes each router once).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from starlette.requests import Request
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HttpMetrics", "HttpSeries", "route_name"]

UNTEMPLATED = "none"


class HttpSeries:
    """The two series, registered once per registry and process."""

    def __init__(self, buckets: Iterable[float], registry: CollectorRegistry = REGISTRY) -> None:
        labels = ("handler", "method", "status")
        self.requests = Counter(
            "http_requests_total",
            "Total number of requests by method, status and handler.",
            labels,
            registry=registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Duration of HTTP requests in seconds",
            labels,
            buckets=(*buckets, float("inf")),
            registry=registry,
        )
        # (handler, method, status) -> its two series: `labels()` takes a lock and builds
        # the label tuple on every call. Bounded: handlers are route templates or `none`,
        # statuses the app's own, methods those the routes take (others: 405, few).
        self._bound: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, handler: str, method: str, status: int, seconds: float) -> None:
        series = self._bound.get((handler, method, status))
        if series is None:
            label = str(status)
            series = self._bound[handler, method, status] = (
                self.requests.labels(handler, method, label),
                self.duration.labels(handler, method, label),
            )
        series[0].inc()
        series[1].observe(seconds)


def route_name(scope: Scope, routes: Iterable[BaseRoute]) -> str | None:
    """The template of the route `scope` matches (a full match first, else a partial one:
    the path matches, the method does not), mounts included; None: no route matches."""
    partial: str | None = None
    for route in _effective(routes):
        match, child_scope = route.matches(scope)
        if match == Match.NONE:
            continue
        if isinstance(route, Mount):
            if not route.routes:
                name = route.path
            else:
                child = route_name({**scope, **child_scope}, route.routes)
                if child is None:
                    continue
                name = route.path + child
        else:
            path = getattr(route, "path", None)
            if path is None:
                continue
            name = path
        if match == Match.FULL:
            return name
        if partial is None:
            partial = name
    return partial


def _effective(routes: Iterable[BaseRoute]) -> list[BaseRoute]:
    """The routes as matched, with FastAPI's included routers (no `path` of their own)
    replaced by their routes, fully prefixed."""
    effective: list[BaseRoute] = []
    for route in routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if not callable(contexts):
            effective.append(route)
            continue
        for context in contexts():
            starlette_route = getattr(context, "starlette_route", None)
            effective.append(starlette_route if starlette_route is not None else context)
    return effective


class HttpMetrics:
    """Counts every HTTP request of `app` into `series` (ASGI middleware)."""

    def __init__(
        self, app: ASGIApp, *, series: HttpSeries, excluded_handlers: Iterable[str] = ()
    ) -> None:
        self.app = app
        self.series = series
        self.excluded = [re.compile(pattern) for pattern in excluded_handlers]
        self._names: dict[int, tuple[BaseRoute, str | None]] = {}  # id(route) -> its name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless the app answers: what a client of a failing app gets

        async def counted_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counted_send)
        finally:
            duration = max(time.perf_counter() - started, 0.0)
            handler = self._handler(scope)
            if handler is not None:
                self.series.observe(handler, scope["method"], int(status), duration)

    def _handler(self, scope: Scope) -> str | None:
        """The request's handler label; None: not counted (excluded)."""
        route = scope.get("route")
        templated = None
        if route is not None:
            known = self._names.get(id(route))
            if known is not None and known[0] is route:
                templated = known[1]
        if templated is None:
            templated = route_name(scope, getattr(scope.get("app"), "routes", None) or ())
            if route is not None and templated is not None:
                self._names[id(route)] = (route, templated)  # bounded: one per route
        handler = templated if templated is not None else Request(scope).url.path
        if any(pattern.search(handler) for pattern in self.excluded):
            return None
        return handler if templated is not None else UNTEMPLATED
