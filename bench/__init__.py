"""Benchmarks: speed and memory of this service next to other ways of publishing to Kafka.

Run with `make bench` (or `python -m bench`; `--quick` for a smoke run, `--help` for the
knobs). It starts its own one-node Kafka broker on loopback, runs every scenario 3 times,
prints Markdown tables and writes them to `bench/RESULTS.md`. Benchmarks are not tests: `make
test` only lints and type-checks this package.

What is measured
----------------
HTTP (`bench.peers`, `bench.loadgen`): the same `POST /verification-emails` contract (JSON
`{email, redirect_url}` -> `202` with partition and offset; key = email, JSON value, headers
`event_id`/`event_type`) served by one uvicorn worker per peer, each publishing with acks=all
and idempotence to its own topic on the same broker:

- `app`: this project (`app.main:create_app`, the `KafkaPublisher` facade);
- `raw_aiokafka`: one shared `AIOKafkaProducer`, `send_and_wait` per request;
- `faststream`: FastStream's `KafkaBroker` publisher;
- `confluent`: confluent-kafka's `Producer`, delivery reports bridged to asyncio futures;
- `producer_per_request`: a new `AIOKafkaProducer` started and stopped in every request
  (the anti-pattern; fewer requests per run, it is slow);
- `http_only`: no Kafka at all, the ceiling of the HTTP stack on this machine.

A separate load-generator process sends N requests at concurrency C (1 and 32) and measures
throughput, latency percentiles (p50/p95/p99) and non-202 answers, plus the server's CPU time,
peak RSS (`VmHWM`) during the run and RSS after it, from `/proc`.

In-process (`bench.micro`): N publishes without HTTP, one at a time and from 32 concurrent
tasks, through `KafkaPublisher.publish`, `AIOKafkaProducer.send_and_wait`, FastStream's
publisher and confluent-kafka, with the same message (the app's event, ~240 bytes).

Our own code's cost, without Kafka (`bench.overhead`): CPU time, or instructions under
callgrind, per publish or per HTTP request with a stub producer; `bench/PROFILE.md` says where
that CPU goes.

How
---
Every scenario runs 3 times (peers in rotated order) and is reported as the median with the
lowest and highest run. The environment (CPUs, load average, Python, library and Kafka
versions, commit) is recorded with the numbers. Every request loop is bounded in count and
time, targets only 127.0.0.1, and every process and the broker are stopped at the end.
"""
