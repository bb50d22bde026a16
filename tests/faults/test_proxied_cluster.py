"""`KafkaCluster(proxied=True)`: every route to a node is an address of its own, which the
fault proxy serves (no JVM here; `test_partitions.py` shows the routes carry the traffic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.cluster import client_links, isolation_links, peer_links
from devtools.kafka import KafkaCluster, SecureListeners


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def test_every_route_to_a_node_has_an_address_of_its_own(tmp_path: Path) -> None:
    cluster = KafkaCluster(tmp_path, nodes=3, proxied=True)
    links = {link.name: link for link in cluster.links()}

    assert sorted(links) == sorted(
        [f"client-{x}" for x in (1, 2, 3)]
        + [
            f"{kind}-{y}-to-{x}"
            for kind in ("broker", "controller")
            for x in (1, 2, 3)
            for y in (1, 2, 3)
            if y != x
        ]
    )
    listens = [_port(link.listen) for link in links.values()]
    upstreams = {_port(link.upstream) for link in links.values()}
    assert len(set(listens)) == len(listens) == 15
    assert not set(listens) & upstreams  # the proxy's ports are none of the nodes' own
    assert all(link.listen.startswith("127.0.0.1:") for link in links.values())
    # clients are told the client routes; the nodes' own listeners stay behind them
    assert cluster.bootstrap_servers == ",".join(links[f"client-{x}"].listen for x in (1, 2, 3))
    assert [cluster.direct_address(x) for x in (1, 2, 3)] == [
        links[f"client-{x}"].upstream for x in (1, 2, 3)
    ]
    assert cluster.proxied
    assert not KafkaCluster(tmp_path / "plain", nodes=3).proxied


def test_each_node_reaches_its_peers_through_their_routes(tmp_path: Path) -> None:
    cluster = KafkaCluster(tmp_path, nodes=3, proxied=True)
    links = {link.name: link for link in cluster.links()}
    props = cluster.node_properties(2)

    # node 2 uses its own listener name; every node advertises FROM_2 at the route 2 -> it
    assert props["inter.broker.listener.name"] == "FROM_2"
    advertised = dict(item.split("://") for item in props["advertised.listeners"].split(","))
    assert advertised["PLAINTEXT"] == links["client-2"].listen
    assert advertised["FROM_1"] == links["broker-1-to-2"].listen
    assert advertised["FROM_3"] == links["broker-3-to-2"].listen
    listeners = dict(item.split("://") for item in props["listeners"].split(","))
    assert advertised["FROM_2"] == listeners["FROM_2"]  # a node reaches itself directly
    assert links["broker-1-to-2"].upstream == listeners["FROM_1"]
    # node 2 reaches the controllers of 1 and 3 through the routes 2 -> 1 and 2 -> 3
    assert props["controller.quorum.voters"] == ",".join(
        [
            f"1@{links['controller-2-to-1'].listen}",
            f"2@{cluster.controller_address(2)}",
            f"3@{links['controller-2-to-3'].listen}",
        ]
    )
    assert props["listener.security.protocol.map"] == (
        "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,FROM_1:PLAINTEXT,FROM_2:PLAINTEXT,FROM_3:PLAINTEXT"
    )


def test_partition_helpers_pick_the_routes_of_a_fault(tmp_path: Path) -> None:
    cluster = KafkaCluster(tmp_path, nodes=3, proxied=True)

    assert client_links(cluster) == ["client-1", "client-2", "client-3"]
    assert len(peer_links(cluster)) == 12
    assert sorted(isolation_links(cluster, 1)) == sorted(
        [
            f"{kind}-{a}-to-{b}"
            for kind in ("broker", "controller")
            for a, b in ((1, 2), (1, 3), (2, 1), (3, 1))
        ]
    )


def test_a_proxied_cluster_survives_a_load(tmp_path: Path) -> None:
    cluster = KafkaCluster(tmp_path, nodes=3, proxied=True)
    cluster._prepare_workdir()  # what start() writes before formatting

    loaded = KafkaCluster.load(cluster.workdir)

    assert loaded.links() == cluster.links()
    assert loaded.node_properties(3) == cluster.node_properties(3)


def test_a_proxied_cluster_picks_its_ports_and_has_no_secured_listeners(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="proxied"):
        KafkaCluster(tmp_path, nodes=3, proxied=True, broker_port=9092)
    with pytest.raises(ValueError, match="proxied"):
        KafkaCluster(tmp_path, proxied=True, secure=SecureListeners(users={"a": "b"}))
    assert KafkaCluster(tmp_path, nodes=3, broker_port=9092).links() == []
