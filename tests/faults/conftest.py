"""The fault tests' three-node clusters: a plain one, and one with every route through a fault
proxy.

Both are the package's: started when a fault test first asks for one and stopped once the
last fault test is done, so that their six idle nodes (about 13% of a core and 630 MiB each
three) do not sit under the rest of the suite.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chaos.cluster import FAST_FENCING, start_proxied, stop_proxied
from devtools.kafka import KafkaCluster
from tests.helpers.cluster import ProxiedCluster


@pytest.fixture(scope="package")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Three real Kafka nodes: replication factor 3, min.insync.replicas=2, no unclean election.

    A killed broker is fenced (and leaves the ISR) after `broker.session.timeout.ms`; until then
    acks=all writes to its partitions stall. 3 s instead of Kafka's 9 s keeps fault tests short
    without changing what happens.
    """
    with KafkaCluster(
        tmp_path_factory.mktemp("kafka-cluster"),
        nodes=3,
        extra_properties=FAST_FENCING,
    ) as cluster:
        yield cluster


@pytest.fixture(scope="package")
def proxied_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxiedCluster]:
    """Three nodes (as `kafka_cluster`: replication factor 3, min.insync.replicas=2, fenced
    after 3 s) behind a toxiproxy server: the app's, the inter-broker and the KRaft routes
    can each be cut, slowed or reset. Every test heals every route before it ends."""
    cluster, proxy = start_proxied(tmp_path_factory.mktemp("kafka-proxied"))
    try:
        yield ProxiedCluster(cluster, proxy)
    finally:
        stop_proxied(cluster, proxy)
