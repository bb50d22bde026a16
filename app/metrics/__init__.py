"""Prometheus metrics of the API and the worker (prometheus-client).

The library's series (`kafka_events.metrics`) are made once per process in prometheus-client's
default registry (`kafka_metrics()`, `consumer_metrics()`), beside the service's own: every
publisher, relay and worker of a process adds to the same series, and several uvicorn
worker processes are summed by its multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, set by
`python -m app` when `API__WORKERS` > 1). Nothing here connects or listens at import time.

The library documents its series where it makes them: publishing, the store and the relay
(`kafka_events.metrics`: `kafka_events_publish_*`, `kafka_events_producer_*`,
`kafka_events_recorded_total`, `kafka_events_replayed_total`, `kafka_events_store_messages`...)
and the consumer runner (`kafka_events.consumer.metrics`: `kafka_events_worker_records_total`,
`..._handle_duration_seconds`, `..._retries_total`, `..._lag`). The service adds:

    kafka_events_worker_email_attempts_total{outcome}      SMTP attempts: sent, failed

HTTP requests are counted by `app.metrics.http` (`http_requests_total`,
`http_request_duration_seconds`), by route template and exact status code.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Final

from fastapi import FastAPI
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    generate_latest,
    multiprocess,
    start_http_server,
)

from app.metrics.http import HttpMetrics, HttpSeries
from kafka_events import Metrics
from kafka_events.consumer import ConsumerMetrics

MULTIPROCESS_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

# An accepted request answers within its policy's deadline; 413/422/429 in well under 1 ms.
_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@functools.cache
def kafka_metrics() -> Metrics:
    """The library's series of this process, in the default registry (made once: every
    `KafkaEvents` of the process counts into the same series)."""
    return Metrics(REGISTRY)


WORKER_EMAIL_ATTEMPTS = Counter(
    "kafka_events_worker_email_attempts",
    "SMTP send attempts, by outcome.",
    ["outcome"],
)


@functools.cache
def consumer_metrics() -> ConsumerMetrics:
    """The worker's consumer runner's series of this process, in the default registry:
    records by outcome, handling time, retries and lag (`kafka_events.consumer.metrics`)."""
    return ConsumerMetrics(REGISTRY)


# Created once: a second app of the same process counts into the same series.
_HTTP_SERIES = HttpSeries(_HTTP_BUCKETS)


def multiprocess_dir() -> Path | None:
    """The directory of multiprocess mode, when this process runs in it."""
    value = os.environ.get(MULTIPROCESS_ENV)
    return Path(value) if value else None


def enter_multiprocess_mode() -> Path:
    """Set up multiprocess mode for worker processes started after this call.

    Must run in the parent before its workers import prometheus-client (they read
    `PROMETHEUS_MULTIPROC_DIR` at import). Uses a fresh private directory unless one is set,
    and empties a given one: series of earlier processes must not be summed with ours.
    """
    given = multiprocess_dir()
    if given is None:
        path = Path(tempfile.mkdtemp(prefix="kafka-events-metrics-"))
    else:
        path = given
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROCESS_ENV] = str(path)
    return path


def process_exited(pid: int) -> None:
    """Drop the live gauges of a process that has stopped (multiprocess mode only)."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def exposition() -> bytes:
    """Every metric of this process, or of all worker processes in multiprocess mode."""
    if multiprocess_dir() is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def instrument(app: FastAPI) -> None:
    """Count `app`'s HTTP requests by method, route template and exact status code.

    Add it after the body-size limit so that 413s are counted too. Requests to unknown paths
    are counted under the handler `none` (no unbounded label values).
    """
    app.add_middleware(HttpMetrics, series=_HTTP_SERIES, excluded_handlers=["/metrics"])


def serve(host: str, port: int) -> Callable[[], None]:
    """Serve this process's metrics at http://host:port/metrics from a daemon thread.

    For processes without an HTTP server of their own (the worker). Returns the function that
    stops serving.

    Raises:
        OSError: the address cannot be bound (in use, or not an address of this machine).
    """
    server, thread = start_http_server(port, addr=host)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
