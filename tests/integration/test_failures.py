"""Nothing accepted is lost: failed publishes are recorded and replayed, the outbox relays.

Real broker, real SQLite store.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import PolicyName
from devtools.kafka import KafkaCluster
from kafka_events.messages import OutgoingMessage
from kafka_events.store import Origin, SqlStore
from tests.helpers.kafka import read_at
from tests.helpers.service import make_settings, running_app
from tests.helpers.waiting import closed_ports, eventually, repo_root

pytestmark = pytest.mark.kafka

BODY = {"email": "ada@example.com", "redirect_url": "https://app.example.com/verify"}
TOKEN = "test-admin-token-0123456789"
FAST_RELAY = {"interval_ms": 100, "backoff_max_ms": 300}


async def _wait_delivered(client: httpx.AsyncClient, event_id: str, timeout_s: float) -> Any:
    status: dict[str, Any] = {}

    async def delivered() -> bool:
        nonlocal status
        status = (await client.get(f"/events/{event_id}")).json()
        return status.get("status") == "delivered"

    await eventually(delivered, timeout_s=timeout_s, interval_s=0.1)
    return status


async def test_a_503_is_recorded_then_replayed_once_a_broker_appears(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    port = closed_ports(2)  # a broker starts there later: its port and its controller's
    settings = make_settings(
        f"127.0.0.1:{port}",
        "t-replayed",
        delivery_timeout_ms=1000,
        connect_timeout_ms=500,
        reconnect_backoff_max_ms=300,
        replay=FAST_RELAY,
    )
    async with running_app(settings) as running:
        client = running.client
        refused = await client.post("/verification-emails", json=BODY)
        body = refused.json()
        pending = (await client.get(f"/events/{body['event_id']}")).json()

        cluster = KafkaCluster(tmp_path_factory.mktemp("replay"), nodes=1, broker_port=port)
        await asyncio.to_thread(cluster.start)
        try:
            status = await _wait_delivered(client, body["event_id"], timeout_s=60)
            record = await read_at(
                cluster.bootstrap_servers, "t-replayed", status["partition"], status["offset"]
            )
        finally:
            await asyncio.to_thread(cluster.stop)

    assert refused.status_code == 503
    assert body["record_id"] is not None
    assert (pending["status"], pending["origin"], pending["record_id"]) == (
        "pending",
        "failed",
        body["record_id"],
    )
    assert pending["attempts"] >= 1
    assert json.loads(record.value)["event_id"] == body["event_id"]
    assert dict(record.headers)["event_id"] == body["event_id"].encode()
    assert record.key == b"ada@example.com"


async def test_an_outbox_policy_answers_at_once_and_the_relay_delivers(
    kafka_broker: KafkaCluster, topic: str
) -> None:
    settings = make_settings(kafka_broker.bootstrap_servers, topic, outbox=True, replay=FAST_RELAY)
    async with running_app(settings) as running:
        accepted = await running.client.post("/verification-emails", json=BODY)
        queued = accepted.json()
        status = await _wait_delivered(running.client, queued["event_id"], timeout_s=20)

    assert accepted.status_code == 202
    assert queued["status"] == "queued"
    assert queued["record_id"] == status["record_id"]
    assert status["origin"] == "outbox"
    record = await read_at(
        kafka_broker.bootstrap_servers, topic, status["partition"], status["offset"]
    )
    assert json.loads(record.value)["event_id"] == queued["event_id"]


async def test_a_record_too_large_is_refused_with_413_and_not_kept(
    kafka_broker: KafkaCluster, topic: str
) -> None:
    settings = make_settings(
        kafka_broker.bootstrap_servers, topic, max_request_size=512, max_batch_size=512
    )
    body = {"email": "ada@example.com", "redirect_url": "https://x.example/" + "a" * 1000}
    async with running_app(settings) as running:
        response = await running.client.post("/verification-emails", json=body)
        kept = await running.state.store.count()

    assert response.status_code == 413
    assert response.json()["error"] == "record_too_large"
    assert response.json()["record_id"] is None
    assert kept == 0


async def test_admin_routes_need_the_token(kafka_broker: KafkaCluster, topic: str) -> None:
    async with running_app(make_settings(kafka_broker.bootstrap_servers, topic)) as running:
        disabled = await running.client.get("/admin/messages")
    settings = make_settings(kafka_broker.bootstrap_servers, topic, admin_token=TOKEN)
    async with running_app(settings) as running:
        missing = await running.client.get("/admin/messages")
        wrong = await running.client.get(
            "/admin/messages", headers={"Authorization": "Bearer not-the-token-at-all"}
        )

    assert (disabled.status_code, disabled.json()["error"]) == (403, "admin_disabled")
    assert (missing.status_code, missing.json()["error"]) == (401, "unauthorized")
    assert missing.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 401


async def test_admin_routes_list_show_replay_and_purge(
    kafka_broker: KafkaCluster, topic: str, tmp_path: Path
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    # Abandoned before the app starts: the relay's first round, at start-up, finds nothing
    # pending (recorded while the app ran, a slow first round could publish it before it is
    # abandoned). No round of its own after that: only the replay route's wake-up.
    url = f"sqlite+aiosqlite:///{tmp_path}/admin.db"
    prepared = SqlStore(url)
    await prepared.open()
    try:
        stored = await prepared.record(
            OutgoingMessage(topic=topic, value=b"{}", key=b"k", event_id="ev-admin"),
            origin=Origin.FAILED,
            policy="replicated",
        )
        await prepared.mark_failed(stored.id, error_type="X", error="by hand", abandon=True)
    finally:
        await prepared.close()
    settings = make_settings(
        kafka_broker.bootstrap_servers,
        topic,
        admin_token=TOKEN,
        replay={**FAST_RELAY, "interval_ms": 600000},
        store_url=url,
    )
    async with running_app(settings) as running:
        client = running.client
        listed = (await client.get("/admin/messages?status=abandoned", headers=auth)).json()
        shown = (await client.get(f"/admin/messages/{stored.id}", headers=auth)).json()
        replayed = await client.post("/admin/messages/replay", json={"all": True}, headers=auth)
        await _wait_delivered(client, "ev-admin", timeout_s=20)
        refused = await client.delete("/admin/messages?status=pending", headers=auth)
        purged = await client.delete("/admin/messages", headers=auth)
        missing = await client.get(f"/admin/messages/{stored.id}", headers=auth)

    assert [m["record_id"] for m in listed] == [stored.id]
    assert (shown["error"], shown["key"], shown["status"]) == ("by hand", "k", "abandoned")
    assert replayed.json() == {"count": 1}
    assert refused.status_code == 422
    assert purged.json() == {"count": 1}
    assert missing.status_code == 404


async def test_the_cli_lists_and_replays_by_hand(
    kafka_broker: KafkaCluster, tmp_path: Path
) -> None:
    topic = "t-cli-replay"
    url = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    store = SqlStore(url)
    await store.open()
    for n in range(30):
        await store.record(
            OutgoingMessage(topic=topic, value=b'{"n": %d}' % n, key=b"k", event_id=f"cli-{n}"),
            origin=Origin.FAILED,
            policy=PolicyName.LEADER,
        )
    env = {
        **os.environ,
        # run from an empty folder (no .env) but with the project importable
        "PYTHONPATH": str(repo_root()),
        "STORE__URL": url,
        "KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
    }

    async def cli(*args: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.failures",
            *args,
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(60):
            output, _ = await process.communicate()
        return process.returncode or 0, output.decode()

    listed = await cli("list", "--status", "pending")
    replayed = await cli("replay", "--all")
    purged = await cli("purge")
    remaining = await store.count()
    await store.close()

    assert listed[0] == 0
    assert "30 shown" in listed[1]
    assert replayed == (0, replayed[1])
    assert "30 delivered, 0 failed" in replayed[1]
    assert "30 purged" in purged[1]
    assert remaining == 0
