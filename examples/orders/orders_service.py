"""An order service built on kafka_events: `POST /orders` publishes `order.placed` at once,
`POST /orders/stored` writes the order row and its event in one database transaction.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 ORDERS_DATABASE_URL=sqlite+aiosqlite:///orders.db \\
        uvicorn orders_service:app
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy import Column, Integer, MetaData, String, Table, insert
from sqlalchemy.ext.asyncio import create_async_engine

from kafka_events import KafkaConfig, KafkaEvents, Policy, QueuedReceipt, Receipt, SqlStore, event
from kafka_events.fastapi import EventsDep, install_error_handlers, lifespan

DATABASE_URL = os.environ.get("ORDERS_DATABASE_URL", "sqlite+aiosqlite:///orders.db")
orders = Table(
    "orders",
    MetaData(),
    Column("id", String(64), primary_key=True),
    Column("total_cents", Integer, nullable=False),
)
database = create_async_engine(DATABASE_URL)


@event(topic="orders.placed", key="order_id", type="order.placed")
class OrderPlaced(BaseModel):
    order_id: str = Field(min_length=1, max_length=64)
    total_cents: int = Field(ge=0)


kafka = KafkaEvents(
    KafkaConfig(bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")),
    policies={"orders": Policy(delivery_timeout_ms=3000)},
    store=SqlStore(DATABASE_URL),
)


@asynccontextmanager
async def tables(_: FastAPI) -> AsyncIterator[None]:
    async with database.begin() as connection:
        await connection.run_sync(orders.metadata.create_all)
    yield
    await database.dispose()


app = FastAPI(title="Orders", lifespan=lifespan(kafka, app_lifespan=tables))
install_error_handlers(app)


@app.post("/orders", status_code=202)
async def place_order(order: OrderPlaced, events: EventsDep) -> Receipt:
    """Publish `order.placed`: 202 with the broker's receipt, or 503 with the `record_id` the
    relay replays."""
    return await events.emit(order, policy="orders")


@app.post("/orders/stored", status_code=201)
async def store_order(order: OrderPlaced, events: EventsDep) -> QueuedReceipt:
    """Write the order and its event in one transaction; the relay publishes after the commit.
    An order of 0 cents is refused after both were written: the rollback keeps neither."""
    async with database.begin() as connection:
        await connection.execute(
            insert(orders).values(id=order.order_id, total_cents=order.total_cents)
        )
        receipt = await events.add_to_outbox(connection, order, policy="orders")
        if order.total_cents == 0:
            raise HTTPException(422, "an order of 0 cents is refused")
    return receipt
