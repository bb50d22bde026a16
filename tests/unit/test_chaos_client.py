"""The fault runs' HTTP clients against the service they load."""

from __future__ import annotations

from app.config import ServerSettings
from chaos.faults import CLIENT_IDLE_S


def test_the_load_drops_idle_connections_before_the_service_closes_them() -> None:
    # Equal timeouts race: the server closes an idle connection just as the client sends on
    # it, and that request gets no answer (a ReadError in the fault tests).
    keep_alive_s = ServerSettings().keep_alive_timeout_s
    assert keep_alive_s >= 2 * CLIENT_IDLE_S
