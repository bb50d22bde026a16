"""What a bench run records, as plain data: saved as JSON next to the Markdown, so the report
and the plots can be made again from it (`python -m bench.report RESULTS.json`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Measurement", "MicroRun", "Run", "Session", "Soak", "load", "save"]

Result = dict[str, Any]


@dataclass(slots=True)
class Measurement:
    """One load-generator run against a contender."""

    kind: str  # "serial", "closed" or "open"
    concurrency: int | None = None  # serial and closed
    rate: int | None = None  # open: offered req/s
    requests: int | None = None  # serial: the requests asked for
    result: Result | None = None  # bench.loadgen's JSON
    served: int = 0  # requests answered, warm-up included
    server_cpu_s: float = 0.0  # every process of the contender, warm-up included
    broker_cpu_s: float = 0.0
    peak_rss_kib: int = 0
    rss_after_kib: int = 0
    load_before: float = 0.0
    error: str | None = None

    def per_request_ms(self, seconds: float) -> float:
        return 1000 * seconds / self.served if self.served else float("nan")


@dataclass(slots=True)
class Session:
    """One contender's turn in one round of a phase: started, checked, measured, stopped."""

    phase: str
    contender: str
    round: int
    ready_s: float = 0.0
    idle_rss_kib: int = 0
    contract: list[str] = field(default_factory=list)  # deviations; empty: answered alike
    bad_statuses: dict[str, int] = field(default_factory=dict)
    answered_2xx: int = 0
    records: int | None = None  # written to its topic during the turn
    measurements: list[Measurement] = field(default_factory=list)
    error: str | None = None


@dataclass(slots=True)
class Soak:
    contender: str
    rate: int
    duration_s: float
    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds, RSS KiB)
    result: Result | None = None
    answered_2xx: int = 0
    records: int | None = None
    error: str | None = None


@dataclass(slots=True)
class MicroRun:
    client: str
    round: int
    result: Result | None = None
    error: str | None = None


@dataclass(slots=True)
class Run:
    environment: dict[str, str]
    versions: dict[str, str]
    settings: dict[str, str]
    command: str
    duration_s: float = 0.0
    load: list[float] = field(default_factory=list)  # 1-minute load average, before and after
    sessions: list[Session] = field(default_factory=list)
    soak: Soak | None = None
    micro: list[MicroRun] = field(default_factory=list)


def save(run: Run, path: Path) -> None:
    path.write_text(json.dumps(dataclasses.asdict(run), indent=1))


def load(path: Path) -> Run:
    data = json.loads(path.read_text())
    sessions = [
        Session(
            **{
                **s,
                "measurements": [Measurement(**m) for m in s["measurements"]],
            }
        )
        for s in data.pop("sessions")
    ]
    soak_data = data.pop("soak")
    soak = None
    if soak_data is not None:
        soak_data["samples"] = [tuple(sample) for sample in soak_data["samples"]]
        soak = Soak(**soak_data)
    micro = [MicroRun(**m) for m in data.pop("micro")]
    return Run(**data, sessions=sessions, soak=soak, micro=micro)
