"""`python -m chaos` (`make chaos`): fault scenarios under load against a 3-node cluster.

Starts a 3-node KRaft cluster (replication factor 3, min.insync.replicas=2, unclean leader
election off) on free loopback ports in a temporary folder, every connection to a node
(the app's, the inter-broker and the KRaft ones) through a TCP fault proxy (toxiproxy, see
`devtools.faultproxy`), runs each scenario of
`chaos.faults` with the service as a real `python -m app` process, prints one table row per
scenario and writes the table to `chaos/RESULTS.md`. Counts are defined in
`chaos.accounting`. Exit code 1 when any scenario acknowledged a request that is not on the
topic, left a refusal unrecorded (beyond those it said it did not keep) or unreplayed, wrote
an unexplained duplicate, reordered a client's messages, or failed to run.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from chaos.cluster import start_proxied, stop_proxied
from chaos.faults import FAULTS, Outcome, Plan, run_fault
from devtools.faultproxy import TOXIPROXY_VERSION, FaultProxy
from devtools.kafka import KafkaCluster

RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = (
    "fault",
    "sent",
    "2xx",
    "5xx",
    "no answer",
    "acknowledged-but-missing",
    "recorded",
    "replayed",
    "not kept",
    "duplicates",
    "reordered",
    "duration",
)

console = Console(stderr=True, soft_wrap=True)
cli = typer.Typer(add_completion=False, help=__doc__.splitlines()[0] if __doc__ else None)


def row(outcome: Outcome) -> list[str]:
    result = outcome.accounting
    # one count when every 5xx is a 503 (the usual case), else "502: n, 503: m"
    errors = ", ".join(f"{s}: {n:,}" for s, n in result.server_errors.items()) or "0"
    if set(result.server_errors) == {503}:
        errors = f"{result.failed:,}"
    return [
        outcome.fault.name,
        f"{result.sent:,}",
        f"{result.ok:,}",
        errors,
        f"{result.no_answer:,}",
        f"{len(result.acknowledged_missing):,}",
        f"{result.recorded:,}",
        f"{result.replayed:,}",
        f"{len(result.not_kept):,}",
        f"{result.duplicates:,}",
        f"{result.reordered:,}",
        f"{outcome.duration_s:.0f} s",
    ]


def markdown(
    outcomes: Sequence[Outcome],
    failures: Sequence[tuple[str, str]],
    plan: Plan,
    cluster: KafkaCluster,
    total_s: float,
    load_average: float,
) -> str:
    lines = [
        "# Chaos results",
        "",
        "Written by `make chaos` (`python -m chaos`); every count is defined in "
        "`chaos/accounting.py`, every fault in `chaos/faults.py`.",
        "",
        f"- when: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; whole run {total_s / 60:.1f} min",
        f"- machine: {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, load "
        f"average {load_average:.1f} (1 min) at the start; "
        f"Python {platform.python_version()}; Kafka {cluster.version}",
        "- cluster: 3 KRaft nodes (broker + controller each) on loopback, replication factor 3, "
        "min.insync.replicas=2, unclean leader election off, broker.session.timeout.ms=3000; "
        f"every connection to a node (the app's, inter-broker, KRaft) through toxiproxy "
        f"{TOXIPROXY_VERSION} (`devtools/faultproxy.py`), one route per client link and per "
        "ordered pair of nodes",
        f"- load: {plan.requests:,} requests per fault from {plan.concurrency} clients, each "
        "sending its next request once the previous one is answered; one key (email) per client",
        "- service: `python -m app`, one process, policy `replicated` (acks=all, idempotent, "
        "5 s deadline) with the relay on (interval 200 ms); `app-sigkill-outbox` uses the outbox",
        f"- broker down: {plan.down_s:.0f} s; leader bounces: {plan.bounces}; partitions, "
        f"pauses, slow and lossy links, locked store: {plan.fault_s:.0f} s each",
        "- not kept: 5xx answers with `record_id: null` (the store could not keep them; the "
        "client is told to retry)",
        "",
        "| " + " | ".join(HEADER) + " |",
        "| --- |" + " ---: |" * (len(HEADER) - 1),
    ]
    lines += ["| " + " | ".join(row(o)) + " |" for o in outcomes]
    lines += ["", "What happened in each run (time since the load started):", ""]
    for outcome in outcomes:
        result = outcome.accounting
        found = outcome.problems
        lines.append(
            f"- **{outcome.fault.name}**: {outcome.fault.description}. "
            + "; ".join(outcome.notes)
            + f". Load {outcome.load_s:.0f} s; 2xx: {result.published:,} published, "
            f"{result.queued:,} queued (outbox); slowest answer {result.max_elapsed_s:.1f} s; "
            + (f"no answer: {dict(result.no_answer_kinds)}; " if result.no_answer else "")
            + f"{result.unanswered_delivered} unanswered requests delivered anyway; "
            f"{len(result.not_kept)} not kept, of which {result.not_kept_delivered} on the "
            f"topic anyway; {len(result.duplicated_events)} events duplicated"
            + "".join(
                f"; {n} of the copies: {cause}" for cause, n in result.duplicate_causes.items()
            )
            + "; service started "
            f"{outcome.service_starts} times. "
            + (f"**Problems: {'; '.join(found)}.**" if found else "No problem found.")
        )
    for name, error in failures:
        lines.append(f"- **{name}**: did not run to the end: {error}")
    return "\n".join(lines) + "\n"


def show(outcomes: Sequence[Outcome]) -> None:
    table = Table(*HEADER, title="chaos")
    for outcome in outcomes:
        table.add_row(*row(outcome))
    out = Console()
    if not out.is_terminal:  # a pipe or a file: no narrow default width
        out = Console(width=200)
    out.print(table)


async def _main(
    faults: Sequence[str], plan: Plan, scratch: Path
) -> tuple[list[Outcome], list[tuple[str, str]], str]:
    outcomes: list[Outcome] = []
    failures: list[tuple[str, str]] = []
    started = time.monotonic()
    load_average = os.getloadavg()[0]  # the figures of a busy machine are not final ones
    console.print(f"starting a fault proxy and a 3-node cluster behind it in {scratch}")
    cluster, proxy = await asyncio.to_thread(start_proxied, scratch)
    try:
        await _run_all(faults, cluster, proxy, plan, scratch, outcomes, failures)
    finally:
        await asyncio.to_thread(stop_proxied, cluster, proxy)
    total_s = time.monotonic() - started
    return outcomes, failures, markdown(outcomes, failures, plan, cluster, total_s, load_average)


async def _run_all(
    faults: Sequence[str],
    cluster: KafkaCluster,
    proxy: FaultProxy,
    plan: Plan,
    scratch: Path,
    outcomes: list[Outcome],
    failures: list[tuple[str, str]],
) -> None:
    for name in faults:
        fault = FAULTS[name]
        console.print(f"[bold]{name}[/]: {fault.description}")
        try:
            outcome = await run_fault(fault, cluster, proxy, plan, scratch)
        except (RuntimeError, OSError, TimeoutError) as error:
            text = str(error).replace(str(scratch), "<scratch>")
            failures.append((name, f"{type(error).__name__}: {text}"))
            console.print(f"  [red]failed[/]: {error}")
            continue
        outcomes.append(outcome)
        console.print("  " + "; ".join(outcome.notes))
        console.print("  " + outcome.accounting.summary().replace("\n", "\n  "))


@cli.command()
def main(
    requests: Annotated[int, typer.Option(min=1, help="Requests per fault.")] = 20_000,
    concurrency: Annotated[int, typer.Option(min=1, max=500, help="Concurrent clients.")] = 20,
    quick: Annotated[
        bool,
        typer.Option(help="2,000 requests per fault, broker down 10 s, 2 bounces, faults 8 s."),
    ] = False,
    fault: Annotated[
        list[str] | None, typer.Option(help=f"Only these faults: {', '.join(FAULTS)}.")
    ] = None,
    down_s: Annotated[float, typer.Option(min=1, help="How long one broker stays down.")] = 30,
    bounces: Annotated[int, typer.Option(min=1, max=50, help="Leader bounces.")] = 5,
    fault_s: Annotated[
        float,
        typer.Option(
            min=1, help="How long a partition, a pause, a slow or lossy link or a lock lasts."
        ),
    ] = 20,
    results: Annotated[Path, typer.Option(help="Where to write the Markdown table.")] = (
        RESULTS_PATH
    ),
    write: Annotated[bool, typer.Option(help="Write the results file.")] = True,
    keep: Annotated[bool, typer.Option(help="Keep the broker and service logs.")] = False,
) -> None:
    """Run fault scenarios under load and account for every request."""
    chosen = fault or list(FAULTS)
    unknown = [name for name in chosen if name not in FAULTS]
    if unknown:
        raise typer.BadParameter(f"unknown fault(s) {unknown}; choose from {list(FAULTS)}")
    if quick:
        requests, down_s, bounces = min(requests, 2_000), min(down_s, 10), min(bounces, 2)
        fault_s = min(fault_s, 8)
    plan = Plan(
        requests=requests,
        concurrency=concurrency,
        down_s=down_s,
        bounces=bounces,
        fault_s=fault_s,
    )
    scratch = Path(tempfile.mkdtemp(prefix="chaos-"))
    try:
        outcomes, failures, text = asyncio.run(_main(chosen, plan, scratch))
    finally:
        if keep:
            console.print(f"logs kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    show(outcomes)
    if write:
        results.write_text(text)
        console.print(f"written to {results}")
    if failures or any(o.problems for o in outcomes):
        raise typer.Exit(1)
