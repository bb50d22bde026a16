"""The library as a user gets it: the built wheel in a clean virtualenv, nothing of this
repository on its path, running the example order service (examples/orders) against a real
broker and a real PostgreSQL.

One test, in the order a user meets it: the example's own unit tests (the shipped test double),
then the service: 202 with the receipt; an order row and its event in one transaction, and a
rolled-back order that emits nothing; with the broker stopped, 503 with a `record_id` within the
policy's deadline; and the replay once the broker is back.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from devtools.kafka import KafkaCluster
from tests.helpers.kafka import create_topic, read_all
from tests.helpers.processes import stop
from tests.helpers.waiting import closed_port, closed_ports, eventually, repo_root

pytestmark = pytest.mark.kafka

TOPIC = "orders.placed"
DEADLINE_S = 3.0  # the example's policy: Policy(delivery_timeout_ms=3000)
# What the clean environment needs besides the wheel: the server, and the example's tests.
EXTRAS = ["uvicorn", "pytest", "pytest-asyncio", "httpx", "asgi-lifespan"]


def _uv() -> str:
    found = repo_root() / ".tools" / "bin" / "uv"
    return str(found) if found.exists() else shutil.which("uv") or "uv"


def _run(*command: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _clean_env() -> dict[str, str]:
    """The environment without anything that would put this repository on the path."""
    return {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")
    } | {"UV_PYTHON_DOWNLOADS": "never"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the clean virtualenv's python, a copy of the example): the wheel and the example's
    needs installed, at the versions this repository locks."""
    work = tmp_path_factory.mktemp("wheel")
    env = _clean_env()
    _run(_uv(), "build", "--wheel", "--out-dir", str(work / "dist"), cwd=repo_root(), env=env)
    [wheel] = (work / "dist").glob("kafka_events-*.whl")
    locked = _run(
        _uv(), "export", "--frozen", "--no-hashes", "--no-emit-project", cwd=repo_root(), env=env
    )
    (work / "constraints.txt").write_text(locked)
    _run(_uv(), "venv", "--python", sys.executable, str(work / "venv"), cwd=work, env=env)
    python = work / "venv" / "bin" / "python"
    _run(
        _uv(),
        "pip",
        "install",
        "--python",
        str(python),
        "--constraint",
        str(work / "constraints.txt"),
        f"{wheel}[postgres]",
        *EXTRAS,
        cwd=work,
        env=env,
    )
    example = work / "orders"
    shutil.copytree(repo_root() / "examples" / "orders", example)
    return python, example


@asynccontextmanager
async def _serving(
    python: Path, example: Path, *, bootstrap: str, database_url: str, port: int
) -> AsyncIterator[httpx.AsyncClient]:
    log = example / f"uvicorn-{port}.log"
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            str(python),
            "-m",
            "uvicorn",
            "orders_service:app",
            "--port",
            str(port),
            cwd=example,
            env={
                **_clean_env(),
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "ORDERS_DATABASE_URL": database_url,
            },
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:

            async def up() -> bool:
                if process.returncode is not None:
                    raise AssertionError(f"the example exited:\n{log.read_text()}")
                try:
                    return (await client.get("/openapi.json")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(up, timeout_s=60)
            yield client
    finally:
        await stop(process)


def test_the_wheel_is_what_the_clean_environment_imports(installed: tuple[Path, Path]) -> None:
    python, example = installed

    where = _run(
        str(python), "-c", "import kafka_events; print(kafka_events.__file__)", cwd=example
    )

    assert Path(where.strip()).is_relative_to(python.parent.parent)  # the venv's site-packages
    assert not Path(where.strip()).is_relative_to(repo_root())


def test_the_example_route_is_unit_tested_with_the_shipped_test_double(
    installed: tuple[Path, Path],
) -> None:
    python, example = installed

    output = _run(
        str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=example, env=_clean_env()
    )

    assert "2 passed" in output


async def test_the_example_publishes_keeps_what_fails_and_replays_it(
    installed: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
    postgres_url: str,
) -> None:
    python, example = installed
    cluster = KafkaCluster(
        tmp_path_factory.mktemp("orders-kafka"), nodes=1, broker_port=closed_ports(2)
    )
    await asyncio.to_thread(cluster.start)
    try:
        await create_topic(cluster.bootstrap_servers, TOPIC)
        async with _serving(
            python,
            example,
            bootstrap=cluster.bootstrap_servers,
            database_url=postgres_url,
            port=closed_port(),
        ) as client:
            placed = await client.post("/orders", json={"order_id": "o-1", "total_cents": 1250})
            stored = await client.post(
                "/orders/stored", json={"order_id": "o-2", "total_cents": 990}
            )
            refused = await client.post(
                "/orders/stored", json={"order_id": "o-3", "total_cents": 0}
            )
            on_topic = await read_all(cluster.bootstrap_servers, TOPIC, expected=2)

            (node,) = cluster.node_ids
            await asyncio.to_thread(cluster.stop_node, node)
            started = time.monotonic()
            unavailable = await client.post("/orders", json={"order_id": "o-4", "total_cents": 5})
            elapsed = time.monotonic() - started
            await asyncio.to_thread(cluster.start_node, node)
            replayed = await read_all(cluster.bootstrap_servers, TOPIC, expected=3, timeout_s=90)
    finally:
        await asyncio.to_thread(cluster.stop)
    engine = create_async_engine(postgres_url)
    async with engine.connect() as connection:
        rows = (await connection.execute(text("SELECT id FROM orders ORDER BY id"))).all()
    await engine.dispose()

    assert placed.status_code == 202
    assert placed.json()["offset"] is not None
    assert placed.json()["topic"] == TOPIC
    assert stored.status_code == 201
    assert stored.json()["status"] == "queued"
    assert refused.status_code == 422
    assert [row.id for row in rows] == ["o-2"]  # the refused order's row was rolled back
    assert sorted(r.key for r in on_topic) == [b"o-1", b"o-2"]  # and its event never sent
    assert json.loads(on_topic[0].value)["event_type"] == "order.placed"
    body = unavailable.json()
    assert unavailable.status_code == 503
    assert body["record_id"] is not None
    assert body["error"] == "broker_unavailable"
    assert elapsed < DEADLINE_S + 1.0
    assert sorted(r.key for r in replayed) == [b"o-1", b"o-2", b"o-4"]
    assert [dict(r.headers)["event_id"] for r in replayed if r.key == b"o-4"] == [
        body["event_id"].encode()
    ]
