"""Fixtures of the integration tests: a real PostgreSQL server for the session, a database each.

The server is started by the first test that asks for it (no Docker: Debian's `postgresql`
package, installed by devtools/system-deps.sh). If it cannot start, those tests fail, loudly.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.postgres import PostgresServer
from tests.helpers.waiting import closed_port


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server on a free loopback port, for the whole session.

    Its folder is a fresh one under the system's temporary folder (not pytest's, which is
    closed to other users: run as root, the server runs as another OS user).
    """
    with (
        tempfile.TemporaryDirectory(prefix="postgres-", ignore_cleanup_errors=True) as workdir,
        PostgresServer(Path(workdir), closed_port()) as server,
    ):
        yield server


@pytest.fixture
async def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of an empty database of this test's own on the session's server."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    return await asyncio.to_thread(postgres_server.create_database, name)
