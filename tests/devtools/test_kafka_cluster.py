"""Tests of devtools.kafka against real brokers: no mocks, every wait bounded.

Each cluster lives in a temporary directory on free loopback ports (``broker_port=None``), so
these tests never touch a developer's broker on 9092. The JVMs are started and stopped here.
"""

# S101: assert is the pytest idiom. pyproject.toml already ignores S101; this file-level
# exemption keeps ad-hoc `ruff check --select ...,S` runs clean too, and RUF100 is listed
# because under the project configuration the S101 exemption is redundant.
# ruff: noqa: S101, RUF100

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import (  # type: ignore[import-untyped]
    AIOKafkaClient,
    AIOKafkaConsumer,
    AIOKafkaProducer,
)
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

from devtools.kafka import (
    DEFAULT_KAFKA_VERSION,
    KAFKA_VERSION_ENV,
    REPO_ROOT,
    KafkaCluster,
    KafkaClusterError,
    KafkaToolError,
    SecureListeners,
    new_cluster_id,
    resolve_version,
)
from devtools.kafka.cluster import _run_all_bounded

# Produce/consume, topic creation and fail-over against real brokers take seconds, not more.
IO_TIMEOUT_S = 60
CLI_TIMEOUT_S = 120

# Fail-over and restart both wait for the broker session to expire (Kafka default: 9 s); a
# shorter session keeps the fault test quick without changing what it proves.
FAST_SESSION = {"broker.session.timeout.ms": "3000", "broker.heartbeat.interval.ms": "500"}


def _pid_exists(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _topic() -> str:
    return f"devtools-{uuid.uuid4().hex[:12]}"


async def _broker_ids(address: str) -> set[int]:
    """Broker ids in the metadata answered by one address."""
    client: Any = AIOKafkaClient(bootstrap_servers=address)
    try:
        await client.bootstrap()
        return {b.nodeId for b in client.cluster.brokers()}
    finally:
        await client.close()


def _partitions(described: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Partitions of the one topic in an ``AIOKafkaAdminClient.describe_topics`` answer."""
    [description] = described
    assert description["error_code"] == 0, description
    partitions: list[dict[str, Any]] = sorted(
        description["partitions"], key=lambda p: int(p["partition"])
    )
    return partitions


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m devtools.kafka`` in a separate process, as a developer would."""
    return subprocess.run(
        [sys.executable, "-m", "devtools.kafka", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


# ---- no broker needed ---------------------------------------------------------------------


def test_explicit_ports_follow_the_documented_scheme(tmp_path: Path) -> None:
    cluster = KafkaCluster(tmp_path, nodes=3, broker_port=9092)

    assert cluster.bootstrap_servers == "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096"
    props = cluster.node_properties(2)
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:9093,2@127.0.0.1:9095,3@127.0.0.1:9097"
    )
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9094,CONTROLLER://127.0.0.1:9095"
    assert props["min.insync.replicas"] == "2"
    assert props["transaction.state.log.min.isr"] == "2"
    assert props["unclean.leader.election.enable"] == "false"
    assert KafkaCluster(tmp_path, broker_port=9092).bootstrap_servers == "127.0.0.1:9092"


def test_secured_listeners_take_the_ports_after_the_plaintext_ones(tmp_path: Path) -> None:
    secure = SecureListeners(users={"api": "api-secret"}, sasl_plaintext=True)
    cluster = KafkaCluster(tmp_path, nodes=3, broker_port=9092, secure=secure)

    assert cluster.bootstrap_servers == "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096"
    assert cluster.sasl_ssl_bootstrap_servers == "127.0.0.1:9098,127.0.0.1:9100,127.0.0.1:9102"
    assert cluster.sasl_plaintext_bootstrap_servers == (
        "127.0.0.1:9099,127.0.0.1:9101,127.0.0.1:9103"
    )
    props = cluster.node_properties(2)
    assert props["listeners"] == (
        "PLAINTEXT://127.0.0.1:9094,SASL_SSL://127.0.0.1:9100,"
        "SASL_PLAINTEXT://127.0.0.1:9101,CONTROLLER://127.0.0.1:9095"
    )
    assert props["listener.security.protocol.map"] == (
        "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SASL_PLAINTEXT:SASL_PLAINTEXT"
    )
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-256,SCRAM-SHA-512"
    assert props["ssl.keystore.type"] == "PEM"
    assert props["ssl.truststore.location"] == str(cluster.ca_file)
    assert cluster._scram_arguments() == [
        "--add-scram=SCRAM-SHA-256=[name=api,password=api-secret]",
        "--add-scram=SCRAM-SHA-512=[name=api,password=api-secret]",
    ]


def test_secured_listeners_and_their_ca_survive_a_load(tmp_path: Path) -> None:
    secure = SecureListeners(users={"api": "api-secret"})
    cluster = KafkaCluster(tmp_path / "secured", secure=secure)
    cluster._prepare_workdir()  # what start() writes before formatting
    ca = cluster.ca_file.read_bytes()

    loaded = KafkaCluster.load(cluster.workdir)
    loaded._prepare_workdir()

    assert loaded.secure == secure
    assert loaded.sasl_ssl_bootstrap_servers == cluster.sasl_ssl_bootstrap_servers
    assert loaded.ca_file.read_bytes() == ca  # clients keep trusting the same CA
    assert b"BEGIN PRIVATE KEY" in (cluster.tls_dir / "server.pem").read_bytes()
    plain = KafkaCluster(tmp_path / "plain")
    plain._prepare_workdir()
    state = json.loads((plain.workdir / "cluster.json").read_text())
    assert "secure" not in state
    assert set(state["nodes"][0]) == {"node_id", "broker_port", "controller_port"}


def test_secured_listeners_are_opt_in_and_validated(tmp_path: Path) -> None:
    plain = KafkaCluster(tmp_path, broker_port=9092)
    with pytest.raises(KafkaClusterError, match="no SASL_SSL listener"):
        _ = plain.sasl_ssl_bootstrap_servers
    assert not any(key.startswith(("sasl.", "ssl.")) for key in plain.node_properties(1))
    with pytest.raises(ValueError, match="at least one SCRAM user"):
        SecureListeners(users={})
    with pytest.raises(ValueError, match="names and passwords"):
        SecureListeners(users={"api": "has,comma"})


def test_settings_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nodes"):
        KafkaCluster(tmp_path, nodes=2)
    with pytest.raises(ValueError, match="heap_mb"):
        KafkaCluster(tmp_path, heap_mb=1024)
    with pytest.raises(ValueError, match="min_insync_replicas"):
        KafkaCluster(tmp_path, nodes=1, min_insync_replicas=2)
    assert len(new_cluster_id()) == 22


def test_version_comes_from_argument_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KAFKA_VERSION_ENV, raising=False)
    assert resolve_version() == DEFAULT_KAFKA_VERSION
    monkeypatch.setenv(KAFKA_VERSION_ENV, "4.3.1")
    assert resolve_version() == "4.3.1"
    assert resolve_version("4.2.0") == "4.2.0"
    monkeypatch.setenv(KAFKA_VERSION_ENV, "../4.4.0")
    with pytest.raises(KafkaToolError, match="invalid Kafka version"):
        resolve_version()


def test_a_tool_that_times_out_is_reported_with_what_it_printed() -> None:
    chatty = [
        sys.executable,
        "-c",
        "import time; print('waiting for entropy', flush=True); time.sleep(30)",
    ]
    started = time.monotonic()

    with pytest.raises(KafkaToolError, match="timed out after 1s") as raised:
        _run_all_bounded([chatty], 1.0, what="formatting")

    assert "waiting for entropy" in str(raised.value)
    assert time.monotonic() - started < 10  # killed, not waited for


def test_stale_pid_file_counts_as_stopped(tmp_path: Path) -> None:
    cluster = KafkaCluster(tmp_path, nodes=1)
    cluster.node_dir(1).mkdir(parents=True)
    # A live process that is not this node's JVM: the pid was reused after a crash.
    (cluster.node_dir(1) / "pid").write_text(f"{os.getpid()}\n")

    assert not cluster.is_running(1)
    cluster.stop()  # idempotent, signals nothing, clears the stale pid file
    assert not (cluster.node_dir(1) / "pid").exists()


# ---- one node -----------------------------------------------------------------------------


@pytest.mark.kafka
async def test_single_node_round_trip_and_clean_stop(tmp_path: Path) -> None:
    cluster = KafkaCluster(tmp_path / "kafka", nodes=1)
    # Called from the event loop's thread on purpose: the sync API must work there too.
    cluster.start()
    try:
        pid = cluster.pid(1)
        assert pid is not None
        assert KafkaCluster.load(cluster.workdir).bootstrap_servers == cluster.bootstrap_servers
        topic = _topic()
        producer = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap_servers, acks="all")
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=cluster.bootstrap_servers,
            group_id=f"g-{topic}",  # a consumer group: needs the offsets topic (RF 1 here)
            auto_offset_reset="earliest",
        )
        async with asyncio.timeout(IO_TIMEOUT_S):
            await producer.start()
            try:
                sent = await producer.send_and_wait(topic, b"hello", key=b"k")
            finally:
                await producer.stop()
            await consumer.start()
            try:
                received = await consumer.getone()
            finally:
                await consumer.stop()
        assert sent.offset == 0
        assert (received.key, received.value, received.offset) == (b"k", b"hello", 0)
    finally:
        cluster.stop()

    assert not cluster.is_running(1)
    assert not _pid_exists(pid), "the broker JVM survived stop()"
    assert not (cluster.node_dir(1) / "pid").exists()
    cluster.stop()  # idempotent


@pytest.mark.kafka
def test_node_dying_during_start_up_is_reported_with_its_log(tmp_path: Path) -> None:
    # Passes the storage formatter (a plain string setting) but kills the broker at start-up.
    cluster = KafkaCluster(
        tmp_path / "kafka", extra_properties={"authorizer.class.name": "devtools.NoSuchClass"}
    )

    with pytest.raises(KafkaClusterError, match="exited during start-up") as failure:
        cluster.start(timeout=60)

    summary, _, details = str(failure.value).partition("\n")
    assert "ClassNotFoundException: devtools.NoSuchClass" in summary
    assert "last lines of" in details
    assert not cluster.is_running(1)


@pytest.mark.kafka
def test_restart_reuses_the_cluster_id_and_refuses_a_mismatch(tmp_path: Path) -> None:
    workdir = tmp_path / "kafka"
    with KafkaCluster(workdir, nodes=1) as first:
        cluster_id = first.cluster_id
    with KafkaCluster(workdir, nodes=1) as second:  # new object, same directory: same data
        assert second.cluster_id == cluster_id
    state = json.loads((workdir / "cluster.json").read_text())
    state["cluster_id"] = new_cluster_id()  # the formatted storage now disagrees
    (workdir / "cluster.json").write_text(json.dumps(state))
    cluster = KafkaCluster.load(workdir)

    with pytest.raises(KafkaClusterError, match=r"formatting .* failed .*Invalid cluster\.id"):
        cluster.start(timeout=60)
    assert not cluster.is_running(1)


# ---- three nodes --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    cluster = KafkaCluster(
        tmp_path_factory.mktemp("kafka3"), nodes=3, extra_properties=FAST_SESSION
    )
    with cluster:
        yield cluster


@pytest.mark.kafka
@pytest.mark.cluster
async def test_three_brokers_are_registered(cluster3: KafkaCluster) -> None:
    assert cluster3.node_ids == (1, 2, 3)
    async with asyncio.timeout(IO_TIMEOUT_S):
        for node_id in cluster3.node_ids:
            assert await _broker_ids(cluster3.broker_address(node_id)) == {1, 2, 3}


@pytest.mark.kafka
@pytest.mark.cluster
async def test_acks_all_survives_a_killed_broker(cluster3: KafkaCluster) -> None:
    topic = _topic()
    admin: Any = AIOKafkaAdminClient(bootstrap_servers=cluster3.bootstrap_servers)
    producer: Any = AIOKafkaProducer(bootstrap_servers=cluster3.bootstrap_servers, acks="all")
    async with asyncio.timeout(IO_TIMEOUT_S):
        await admin.start()
        await producer.start()
    try:
        async with asyncio.timeout(IO_TIMEOUT_S):
            response = await admin.create_topics([NewTopic(topic, 3, 3)])
            assert [error[1] for error in response.topic_errors] == [0]
            # acks=all on every partition: afterwards every broker knows the topic.
            for partition in range(3):
                await producer.send_and_wait(topic, b"before", partition=partition)
            partitions = _partitions(await admin.describe_topics([topic]))
        assert [sorted(p["isr"]) for p in partitions] == [[1, 2, 3]] * 3
        victim = int(partitions[0]["leader"])

        cluster3.kill_node(victim)
        assert not cluster3.is_running(victim)
        async with asyncio.timeout(IO_TIMEOUT_S):
            # The leader is gone: this waits for fencing and a new leader, then needs 2 ISR.
            during = await producer.send_and_wait(topic, b"during", partition=0)
        assert during.offset == 1

        cluster3.start_node(victim)
        assert cluster3.is_running(victim)
        async with asyncio.timeout(IO_TIMEOUT_S):
            assert await _broker_ids(cluster3.broker_address(victim)) == {1, 2, 3}
            after = await producer.send_and_wait(topic, b"after", partition=0)
        assert after.offset == 2
    finally:
        async with asyncio.timeout(IO_TIMEOUT_S):
            await producer.stop()
            await admin.close()


@pytest.mark.kafka
@pytest.mark.cluster
def test_cli_controls_a_cluster_started_by_another_process(cluster3: KafkaCluster) -> None:
    workdir = str(cluster3.workdir)

    status = _cli("status", "--dir", workdir)
    assert status.returncode == 0, status.stderr
    for node_id in cluster3.node_ids:
        line = re.search(rf"^node {node_id} .*$", status.stdout, re.MULTILINE)
        assert line is not None, status.stdout
        assert f"running  pid {cluster3.pid(node_id)} " in line.group(0)
        assert cluster3.broker_address(node_id) in line.group(0)

    killed = _cli("kill", "3", "--dir", workdir)
    assert killed.returncode == 0, killed.stderr
    assert not cluster3.is_running(3)
    assert re.search(r"^node 3 +stopped", _cli("status", "--dir", workdir).stdout, re.MULTILINE)

    restarted = _cli("restart", "3", "--dir", workdir)
    assert restarted.returncode == 0, restarted.stderr
    assert cluster3.is_running(3)  # started by the CLI process, seen through its pid file
    cluster3.wait_ready(timeout=60)

    missing = _cli("status", "--dir", str(cluster3.workdir / "nowhere"))
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: no Kafka cluster in ")
    assert len(missing.stderr.strip().splitlines()) == 1


def test_cluster_ids_never_look_like_an_option() -> None:
    ids = {new_cluster_id() for _ in range(2000)}

    assert len(ids) == 2000
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
