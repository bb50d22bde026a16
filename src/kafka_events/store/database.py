"""Opening a SQL database to keep tables in (SQLite or PostgreSQL), through SQLAlchemy.

Shared by the message store and a consumer's handled-events table: the SQLite file's folder is
created on first use, SQLite runs in WAL mode with full sync and a busy timeout, and tables are
created safely when several processes (uvicorn workers, replicas) start on an empty database
at once: under an advisory lock on PostgreSQL; on SQLite, where two processes can both see no
table and one then fails, by trying again (bounded).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import MetaData, event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

_CREATE_ATTEMPTS = 5


async def open_engine(url: str, metadata: MetaData, *, lock_key: int) -> AsyncEngine:
    """An engine for `url` with `metadata`'s tables created; disposed again if that fails."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, pool_pre_ping=True)
    if backend == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(connection: Any, _: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

    try:
        for attempt in range(1, _CREATE_ATTEMPTS + 1):
            try:
                async with engine.begin() as connection:
                    if backend == "postgresql":
                        # one creates the tables while the others wait here, then find them
                        await connection.execute(select(func.pg_advisory_xact_lock(lock_key)))
                    await connection.run_sync(metadata.create_all)
                break
            except OperationalError:
                # SQLite: another process created the table (or held the lock) meanwhile
                if backend != "sqlite" or attempt == _CREATE_ATTEMPTS:
                    raise
                await asyncio.sleep(0.1 * attempt)
    except BaseException:
        await engine.dispose()
        raise
    return engine


class Tables:
    """Async access to some tables of the database at `url`: `open()` before use (creates
    them on first use), `close()` after. Subclasses name their `metadata` and `lock_key`."""

    metadata: ClassVar[MetaData]
    lock_key: ClassVar[int]  # PostgreSQL advisory lock held while creating the tables

    def __init__(self, url: str) -> None:
        self._url = url
        self._engine: AsyncEngine | None = None

    @property
    def url(self) -> str:
        return self._url

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError(f"{type(self).__name__} is not open")
        return self._engine

    async def open(self) -> None:
        """Connect, creating the SQLite file's folder and the tables on first use."""
        self._engine = await open_engine(self._url, self.metadata, lock_key=self.lock_key)

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
