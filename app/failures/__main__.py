"""`python -m app.failures`: inspect and replay the message store by hand.

    python -m app.failures list [--status pending|delivered|abandoned] [--limit N]
    python -m app.failures show RECORD_ID
    python -m app.failures replay (--all | RECORD_ID...)
    python -m app.failures purge [--status delivered|abandoned]

Uses the service's settings (environment and .env). `replay` publishes right here, through
producers of its own, with a progress bar; the records' policies, deadlines and retries apply.
Beside a running service, a record may be published by both (same event id: consumers deduplicate).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.config import Settings, SettingsError, load_settings
from kafka_events import KafkaPublisher
from kafka_events.store import MessageStore, Relay, SqlStore, Status, StoredMessage

cli = typer.Typer(help=__doc__.splitlines()[0], no_args_is_help=True, add_completion=False)
console = Console()
_T = TypeVar("_T")


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as error:
        console.print(str(error), style="red", markup=False)
        raise typer.Exit(2) from None


def _with_store(work: Callable[[MessageStore], Awaitable[_T]]) -> _T:
    async def main() -> _T:
        store = SqlStore(_settings().store.url)
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(main())


@cli.command("list")
def list_messages(
    status: Annotated[Status | None, typer.Option(help="Only this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 50,
) -> None:
    """Stored messages, oldest first."""
    records = _with_store(lambda store: store.list(status=status, limit=limit))
    table = Table("record", "event", "status", "origin", "policy", "topic", "replays", "error")
    for r in records:
        table.add_row(
            r.id, r.event_id, r.status, r.origin, r.policy, r.topic, str(r.replays), r.error_type
        )
    console.print(table)
    console.print(f"{len(records)} shown")


@cli.command()
def show(record_id: str) -> None:
    """One stored message, with its last error."""
    record = _with_store(lambda store: store.get(record_id))
    if record is None:
        console.print(f"no record {record_id}", style="red")
        raise typer.Exit(1)
    for field in StoredMessage.__slots__:
        value = getattr(record, field)
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        console.print(f"[bold]{field}[/bold]: {value}", markup=True, highlight=False)


@cli.command()
def replay(
    record_ids: Annotated[list[str] | None, typer.Argument(help="Records to replay.")] = None,
    replay_all: Annotated[
        bool, typer.Option("--all", help="Every pending and abandoned record.")
    ] = False,
) -> None:
    """Publish stored messages now (abandoned ones included), oldest first."""
    if not replay_all and not record_ids:
        console.print("give record ids, or --all", style="red")
        raise typer.Exit(2)
    settings = _settings()

    async def main(store: MessageStore) -> tuple[int, int]:
        await store.requeue(None if replay_all else record_ids)
        if replay_all:
            records = await store.list(status=Status.PENDING, limit=1_000_000)
        else:
            found = [await store.get(i) for i in record_ids or []]
            records = [r for r in found if r is not None and r.status is Status.PENDING]
        publishers = {
            name: KafkaPublisher(settings.kafka, policy, name=name)
            for name, policy in settings.kafka.policies.as_mapping().items()
        }
        await asyncio.gather(*(p.start() for p in publishers.values()))
        relay = Relay(store, publishers, settings.replay)
        delivered = failed = 0
        try:
            with Progress(
                TextColumn("replaying"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[failed]} failed"),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                task = progress.add_task("replay", total=len(records), failed=0)
                for record in records:
                    outcome = await relay.publish_record(record)
                    if outcome == "delivered":
                        delivered += 1
                    else:
                        failed += 1
                    progress.update(task, advance=1, failed=failed)
        finally:
            await asyncio.gather(*(p.stop() for p in publishers.values()))
        return delivered, failed

    delivered, failed = _with_store(main)
    console.print(f"{delivered} delivered, {failed} failed")
    if failed:
        raise typer.Exit(1)


@cli.command()
def purge(
    status: Annotated[Status, typer.Option(help="Delete records of this status.")] = (
        Status.DELIVERED
    ),
) -> None:
    """Delete stored messages of a status (delivered by default; never pending ones)."""
    if status is Status.PENDING:
        console.print("pending messages are not purged: replay them", style="red")
        raise typer.Exit(2)
    count = _with_store(lambda store: store.purge(status=status))
    console.print(f"{count} purged")


if __name__ == "__main__":
    sys.exit(cli())
