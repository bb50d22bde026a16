"""`GET /metrics`: the Prometheus text exposition of the API process (or of all its workers)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Response

from app import metrics
from kafka_events import StoreError
from kafka_events.fastapi import StoreDep
from kafka_events.store import MessageStore, Status

logger = logging.getLogger(__name__)

router = APIRouter(tags=["metrics"])

# A scrape must not hang on a slow store: the gauges then keep their previous value.
STORE_COUNT_TIMEOUT_S = 2.0


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text format 0.0.4; the metrics are listed in the README.",
            "content": {
                "text/plain": {
                    "example": 'kafka_events_publish_total{outcome="delivered",policy="replicated",'
                    'topic="send.verification.email"} 42.0\n'
                }
            },
        }
    },
)
async def get_metrics(*, store: StoreDep) -> Response:
    """Publishes, retries, failures, replay backlog, producer buffer and HTTP requests."""
    await _count_stored(store)
    body = await asyncio.to_thread(metrics.exposition)
    return Response(content=body, media_type=metrics.CONTENT_TYPE)


async def _count_stored(store: MessageStore) -> None:
    try:
        async with asyncio.timeout(STORE_COUNT_TIMEOUT_S):
            for status in (Status.PENDING, Status.ABANDONED):
                count = await store.count(status)
                metrics.kafka_metrics().store_messages.labels(status.value).set(count)
    except (StoreError, OSError, TimeoutError) as error:
        logger.warning("metrics: the store could not be counted: %r", error)
