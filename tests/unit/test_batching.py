"""The producer's batch size against the concurrency one service process serves.

aiokafka keeps one open batch per partition: a send that finds it full waits until it is
sent, then races the sends that came meanwhile for room in the next one. Under load a few
sends lose that race again and again; in the benchmark at 128 concurrent requests, 1 in 100
waited 3 s with 16 KiB batches. So the default batch holds as many of the service's events
as one process has requests in flight, all for one partition.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka.record.default_records import (  # type: ignore[import-untyped]
    DefaultRecordBatchBuilder,
)

from app.config import ServerSettings, load_settings
from app.verification.events import VerificationEmailRequested


def test_one_batch_holds_an_event_for_every_connection_a_process_serves(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no developer's .env
    settings = load_settings()
    batch_size = settings.kafka.producer.max_batch_size
    # an HTTP/1.1 connection has at most one request in flight
    in_flight = ServerSettings().max_connections
    event = VerificationEmailRequested(
        email="firstname.lastname@mail.example.com",
        redirect_url="https://app.example.com/verify?next=%2Faccount%2Fwelcome",
    )
    message = event.to_message("send.verification.email", correlation_id="c" * 36)
    headers = [(name, value) for name, value in message.headers]
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=1,
        producer_epoch=0,
        base_sequence=0,
        batch_size=batch_size,
    )

    fitted = 0
    while fitted <= in_flight:
        if builder.append(fitted, 0, message.key, message.value, headers) is None:
            break
        fitted += 1

    assert fitted > in_flight, f"{batch_size} bytes hold {fitted} events"
