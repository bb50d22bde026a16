"""One replaying relay per store: the lease a relay holds while it replays.

Every process of an application (uvicorn workers, replicas) runs a relay over the same
store. Uncoordinated, each would publish the same pending records after an outage: a duplicate
of every record per extra process. A relay replays only while it holds this lease; the others
stand by, and one of them takes over at its next round when the holder stops or dies.

- SQLite file: an exclusive `flock` on `<database file>.relay-lock` beside the database (one
  host, as SQLite itself); the kernel drops it when the process ends.
- PostgreSQL: a session advisory lock (`pg_try_advisory_lock`) on a connection of the lease's
  own, held while that connection lives. Before each round the holder checks the connection;
  a broken one means the lock may be another's now: it is dropped and asked for again.
- SQLite in memory: one process only; always held.

`acquire()` never waits for the lease (a try, bounded by `TIMEOUT_S`), and `release()` gives it
up (bounded too). Manual replays (an admin route, a CLI) do not take the lease.
`SqlStore.lease()` picks the one that fits its URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

logger = logging.getLogger(__name__)

TIMEOUT_S = 5.0
# PostgreSQL advisory lock key of the relay ("kafka_rl"); the table creation uses another.
ADVISORY_KEY = 0x6B61666B615F726C


class Held:
    """A store no other process can open: the lease is always this process's."""

    async def acquire(self) -> bool:
        return True

    async def release(self) -> None:
        return None


class FileLease:
    """An exclusive `flock` on `path`, held while its file descriptor stays open."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    async def acquire(self) -> bool:
        if self._fd is None:
            self._fd = await asyncio.to_thread(self._try_lock)
        return self._fd is not None

    def _try_lock(self) -> int | None:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return fd

    async def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


class AdvisoryLease:
    """A PostgreSQL session advisory lock, on a connection held for as long as the lease."""

    def __init__(self, engine: AsyncEngine, key: int = ADVISORY_KEY) -> None:
        self._engine = engine
        self._key = key
        self._connection: AsyncConnection | None = None

    async def acquire(self) -> bool:
        async with asyncio.timeout(TIMEOUT_S):
            if self._connection is not None:
                try:
                    await self._connection.execute(select(1))
                    await self._connection.commit()  # no transaction left open meanwhile
                    return True
                except (SQLAlchemyError, OSError) as error:
                    logger.warning("relay lease: its connection failed (%r); asking again", error)
                    await self._drop()
            connection = await self._engine.connect()
            try:
                held = await connection.scalar(select(func.pg_try_advisory_lock(self._key)))
                await connection.commit()
            except BaseException:
                await connection.close()
                raise
            if not held:
                await connection.close()
                return False
            self._connection = connection
            return True

    async def release(self) -> None:
        if self._connection is None:
            return
        with contextlib.suppress(SQLAlchemyError, OSError, TimeoutError):
            async with asyncio.timeout(TIMEOUT_S):
                await self._connection.execute(select(func.pg_advisory_unlock(self._key)))
                await self._connection.commit()
        await self._drop()

    async def _drop(self) -> None:
        """Close the lease's connection for good: its session, and any lock it held, end."""
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(SQLAlchemyError, OSError, TimeoutError):
                async with asyncio.timeout(TIMEOUT_S):
                    await connection.invalidate()  # not back to the pool with the lock held
                    await connection.close()
