"""The soak: this service at a steady offered rate for ten minutes, a new address on every
request (sign-ups), its RSS sampled every few seconds. RSS must stay flat: memory that grows
with the requests served would be a leak, or state without a bound."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

from bench import topics
from bench.contenders import Contender
from bench.harness import HOST, free_port, log
from bench.processes import started
from bench.records import Soak
from bench.session import Broker, answered_2xx, wait_ready
from devtools.kafka import REPO_ROOT

__all__ = ["run_soak"]

SAMPLE_EVERY_S = 5.0
TOPIC = "bench.soak"


def run_soak(
    contender: Contender, broker: Broker, rate: int, duration_s: float, scratch: Path
) -> Soak:
    soak = Soak(contender.name, rate, duration_s)
    port = free_port()
    launches = contender.launches(
        bootstrap_servers=broker.bootstrap,
        topic=TOPIC,
        acks="all",
        workers=1,
        port=port,
        scratch=scratch,
    )
    base = f"http://{HOST}:{port}"
    requests = int(rate * duration_s)
    command = [
        sys.executable,
        "-m",
        "bench.loadgen",
        f"{base}{contender.path}",
        "--rate",
        str(rate),
        "--requests",
        str(requests),
        "--warmup-s",
        "5",
        "--connections",
        "256",
        "--deadline-s",
        str(duration_s + 120),
        "--tag",
        "soak",
    ]
    before = topics.end_offset(broker.bootstrap, TOPIC)
    try:
        with started(launches, REPO_ROOT, scratch) as tree:
            wait_ready(tree, base, scratch, contender)
            began = time.monotonic()
            # argv of this interpreter and the harness's own arguments; no shell.
            load = subprocess.Popen(  # noqa: S603
                command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            while load.poll() is None and time.monotonic() - began < duration_s + 240:
                soak.samples.append((time.monotonic() - began, tree.rss_kib()))
                time.sleep(SAMPLE_EVERY_S)
            if load.poll() is None:
                load.kill()
            out, err = load.communicate(timeout=60)
            if load.returncode != 0:
                soak.error = "\n".join(err.strip().splitlines()[-5:])
            else:
                soak.result = json.loads(out.strip().splitlines()[-1])
                soak.answered_2xx = answered_2xx(soak.result)
            soak.samples.append((time.monotonic() - began, tree.rss_kib()))
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as exc:
        soak.error = str(exc).splitlines()[0]
    with contextlib.suppress(Exception):
        soak.records = topics.end_offset(broker.bootstrap, TOPIC) - before
    if soak.samples:
        log(
            f"soak: RSS {soak.samples[0][1] / 1024:.1f} -> {soak.samples[-1][1] / 1024:.1f} MiB "
            f"over {soak.samples[-1][0]:.0f}s"
        )
    return soak
