"""Every query and path parameter is bounded on PostgreSQL too, where the limits are tighter:
`seq` is a 32-bit INTEGER, and text may not hold a NUL (both answered 500 before).

The same hostile values as `tests/unit/test_parameter_bounds.py`, sent to the app running its
real lifespan with a real PostgreSQL store (no broker: the store routes do not need one).
"""

from __future__ import annotations

from kafka_events.messages import OutgoingMessage
from kafka_events.store import Origin
from tests.helpers import bounds
from tests.helpers.service import make_settings, running_app
from tests.helpers.waiting import closed_port

TOKEN = "bounds-admin-token-0123456789"


async def test_hostile_values_get_422_with_the_json_error_body_on_postgresql(
    postgres_url: str,
) -> None:
    settings = make_settings(
        f"127.0.0.1:{closed_port()}",
        "t-bounds-pg",
        store_url=postgres_url,
        admin_token=TOKEN,
        connect_timeout_ms=200,
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with running_app(settings) as running:
        stored = await running.state.store.record(
            OutgoingMessage(topic="t-bounds-pg", value=b"{}", key=b"k", event_id="ev-bounds"),
            origin=Origin.FAILED,
            policy="replicated",
        )
        sent, wrong = await bounds.probe(running.client, running.app.openapi(), headers=auth)
        largest = await running.client.get(f"/admin/messages?after_seq={2**31 - 1}", headers=auth)
        first = await running.client.get("/admin/messages?after_seq=0&limit=1", headers=auth)
        replay = await running.client.post(
            "/admin/messages/replay", json={"ids": ["a\x00b"]}, headers=auth
        )

    assert [(a.parameter.label, a.value, a.status, a.body) for a in wrong] == []
    assert sent >= 40
    assert (largest.status_code, largest.json()) == (200, [])
    assert [(m["record_id"], m["seq"]) for m in first.json()] == [(stored.id, stored.seq)]
    assert replay.status_code == 422
    assert replay.json()["errors"][0]["loc"] == ["body", "ids", 0]
