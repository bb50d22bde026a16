"""Fetch Apache Kafka's broker jars from Maven Central and run a real KRaft cluster on loopback.

No Docker needed: a JDK 17+ and Maven (for the first fetch) are enough. Library use::

    from devtools.kafka import KafkaCluster

    with KafkaCluster(tmp_path / "kafka", nodes=3) as cluster:
        ... cluster.bootstrap_servers ...

    # SASL_SSL (SCRAM-SHA-256/512, a throwaway CA) beside the plaintext listener
    secure = SecureListeners(users={"api": "api-secret"})
    with KafkaCluster(tmp_path / "kafka", secure=secure) as cluster:
        ... cluster.sasl_ssl_bootstrap_servers, cluster.ca_file ...

Command line: ``python -m devtools.kafka --help``. The contract is in ``cluster.py``.
"""

from devtools.kafka.cluster import (
    DEFAULT_KAFKA_VERSION,
    DEFAULT_LIBS_ROOT,
    KAFKA_VERSION_ENV,
    REPO_ROOT,
    KafkaCluster,
    KafkaClusterError,
    KafkaFetchError,
    KafkaToolError,
    NodeStatus,
    SecureListeners,
    ensure_libs,
    new_cluster_id,
    resolve_version,
)

__all__ = [
    "DEFAULT_KAFKA_VERSION",
    "DEFAULT_LIBS_ROOT",
    "KAFKA_VERSION_ENV",
    "REPO_ROOT",
    "KafkaCluster",
    "KafkaClusterError",
    "KafkaFetchError",
    "KafkaToolError",
    "NodeStatus",
    "SecureListeners",
    "ensure_libs",
    "new_cluster_id",
    "resolve_version",
]
