"""The FastAPI binding: a lifespan that composes with the host's, dependencies that need
nothing of the host's state, and error handlers that answer only the library's errors."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, Request
from pydantic import BaseModel

from kafka_events import (
    BrokerUnavailable,
    KafkaEvents,
    MemoryStore,
    Policy,
    RecordTooLarge,
    ReplyTimeout,
    event,
)
from kafka_events.fastapi import (
    ERRORS,
    EventsDep,
    StoreDep,
    get_kafka_events,
    get_store,
    install_error_handlers,
    lifespan,
    publisher_of,
    responses_for,
)
from kafka_events.testing import TestKafkaEvents


@event(topic="pings", key="name")
class Ping(BaseModel):
    name: str


@asynccontextmanager
async def _client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://test"
        ) as client,
    ):
        yield client


def _app(kafka: KafkaEvents, **extra: Any) -> FastAPI:
    app = FastAPI(lifespan=lifespan(kafka, **extra))
    install_error_handlers(app)

    @app.post("/pings", status_code=202)
    async def ping(body: Ping, events: EventsDep) -> dict[str, Any]:
        return (await events.emit(body)).model_dump()

    @app.get("/stored")
    async def stored(store: StoreDep) -> int:
        return await store.count()

    return app


async def test_the_lifespan_runs_the_hosts_own_inside_and_merges_its_state() -> None:
    kafka = KafkaEvents(store=MemoryStore(), policies={"pings": Policy()})
    seen: list[str] = []

    @asynccontextmanager
    async def own(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        seen.append(f"host starts, kafka {kafka.state.value}")
        yield {"greeting": "hello"}
        seen.append(f"host stops, kafka {kafka.state.value}")

    app = _app(kafka, app_lifespan=own)

    @app.get("/greeting")
    async def greeting(request: Request) -> str:
        return str(request.state.greeting)

    with TestKafkaEvents(kafka):
        async with _client(app) as client:
            answer = (await client.get("/greeting")).json()

    assert answer == "hello"
    assert seen == ["host starts, kafka running", "host stops, kafka running"]
    assert kafka.state.value == "stopped"


async def test_routes_get_the_running_kafka_events_and_its_store_by_dependency() -> None:
    kafka = KafkaEvents(store=MemoryStore(), policies={"pings": Policy()})
    with TestKafkaEvents(kafka) as broker:
        async with _client(_app(kafka)) as client:
            accepted = await client.post("/pings", json={"name": "a"})
            broker.fail()
            refused = await client.post("/pings", json={"name": "b"})
            stored = (await client.get("/stored")).json()

    assert accepted.status_code == 202
    assert accepted.json()["topic"] == "pings"
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "5"
    body = refused.json()
    assert (body["error"], body["delivery"]) == ("broker_unavailable", "not_sent")
    assert body["record_id"] is not None
    assert stored == 1


async def test_the_hosts_own_404_422_and_500_stay_as_the_host_made_them() -> None:
    kafka = KafkaEvents(store=MemoryStore(), policies={"pings": Policy()})
    app = _app(kafka)

    @app.get("/boom")
    async def boom() -> None:
        raise ValueError("the host's own bug")

    with TestKafkaEvents(kafka):
        async with (
            LifespanManager(app) as manager,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app, raise_app_exceptions=False),
                base_url="http://test",
            ) as client,
        ):
            missing = await client.get("/nowhere")
            invalid = await client.post("/pings", json={"name": 3})
            broken = await client.get("/boom")

    assert missing.json() == {"detail": "Not Found"}  # FastAPI's own bodies
    assert "error" not in invalid.json()
    assert invalid.status_code == 422
    assert broken.status_code == 500


async def test_a_route_without_the_lifespan_is_told_so() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/needs-kafka")
    async def needs(events: EventsDep) -> str:
        return repr(events)

    async with _client(app) as client:
        answer = await client.get("/needs-kafka")

    assert answer.status_code == 503
    assert answer.json()["error"] == "broker_unavailable"


def test_the_documented_responses_come_from_the_same_table_as_the_handlers() -> None:
    documented = responses_for(RecordTooLarge, BrokerUnavailable, ReplyTimeout)

    assert set(documented) == {413, 503, 504}
    for exc_type in (RecordTooLarge, BrokerUnavailable, ReplyTimeout):
        entry = documented[ERRORS[exc_type].status]
        assert ERRORS[exc_type].description in entry["description"]
        examples = entry["content"]["application/json"]["examples"]
        assert ERRORS[exc_type].kind in examples
    assert "Retry-After" in documented[503]["headers"]


def test_the_dependencies_run_on_the_event_loop_not_in_a_worker_thread() -> None:
    # FastAPI runs a plain `def` dependency through a thread pool: a cost on every request
    assert all(
        inspect.iscoroutinefunction(get)
        for get in (get_kafka_events, get_store, publisher_of("pings"))
    )
