"""The bench's arithmetic: rounds grouped into medians, open-loop histograms pooled, every
request accounted for, the targets judged, and the JSON it is all saved in read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import records, report, stats
from bench.analysis import Results, targets
from bench.records import Measurement, MicroRun, Run, Session, Soak
from bench.session import answered, answered_2xx


def _histogram(*milliseconds: float) -> str:
    histogram = stats.new_histogram()
    for ms in milliseconds:
        stats.record_seconds(histogram, ms / 1000)
    return stats.encode_histogram(histogram)


def _closed(concurrency: int, rps: float, *, requests: int | None = None) -> Measurement:
    return Measurement(
        "serial" if concurrency == 1 else "closed",
        concurrency=concurrency,
        requests=requests,
        result={
            "throughput_rps": rps,
            "latency": {"p50_ms": 1.0, "p99_ms": 2.0, "p99_9_ms": 3.0, "mean_ms": 1000 / rps},
            "non_202": 0,
            "not_sent": 0,
            "outcomes": {"202": 100},
            "warmup_outcomes": {"202": 10},
        },
        served=110,
        server_cpu_s=0.11,
    )


def _open(rate: int, *latencies_ms: float) -> Measurement:
    return Measurement(
        "open",
        rate=rate,
        result={
            "achieved_rps": float(rate),
            "latency": {"p99_ms": max(latencies_ms)},
            "histogram": _histogram(*latencies_ms),
            "outcomes": {"202": len(latencies_ms)},
        },
    )


def _micro(cpu_us: float) -> dict[str, object]:
    return {
        "cpu_us_per_message": cpu_us,
        "throughput_mps": 1e6 / cpu_us,
        "latency": {"p50_ms": 0.4, "p99_ms": 0.8},
    }


def _session(contender: str, round_: int, rps: dict[int, float], tail_ms: float) -> Session:
    return Session(
        "main",
        contender,
        round_,
        answered_2xx=330,
        records=330,
        measurements=[
            _closed(1, rps[1], requests=1000),
            _closed(32, rps[32]),
            _open(800, *([1.0] * 980 + [tail_ms] * 20)),
        ],
    )


def _run(app_rps: dict[int, float], peer_rps: dict[int, float]) -> Run:
    run = Run(environment={"CPUs": "2"}, versions={}, settings={}, command="make bench")
    for round_ in range(3):
        bump = 1 + round_ / 100  # rounds differ a little
        run.sessions += [
            _session("app", round_, {c: v * bump for c, v in app_rps.items()}, 5.0),
            _session("raw_aiokafka", round_, {c: v * bump for c, v in peer_rps.items()}, 9.0),
            _session("http_only", round_, {1: 2000.0, 32: 2500.0}, 2.0),
        ]
    run.micro = [
        MicroRun(client, 0, {mode: _micro(cpu) for mode in ("sequential", "concurrent")})
        for client, cpu in (("facade", 50.0), ("aiokafka", 47.0))
    ]
    run.soak = Soak("app", 200, 600, samples=[(0, 90_000), (30, 100_000), (600, 104_000)])
    return run


def _by_name(run: Run) -> dict[str, bool | None]:
    return {t.name: t.met for t in targets(Results(run))}


def test_medians_and_ranges_of_the_rounds() -> None:
    results = Results(_run({1: 1000.0, 32: 2000.0}, {1: 900.0, 32: 1800.0}))

    c32 = results.rps("main", "app", 32)
    assert (c32.low, c32.median, c32.high) == pytest.approx((2000.0, 2020.0, 2040.0))
    assert results.cpu_ms("main", "app", 32).median == pytest.approx(1.0)  # 0.11 s / 110
    assert results.concurrencies("main") == [1, 32]


def test_open_loop_rounds_are_pooled_into_one_histogram() -> None:
    pooled = Results(_run({1: 1.0, 32: 1.0}, {1: 1.0, 32: 1.0})).pooled("main", "app", 800)

    assert pooled["count"] == 3000  # 1,000 samples in each of 3 rounds
    assert pooled["p50_ms"] == pytest.approx(1.0, rel=0.01)
    assert pooled["p99_ms"] == pytest.approx(5.0, rel=0.01)  # the slowest 2% are at 5 ms


def test_targets_met_and_missed() -> None:
    ahead = _by_name(_run({1: 1500.0, 32: 1900.0}, {1: 1000.0, 32: 1800.0}))
    behind = _by_name(_run({1: 500.0, 32: 1000.0}, {1: 1000.0, 32: 1800.0}))

    throughput = next(name for name in ahead if name.startswith("throughput"))
    ceiling = next(name for name in ahead if name.startswith("HTTP throughput"))
    assert ahead[throughput] is True
    assert behind[throughput] is False
    assert ahead[ceiling] is True  # 1,500/2,000 and 1,900/2,500: both at least 70%
    assert behind[ceiling] is False
    assert ahead["p99 and p99.9 below each of them at every offered rate"] is True  # 5 < 9 ms
    assert ahead["facade CPU per message at most 1.1x raw aiokafka's (concurrent)"] is True
    assert ahead["soak: RSS growth under 5% over 10 minutes"] is True  # 4% after settling
    assert ahead["serial mean below raw kafkajs's"] is None  # kafkajs was not in this run


def test_every_answer_and_record_is_counted() -> None:
    result = {"outcomes": {"202": 7, "503": 1, "timeout": 2}, "warmup_outcomes": {"202": 3}}

    assert answered(result) == 11
    assert answered_2xx(result) == 10
    assert Results(_run({1: 1.0, 32: 1.0}, {1: 1.0, 32: 1.0})).records("main", "app") == (990, 990)


def test_a_run_is_saved_and_read_back_whole(tmp_path: Path) -> None:
    run = _run({1: 1000.0, 32: 2000.0}, {1: 900.0, 32: 1800.0})
    path = tmp_path / "bench.json"

    records.save(run, path)

    again = records.load(path)
    assert again == run
    assert "| `app` |" in report.render(Results(again))
