"""The fault proxy (toxiproxy, `devtools.faultproxy`) against a real TCP echo server on loopback:
each fault does to a connection what it says, and `heal` undoes it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from devtools.faultproxy import BLACKHOLE, REFUSE, FaultProxy, FaultProxyError
from tests.helpers.waiting import closed_port

# A byte that does not come back within this time is taken as not passing. Only used where the
# proxy is meant to hold everything back.
SILENCE_S = 1.0
IO_TIMEOUT_S = 10.0

# The first test of a fresh machine builds toxiproxy from its Go module (bounded by
# devtools.faultproxy.BUILD_TIMEOUT_S); later ones take seconds.
pytestmark = pytest.mark.timeout(660)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultProxy]:
    with FaultProxy(tmp_path_factory.mktemp("faultproxy")) as running:
        yield running


@contextlib.asynccontextmanager
async def echo_route(proxy: FaultProxy, name: str) -> AsyncIterator[str]:
    """An echo server on loopback and a route `name` to it; yields the route's address."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    upstream = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    listen = f"127.0.0.1:{closed_port()}"
    await asyncio.to_thread(proxy.add, name, listen, upstream)
    try:
        yield listen
    finally:
        await asyncio.to_thread(proxy.heal, [name])
        server.close()


async def _connect(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = address.rsplit(":", 1)
    async with asyncio.timeout(IO_TIMEOUT_S):
        return await asyncio.open_connection(host, int(port))


async def _round_trip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, timeout_s: float
) -> bytes:
    writer.write(data)
    await writer.drain()
    async with asyncio.timeout(timeout_s):
        return await reader.readexactly(len(data))


async def test_a_route_forwards_both_ways(proxy: FaultProxy) -> None:
    async with echo_route(proxy, "plain") as address:
        reader, writer = await _connect(address)
        echoed = await _round_trip(reader, writer, b"x" * 100_000, IO_TIMEOUT_S)
        writer.close()

    assert echoed == b"x" * 100_000
    assert proxy.faults() == {}


async def test_refuse_closes_connections_and_refuses_new_ones_until_healed(
    proxy: FaultProxy,
) -> None:
    async with echo_route(proxy, "refused") as address:
        reader, writer = await _connect(address)
        await _round_trip(reader, writer, b"before", IO_TIMEOUT_S)
        await asyncio.to_thread(proxy.cut, ["refused"], REFUSE)
        faults = proxy.faults()
        async with asyncio.timeout(IO_TIMEOUT_S):
            leftover = await reader.read()  # the open connection is closed: EOF
        with pytest.raises(ConnectionRefusedError):
            await _connect(address)
        await asyncio.to_thread(proxy.heal, ["refused"])
        reader2, writer2 = await _connect(address)
        after = await _round_trip(reader2, writer2, b"after", IO_TIMEOUT_S)
        writer.close()
        writer2.close()

    assert faults == {"refused": ["refuse"]}
    assert leftover == b""
    assert after == b"after"


async def test_blackhole_accepts_connections_and_passes_nothing_until_healed(
    proxy: FaultProxy,
) -> None:
    async with echo_route(proxy, "blackholed") as address:
        reader, writer = await _connect(address)
        await _round_trip(reader, writer, b"before", IO_TIMEOUT_S)
        await asyncio.to_thread(proxy.cut, ["blackholed"], BLACKHOLE)
        faults = proxy.faults()
        with pytest.raises(TimeoutError):  # the open connection: silence, no error
            await _round_trip(reader, writer, b"lost", SILENCE_S)
        new_reader, new_writer = await _connect(address)  # accepted...
        with pytest.raises(TimeoutError):  # ...but nothing comes back
            await _round_trip(new_reader, new_writer, b"lost too", SILENCE_S)
        await asyncio.to_thread(proxy.heal, ["blackholed"])
        reader2, writer2 = await _connect(address)
        after = await _round_trip(reader2, writer2, b"after", IO_TIMEOUT_S)
        for w in (writer, new_writer, writer2):
            w.close()

    assert sorted(faults["blackholed"]) == ["timeout-downstream", "timeout-upstream"]
    assert after == b"after"


async def test_reset_resets_connections_that_carry_data(proxy: FaultProxy) -> None:
    async with echo_route(proxy, "reset") as address:
        reader, writer = await _connect(address)
        await asyncio.to_thread(proxy.reset, ["reset"])
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await _round_trip(reader, writer, b"data", IO_TIMEOUT_S)
        await asyncio.to_thread(proxy.heal, ["reset"])
        reader2, writer2 = await _connect(address)
        after = await _round_trip(reader2, writer2, b"after", IO_TIMEOUT_S)
        writer.close()
        writer2.close()

    assert after == b"after"


async def test_slow_adds_latency_and_a_bandwidth_cap_on_each_direction(
    proxy: FaultProxy,
) -> None:
    async with echo_route(proxy, "slow") as address:
        await asyncio.to_thread(proxy.slow, ["slow"], latency_ms=50, jitter_ms=10, rate_kb_s=64)
        faults = proxy.faults()
        reader, writer = await _connect(address)
        echoed = await _round_trip(reader, writer, b"y" * 1000, IO_TIMEOUT_S)  # still passes
        writer.close()

    assert sorted(faults["slow"]) == [
        "bandwidth-downstream",
        "bandwidth-upstream",
        "latency-downstream",
        "latency-upstream",
    ]
    assert echoed == b"y" * 1000


def test_routes_stay_on_loopback(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="loopback"):
        proxy.add("away", "10.0.0.1:9092", "127.0.0.1:9092")
    with pytest.raises(ValueError, match="loopback"):
        proxy.add("away", "127.0.0.1:9092", "example.com:9092")
    with pytest.raises(FaultProxyError, match="no route"):
        proxy.cut(["never-added"])


def test_a_stopped_proxy_says_so(tmp_path: Path) -> None:
    idle = FaultProxy(tmp_path)
    with pytest.raises(FaultProxyError, match="not running"):
        idle.faults()
    idle.stop()  # idempotent
