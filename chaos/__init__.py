"""Chaos runs: load the service while Kafka brokers (or the service, or the network between
them, or its store) fail, and account for every request: what was acknowledged, refused,
recorded, not kept, replayed, duplicated (and why) or reordered.

- `chaos.accounting`: the load driver, the topic drain and the accounting (shared with the
  fault tests in `tests/faults`); `chaos.duplicates` explains each duplicate.
- `chaos.cluster`: small helpers over a `devtools.kafka.KafkaCluster` (leaders, ISR) and over
  the routes of a proxied one, served by `devtools.faultproxy` (toxiproxy).
- `chaos.service`: the service as a real `python -m app` process.
- `chaos.plan`: what a scenario is given; `chaos.network`, `chaos.pauses` and
  `chaos.store_lock`: the partitions and slow or lossy links, the paused processes, the store
  that cannot be written.
- `chaos.faults`, `chaos.run`: the fault scenarios and `python -m chaos` (`make chaos`),
  which prints a table and writes it to `chaos/RESULTS.md`.
"""
