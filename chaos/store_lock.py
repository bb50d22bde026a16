"""A SQLite message store that cannot be written: another writer holds its write lock.

`StoreLock(path)` opens its own connection to the database file and takes the write lock
(`BEGIN EXCLUSIVE`; the store runs in WAL mode, so readers still read). While it is held,
every write of the service waits for its busy timeout, then fails with "database is locked":
the failure an operator gets from a migration, a backup tool or a stuck process holding a
transaction open. `release()` rolls back and closes (idempotent).

`store_locked_kafka_down` is the scenario: Kafka unreachable, then the store locked too, then
Kafka back while the store is still locked, then the store unlocked.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from chaos.cluster import client_links
from chaos.plan import Context
from devtools.faultproxy import REFUSE

ACQUIRE_TIMEOUT_S = 30.0
LOCKED_WITH_KAFKA_S = 12.0


class StoreLock:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._connection: sqlite3.Connection | None = None

    @property
    def held(self) -> bool:
        return self._connection is not None

    async def acquire(self) -> None:
        """Take the write lock (waiting at most `ACQUIRE_TIMEOUT_S` for a writer in progress)."""
        if self._connection is not None:
            return
        self._connection = await asyncio.to_thread(self._lock)

    def _lock(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self._path, timeout=ACQUIRE_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            connection.execute("BEGIN EXCLUSIVE")
        except BaseException:
            connection.close()
            raise
        return connection

    async def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await asyncio.to_thread(self._unlock, connection)

    @staticmethod
    def _unlock(connection: sqlite3.Connection) -> None:
        try:
            connection.execute("ROLLBACK")
        finally:
            connection.close()


async def store_locked_kafka_down(ctx: Context) -> None:
    """Kafka unreachable, then the store locked too, then Kafka back while still locked."""
    if not await ctx.wait_share(0.2):
        return
    links = client_links(ctx.cluster)
    phase_s = ctx.plan.fault_s
    # Kafka back, the store locked: long enough for several relay rounds, each of which waits
    # out the store's busy timeout (5 s) before its write fails
    locked_s = max(phase_s, LOCKED_WITH_KAFKA_S)
    lock = StoreLock(ctx.store_path)
    marks = [ctx.load.sent]
    try:
        await asyncio.to_thread(ctx.proxy.cut, links, REFUSE)
        ctx.note(f"the app's links to every broker refused after {ctx.load.sent} sent")
        await asyncio.sleep(phase_s)
        await lock.acquire()
        marks.append(ctx.load.sent)
        ctx.note("the store locked by another writer (BEGIN EXCLUSIVE)")
        await asyncio.sleep(phase_s)
        await asyncio.to_thread(ctx.proxy.heal, links)
        marks.append(ctx.load.sent)
        ctx.note("Kafka reachable again; the store still locked")
        await asyncio.sleep(locked_s)
    finally:
        await lock.release()
        await asyncio.to_thread(ctx.proxy.heal, links)
    marks.append(ctx.load.sent)
    ctx.note("the store unlocked")
    ctx.facts["phases"] = marks
