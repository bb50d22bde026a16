"""Benchmarks: speed and memory of this service next to the seed's NestJS stack, the Python
peers and two ceilings, on one machine and one broker.

Run with `make bench` (or `python -m bench`; `--quick` for a smoke run, `--help` for the
knobs). It installs Node.js (from Debian, when missing) and the Node peers from their lock
file, starts its own brokers on loopback, and writes `bench/results/bench-<date>-<HHMM>.json`, `.md`
and three plots, `bench/RESULTS.md` and the README's benchmark section. Benchmarks are not
tests: `make test` only lints and type-checks this package.

Contenders (`bench.contenders`), each serving the same `POST /verification-emails` contract
(same validation, topic, key, JSON value and headers; a 202 with the broker's offset
metadata; the same acks and idempotence): this service as it runs in production; NestJS
ClientKafka `emit` and `send` (request-reply); NestJS with a raw kafkajs producer from a
`useFactory` provider; FastAPI with FastStream's `KafkaRouter`, with one raw `AIOKafkaProducer`,
with confluent-kafka (a poll thread, and its `AIOProducer`), with a producer per request; and
the HTTP ceiling (the same route without Kafka). The producer ceiling, a raw `send_and_wait`
loop without HTTP, is among the in-process runs (`bench.micro`).

What is measured (`bench.plan`), in phases (acks=all, 1 and 0 on one broker; two server
processes; a three-broker cluster), each in interleaved rounds (A B C ..., rotated each
round), medians with the rounds' range:
- the contract check (`bench.contract`) and, after each turn, the records on the contender's
  topic against its 2xx answers;
- the seed's method: the mean of 32 and of 1,000 serial requests;
- closed loop at C=1, 32 and 128 (`bench.loadgen`);
- open loop at fixed offered rates, latency from each request's scheduled start, the rounds'
  HDR histograms pooled: p50, p90, p99, p99.9;
- CPU of every process of the contender and of the brokers per request, peak and idle RSS;
- a 10-minute soak of this service at a steady rate, a new address per request
  (`bench.soak`);
- in-process publishes: `KafkaPublisher.publish` against aiokafka, FastStream and
  confluent-kafka, sequential and from 32 tasks (`bench.micro`).

Our own code's cost without Kafka, in instructions under callgrind (`bench.overhead`), and
where it goes: `bench/PROFILE.md`. HTTP servers under attack: `bench.edge`. Emit against
request-reply, taken apart: `bench.request_reply`.
"""
