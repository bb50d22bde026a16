"""The proxied three-node cluster of the fault tests: every route through a fault proxy."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chaos.cluster import start_proxied, stop_proxied
from tests.helpers.cluster import ProxiedCluster


@pytest.fixture(scope="session")
def proxied_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxiedCluster]:
    """Three nodes (as `kafka_cluster`: replication factor 3, min.insync.replicas=2, fenced
    after 3 s) behind a toxiproxy server: the app's, the inter-broker and the KRaft routes
    can each be cut, slowed or reset. Every test heals every route before it ends."""
    cluster, proxy = start_proxied(tmp_path_factory.mktemp("kafka-proxied"))
    try:
        yield ProxiedCluster(cluster, proxy)
    finally:
        stop_proxied(cluster, proxy)
