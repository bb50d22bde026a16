"""Every query and path parameter is bounded: a value out of bounds gets 422, never a 500.

The hostile values (`tests.helpers.bounds`: integers past 32 and 64 bits, negative ones, long
strings, a NUL) go to every parameter of every operation of the app's real schema, the app
running its real lifespan with its default store, SQLite (PostgreSQL:
`tests/integration/test_parameter_bounds_postgres.py`). Admin requests carry the token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.helpers import bounds
from tests.helpers.service import RunningApp, make_settings, running_app
from tests.helpers.waiting import closed_port

TOKEN = "bounds-admin-token-0123456789"


@pytest.fixture
async def app() -> AsyncIterator[RunningApp]:
    settings = make_settings(
        f"127.0.0.1:{closed_port()}", "t-bounds", admin_token=TOKEN, connect_timeout_ms=200
    )
    async with running_app(settings) as running:
        yield running


def test_every_parameter_declares_its_bounds(app: RunningApp) -> None:
    spec = app.app.openapi()

    loose = {p.label: why for p in bounds.parameters(spec) if (why := bounds.unbounded(p))}

    assert loose == {}
    assert len(list(bounds.parameters(spec))) >= 6  # ids, status, limit, after_seq, wait_for


async def test_hostile_values_get_422_with_the_json_error_body_on_sqlite(app: RunningApp) -> None:
    sent, wrong = await bounds.probe(
        app.client, app.app.openapi(), headers={"Authorization": f"Bearer {TOKEN}"}
    )

    assert [(a.parameter.label, a.value, a.status, a.body) for a in wrong] == []
    assert sent >= 40


async def test_the_largest_position_postgresql_can_hold_is_accepted(app: RunningApp) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    largest = await app.client.get(f"/admin/messages?after_seq={2**31 - 1}", headers=auth)
    past = await app.client.get(f"/admin/messages?after_seq={2**31}", headers=auth)

    assert (largest.status_code, largest.json()) == (200, [])
    assert past.status_code == 422
    assert past.json()["errors"] == [
        {
            "loc": ["query", "after_seq"],
            "msg": "Input should be less than or equal to 2147483647",
            "type": "less_than_equal",
        }
    ]
