"""kafkajs' retry schedule, as the publisher uses it."""

from __future__ import annotations

import random

import pytest

from kafka_events import Retry
from kafka_events._retry import KafkajsWait


def test_without_randomisation_waits_grow_by_the_multiplier_up_to_the_cap() -> None:
    wait = KafkajsWait(
        Retry(initial_retry_time_ms=100, factor=0, multiplier=3, max_retry_time_ms=2000)
    )
    waits: list[float] = []
    previous = None
    for _ in range(6):
        previous = wait.next_ms(previous)
        waits.append(previous)

    assert waits == [100, 300, 900, 2000, 2000, 2000]


@pytest.mark.parametrize("seed", range(20))
def test_each_wait_is_the_previous_randomised_by_factor_then_multiplied(seed: int) -> None:
    settings = Retry(initial_retry_time_ms=300, factor=0.2, multiplier=2)
    wait = KafkajsWait(settings, rng=random.Random(seed))

    first = wait.next_ms(None)
    second = wait.next_ms(first)

    # kafkajs' documented example: first 240-360 ms, second Random(0.8, 1.2) x first x 2
    assert 240 <= first <= 360
    assert first * 0.8 * 2 - 2 <= second <= first * 1.2 * 2 + 2


def test_factor_is_jitter_not_growth() -> None:
    settings = Retry(initial_retry_time_ms=1000, factor=0.5, multiplier=1)
    wait = KafkajsWait(settings, rng=random.Random(7))
    samples = [wait.next_ms(1000) for _ in range(500)]

    assert 500 <= min(samples) < 700
    assert 1300 < max(samples) <= 1500
    assert 900 < sum(samples) / len(samples) < 1100  # centred on the previous wait
