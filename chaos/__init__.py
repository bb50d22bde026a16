"""Chaos runs: load the service while Kafka brokers (or the service) fail, and account for
every request: what was acknowledged, refused, recorded, replayed, duplicated or reordered.

- `chaos.accounting`: the load driver, the topic drain and the accounting (shared with the
  fault tests in `tests/faults`).
- `chaos.cluster`: small helpers over a `devtools.kafka.KafkaCluster` (leaders, ISR).
- `chaos.service`: the service as a real `python -m app` process.
- `chaos.faults`, `chaos.run`: the fault scenarios and `python -m chaos` (`make chaos`),
  which prints a table and writes it to `chaos/RESULTS.md`.
"""
