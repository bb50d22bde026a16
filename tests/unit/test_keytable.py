"""The in-memory rate limiter's table of keys (`app.ratelimit.keytable`): lookups stay
correct through collisions, wrap-around and deletions, and it holds no more than it was built
for."""

from __future__ import annotations

import random
from collections import OrderedDict

import pytest

from app.ratelimit.keytable import KEY_BYTES, KeyTable


def _key(home: int, tag: int) -> bytes:
    """A key whose first bucket, in a table of 32 buckets, is `home`."""
    return home.to_bytes(8, "little") + tag.to_bytes(KEY_BYTES - 8, "little")


def test_the_table_finds_every_key_through_colliding_runs_that_wrap() -> None:
    """Keys crowded into a few buckets at the end of the table, so the probe runs collide
    and wrap around: 20,000 random operations against an `OrderedDict`."""
    rng = random.Random(7)
    table = KeyTable(16)  # 32 buckets
    model: OrderedDict[bytes, int] = OrderedDict()  # key -> slot, oldest first
    universe = [_key(rng.choice((29, 30, 31, 0, 61, 62)), tag) for tag in range(40)]
    for _ in range(20_000):
        key = rng.choice(universe)
        slot = table.find(key)
        assert slot == model.get(key, -1)
        if slot >= 0:
            table.touch(slot)
            model.move_to_end(key)
        elif len(model) < 16 and rng.random() < 0.7:
            model[key] = table.insert(key)
        elif model:
            _, oldest = model.popitem(last=False)
            assert table.pop_oldest() == oldest
        assert len(table) == len(model)
        assert table.oldest == (next(iter(model.values())) if model else -1)
    for key in universe:
        assert table.find(key) == model.get(key, -1)
    assert sorted(model.values()) == sorted(set(model.values()))
    assert all(0 <= slot < 16 for slot in model.values())


def test_the_table_refuses_a_key_past_its_capacity() -> None:
    table = KeyTable(2)
    table.insert(_key(0, 1))
    table.insert(_key(0, 2))
    with pytest.raises(OverflowError):
        table.insert(_key(0, 3))
    assert table.pop_oldest() == 0
    assert table.insert(_key(0, 3)) == 0  # the freed slot
    assert table.find(_key(0, 1)) == -1
    assert table.reserved_bytes == 2 * (KEY_BYTES + 4 * 5)
    with pytest.raises(ValueError, match="positive"):
        KeyTable(0)
