"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kafka_events.store import SqlStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    """A message store in a SQLite file of the test's own."""
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path}/messages.db")
    await store.open()
    yield store
    await store.close()
