"""Send load to the service, read back the topic and the store, and account for every request.

Three steps, each bounded in count and in time:

1. `Load`: `requests` times `POST /verification-emails` from `concurrency` clients, through any
   `httpx.AsyncClient` (in-process ASGI transport or a real URL). Client `c` always uses the
   key (email) `chaos-<run>-c<c>@example.com` and sends one request at a time, so the order in
   which one client's requests were acknowledged is the order in which it sent them. Every
   request has a unique `redirect_url` (`.../<run>/<client>/<seq>`), which identifies its
   message on the topic even when no answer came back. Every answer is kept: status, body,
   elapsed time; a request that got no answer (transport error after sending, or no answer
   within `request_timeout_s`) is kept with `status=None`. A refused connection means the
   request was never sent: it is tried again after a short pause (bounded by the run's
   deadline) and not counted twice.
2. `drain_topic`: every record of the topic from the beginning up to the end offsets read
   when the drain starts, with a consumer of its own (no group).
3. `account`: the answers, the topic and the store's records give an `Accounting`.

Definitions (all counts are of requests of this run unless said otherwise):

- `sent`: requests sent (an answer or not); `ok`: answered 2xx; `by_status`: answers by HTTP
  status; `no_answer`: requests sent that got no HTTP answer.
- `acknowledged_missing`: 2xx answers whose message is not on the topic as acknowledged. A
  published 2xx (a receipt with partition and offset) must be at exactly that
  partition/offset with the exact payload (key = the email; value's event id, email,
  redirect URL and event type; the `event_id` header). A queued 2xx (outbox) must be on the
  topic somewhere with the exact payload and its event id.
- `recorded`: 5xx answers whose `record_id` names a record in the store holding the same
  event id. `unrecorded`: 5xx answers without such a record (the client was told nothing
  is kept, or the store does not have it). `not_kept`: those of them whose `record_id` is
  null: the service said it kept nothing (the store could not be written) and the client
  should retry: not a loss. `not_kept_delivered`: not-kept requests whose message is on the
  topic anyway (the producer still held it and sent it later): a retry as told sends it twice.
- `replayed`: recorded answers whose event is on the topic with the exact payload (published
  by the relay, or written late by the producer itself). `replay_mismatches`: records the
  store marks delivered whose stored partition/offset does not hold their event.
- `duplicates`: copies beyond the first of any event id on the topic (an event seen 3 times
  counts 2). `unexplained_duplicates`: event ids seen more than once that the store has no
  record of: only a replay (of a recorded failure, or of an outbox record the relay sent
  twice after a crash) may write an event twice; the idempotent producer must not.
  `duplicate_causes`: every duplicate copy explained by what the answer and the store show
  (`chaos.duplicates`).
- `reordered`: for each client (one key, hence one partition), take its 2xx-acknowledged
  messages in the order the client got the acknowledgements (= the order it sent them).
  The position of each is its receipt's partition/offset when it has one, else the first
  copy of its event on the topic. A message is reordered when it lies in another partition
  than the client's first acknowledged message, or at a lower offset than a message the
  client had acknowledged before it. Messages missing from the topic are left out (they are
  `acknowledged_missing`); 5xx and unanswered requests are not part of the sequence, since
  their replay lands later by design.
- `unanswered_delivered`: unanswered requests whose message is on the topic anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]

from app.verification.events import EVENT_TYPE
from chaos.duplicates import explain_duplicates
from kafka_events.store import MessageStore, Status, StoredMessage

PATH = "/verification-emails"
REDIRECT_BASE = "https://app.example.com/verify"
CONNECT_RETRY_S = 0.1
CLOSE_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Request:
    """One request of a run: client `client`'s `seq`-th, the `index`-th sent overall."""

    index: int
    client: int
    seq: int
    email: str
    redirect_url: str

    def body(self) -> dict[str, str]:
        return {"email": self.email, "redirect_url": self.redirect_url}


@dataclass(frozen=True, slots=True)
class Answer:
    """What came back for one request; `status` is None when nothing did."""

    request: Request
    status: int | None
    body: Mapping[str, Any]
    elapsed_s: float
    error: str | None = None

    @property
    def event_id(self) -> str | None:
        value = self.body.get("event_id")
        return value if isinstance(value, str) else None

    @property
    def record_id(self) -> str | None:
        value = self.body.get("record_id")
        return value if isinstance(value, str) else None

    @property
    def position(self) -> tuple[int, int] | None:
        """The receipt's (partition, offset), for a published 2xx."""
        partition, offset = self.body.get("partition"), self.body.get("offset")
        if isinstance(partition, int) and isinstance(offset, int):
            return partition, offset
        return None

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class TopicRecord:
    """One record read back from the topic, with its value decoded (None when undecodable)."""

    partition: int
    offset: int
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    event_id: str | None
    email: str | None
    redirect_url: str | None
    event_type: str | None

    @property
    def position(self) -> tuple[int, int]:
        return self.partition, self.offset

    def matches(self, request: Request, event_id: str) -> bool:
        """Whether this is exactly the message `request` asked for, under `event_id`."""
        return (
            self.event_id == event_id
            and self.email == request.email
            and self.redirect_url == request.redirect_url
            and self.event_type == EVENT_TYPE
            and self.key == request.email.encode()
            and ("event_id", event_id.encode()) in self.headers
        )


def email_of(run_id: str, client: int) -> str:
    return f"chaos-{run_id}-c{client}@example.com"


class Load:
    """Sends `requests` requests from `concurrency` sequential clients; see the module doc.

    `run()` returns once every request was answered (or given up on), or `deadline_s` passed
    (no new request starts after it; one in flight then still has `request_timeout_s`).
    `stop()` ends it early the same way. `answered` counts answers as they come, for fault
    scripts to wait on (`wait_answered`).
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        requests: int,
        concurrency: int,
        run_id: str,
        deadline_s: float,
        request_timeout_s: float = 30.0,
        pause_s: float = 0.0,
        path: str = PATH,
    ) -> None:
        if requests < 0 or concurrency < 1:
            raise ValueError("requests must be >= 0 and concurrency >= 1")
        self._client = client
        self.requests = requests
        self.concurrency = concurrency
        self.run_id = run_id
        self._deadline_s = deadline_s
        self._request_timeout_s = request_timeout_s
        self._pause_s = pause_s
        self._path = path
        self._next = 0
        self._stopped = False
        self._progress = asyncio.Condition()
        self.answers: list[Answer] = []
        self.started_at: float | None = None
        self.finished_at: float | None = None

    @property
    def sent(self) -> int:
        return len(self.answers)

    @property
    def duration_s(self) -> float:
        if self.started_at is None:
            return 0.0
        return (self.finished_at or time.monotonic()) - self.started_at

    def stop(self) -> None:
        """Start no new request (those in flight finish)."""
        self._stopped = True

    async def run(self) -> list[Answer]:
        self.started_at = time.monotonic()
        deadline = self.started_at + self._deadline_s
        try:
            await asyncio.gather(*(self._worker(c, deadline) for c in range(self.concurrency)))
        finally:
            self.finished_at = time.monotonic()
            async with self._progress:
                self._progress.notify_all()
        return self.answers

    async def wait_answered(self, count: int, timeout_s: float) -> bool:
        """Wait until `count` answers came (True), the load ended or `timeout_s` passed."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s), self._progress:
                await self._progress.wait_for(
                    lambda: len(self.answers) >= count or self.finished_at is not None
                )
        return len(self.answers) >= count

    async def _worker(self, client: int, deadline: float) -> None:
        email = email_of(self.run_id, client)
        seq = 0
        while not self._stopped and self._next < self.requests and time.monotonic() < deadline:
            index, self._next = self._next, self._next + 1
            request = Request(
                index=index,
                client=client,
                seq=seq,
                email=email,
                redirect_url=f"{REDIRECT_BASE}/{self.run_id}/{client}/{seq}",
            )
            seq += 1
            answer = await self._send(request, deadline)
            if answer is None:  # never sent: the run's deadline passed while refused
                return
            async with self._progress:
                self.answers.append(answer)
                self._progress.notify_all()
            if self._pause_s:
                await asyncio.sleep(self._pause_s)

    async def _send(self, request: Request, deadline: float) -> Answer | None:
        body = request.body()
        while True:
            started = time.monotonic()
            try:
                async with asyncio.timeout(self._request_timeout_s):
                    response = await self._client.post(self._path, json=body)
            except httpx.ConnectError:
                # refused: nothing was sent; try again while the run lasts (service restarting)
                if time.monotonic() >= deadline or self._stopped:
                    return None
                await asyncio.sleep(CONNECT_RETRY_S)
                continue
            except TimeoutError:
                return self._no_answer(request, started, "timeout")
            except httpx.TransportError as error:
                return self._no_answer(request, started, type(error).__name__)
            except Exception as error:  # noqa: BLE001 - in-process, an app's crash surfaces here
                return self._no_answer(request, started, f"app raised {type(error).__name__}")
            try:
                parsed = response.json()
            except ValueError:
                parsed = None
            return Answer(
                request=request,
                status=response.status_code,
                body=parsed if isinstance(parsed, dict) else {},
                elapsed_s=time.monotonic() - started,
            )

    @staticmethod
    def _no_answer(request: Request, started: float, error: str) -> Answer:
        return Answer(
            request=request, status=None, body={}, elapsed_s=time.monotonic() - started, error=error
        )


# -- reading back ------------------------------------------------------------------------------


def _decode(record: Any) -> TopicRecord:
    fields: dict[str, Any] = {}
    with contextlib.suppress(ValueError, TypeError, UnicodeDecodeError):
        value = json.loads(record.value)
        if isinstance(value, dict):
            fields = value

    def text(name: str) -> str | None:
        item = fields.get(name)
        return item if isinstance(item, str) else None

    return TopicRecord(
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        headers=tuple((name, bytes(value)) for name, value in record.headers),
        event_id=text("event_id"),
        email=text("email"),
        redirect_url=text("redirect_url"),
        event_type=text("event_type"),
    )


async def drain_topic(
    bootstrap_servers: str, topic: str, *, timeout_s: float = 60.0
) -> list[TopicRecord]:
    """Every record of `topic`, from the beginning to its end offsets at the start of the drain.

    Raises TimeoutError if they cannot all be read within `timeout_s` (the end offsets
    included: a partition without a leader has none).
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=10000,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    records: list[TopicRecord] = []
    try:
        async with asyncio.timeout(timeout_s):
            await consumer.start()
            # Without a group every partition is assigned once the topic's metadata is known.
            while not consumer.assignment():  # noqa: ASYNC110 - bounded by the timeout above
                await asyncio.sleep(0.1)
            tps = sorted(consumer.assignment(), key=lambda tp: tp.partition)
            await consumer.seek_to_beginning(*tps)
            ends: dict[Any, int] = await consumer.end_offsets(tps)
            remaining = {tp for tp in tps if ends[tp] > 0}
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=10000)
                for tp, batch in batches.items():
                    records.extend(_decode(r) for r in batch if r.offset < ends[tp])
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
    finally:
        # also after a failed start, which may have opened connections already
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await consumer.stop()
    return records


async def stored_messages(store: MessageStore, *, page: int = 1000) -> list[StoredMessage]:
    """Every record of the store, oldest first (bounded: at most 10,000 pages)."""
    found: list[StoredMessage] = []
    after = 0
    for _ in range(10_000):
        batch = await store.list(limit=page, after_seq=after)
        found.extend(batch)
        if len(batch) < page:
            return found
        after = batch[-1].seq
    raise RuntimeError("the store holds more than 10,000 pages of records")


async def wait_store_drained(store: MessageStore, *, timeout_s: float) -> int:
    """Wait (bounded) until no record is pending; returns how many still are."""
    deadline = time.monotonic() + timeout_s
    while True:
        pending = await store.count(Status.PENDING)
        if pending == 0 or time.monotonic() >= deadline:
            return pending
        await asyncio.sleep(0.2)


# -- accounting --------------------------------------------------------------------------------


@dataclass(slots=True)
class Accounting:
    """The outcome of a run; see the module doc for each definition."""

    sent: int = 0
    ok: int = 0
    published: int = 0
    queued: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    no_answer: int = 0
    no_answer_kinds: Counter[str] = field(default_factory=Counter)
    acknowledged_missing: list[str] = field(default_factory=list)
    recorded: int = 0
    unrecorded: list[str] = field(default_factory=list)
    not_kept: list[str] = field(default_factory=list)
    not_kept_delivered: int = 0
    replayed: int = 0
    not_replayed: list[str] = field(default_factory=list)
    replay_mismatches: list[str] = field(default_factory=list)
    duplicates: int = 0
    duplicated_events: dict[str, int] = field(default_factory=dict)
    unexplained_duplicates: list[str] = field(default_factory=list)
    duplicate_causes: Counter[str] = field(default_factory=Counter)
    reordered: int = 0
    reordered_examples: list[str] = field(default_factory=list)
    unanswered_delivered: int = 0
    max_elapsed_s: float = 0.0
    on_topic: int = 0
    store_records: int = 0
    store_pending: int = 0

    @property
    def server_errors(self) -> dict[int, int]:
        """5xx answers by status."""
        return {s: n for s, n in sorted(self.by_status.items()) if s >= 500}

    @property
    def failed(self) -> int:
        return sum(self.server_errors.values())

    @property
    def other_statuses(self) -> dict[int, int]:
        """Answers neither 2xx nor 5xx nor 408 (any other 4xx would be a bug of the driver or
        the service). A 408 says the request was not read in time: a paused service that
        resumes finds its head timers expired before it reads what arrived meanwhile."""
        return {
            s: n
            for s, n in sorted(self.by_status.items())
            if not (200 <= s < 300 or s >= 500 or s == 408)
        }

    def summary(self) -> str:
        """One paragraph with every count, for assertion messages and logs."""
        parts = [
            f"sent={self.sent}",
            f"2xx={self.ok} (published {self.published}, queued {self.queued})",
            f"5xx={self.server_errors or 0}",
            f"other={self.other_statuses or 0}",
            f"no answer={self.no_answer}"
            + (f" {dict(self.no_answer_kinds)}" if self.no_answer else ""),
            f"acknowledged-but-missing={len(self.acknowledged_missing)}",
            f"recorded={self.recorded}",
            f"unrecorded 5xx={len(self.unrecorded)} (not kept {len(self.not_kept)}, "
            f"of which delivered {self.not_kept_delivered})",
            f"replayed={self.replayed}",
            f"replay mismatches={len(self.replay_mismatches)}",
            f"duplicates={self.duplicates} (events {len(self.duplicated_events)}, "
            f"unexplained {len(self.unexplained_duplicates)})"
            + (f" {dict(self.duplicate_causes)}" if self.duplicate_causes else ""),
            f"reordered={self.reordered}",
            f"unanswered but delivered={self.unanswered_delivered}",
            f"records on topic={self.on_topic}",
            f"store records={self.store_records} (pending {self.store_pending})",
            f"slowest answer={self.max_elapsed_s:.2f}s",
        ]
        examples = [
            *self.acknowledged_missing[:3],
            *self.unrecorded[:3],
            *self.not_kept[:3],
            *self.not_replayed[:3],
            *self.replay_mismatches[:3],
            *self.unexplained_duplicates[:3],
            *self.reordered_examples[:3],
        ]
        text = "; ".join(parts)
        return text + ("\nexamples:\n  " + "\n  ".join(examples) if examples else "")


def account(
    answers: Iterable[Answer],
    topic_records: Iterable[TopicRecord],
    stored: Iterable[StoredMessage],
) -> Accounting:
    """Account for every answer against the topic's records and the store's."""
    result = Accounting()
    answers = sorted(answers, key=lambda a: a.request.index)
    records = sorted(topic_records, key=lambda r: r.position)
    store = {s.id: s for s in stored}
    store_events = {s.event_id for s in store.values()}
    result.on_topic = len(records)
    result.store_records = len(store)
    result.store_pending = sum(1 for s in store.values() if s.status is Status.PENDING)

    at_position = {r.position: r for r in records}
    by_event: dict[str, list[TopicRecord]] = defaultdict(list)
    by_url: dict[str, list[TopicRecord]] = defaultdict(list)
    for record in records:
        if record.event_id is not None:
            by_event[record.event_id].append(record)
        if record.redirect_url is not None:
            by_url[record.redirect_url].append(record)

    def first_copy(answer: Answer, event_id: str) -> TopicRecord | None:
        copies = by_event.get(event_id, ())
        return next((r for r in copies if r.matches(answer.request, event_id)), None)

    # client -> [(seq, position)] of its acknowledged messages found on the topic
    sequences: dict[int, list[tuple[int, tuple[int, int], str]]] = defaultdict(list)
    for answer in answers:
        result.sent += 1
        result.max_elapsed_s = max(result.max_elapsed_s, answer.elapsed_s)
        request, event_id = answer.request, answer.event_id
        if answer.status is None:
            result.no_answer += 1
            result.no_answer_kinds[answer.error or "unknown"] += 1
            if by_url.get(request.redirect_url):
                result.unanswered_delivered += 1
            continue
        result.by_status[answer.status] += 1
        if answer.status == 408:  # the service did not read the whole request: nothing sent
            if by_url.get(request.redirect_url):
                result.unanswered_delivered += 1
            continue
        if answer.acknowledged:
            result.ok += 1
            position = answer.position
            if event_id is None:
                result.acknowledged_missing.append(f"{request}: 2xx without an event id")
                continue
            if position is not None:
                result.published += 1
                found = at_position.get(position)
                if found is None or not found.matches(request, event_id):
                    result.acknowledged_missing.append(
                        f"event {event_id} acknowledged at {position}, which holds "
                        f"{found.event_id if found else 'nothing'}"
                    )
                    continue
            else:
                result.queued += 1
                copy = first_copy(answer, event_id)
                if copy is None:
                    result.acknowledged_missing.append(f"queued event {event_id} not on the topic")
                    continue
                position = copy.position
            sequences[request.client].append((request.seq, position, event_id))
        elif answer.status >= 500:
            kept = store.get(answer.record_id or "")
            if answer.record_id is None:
                result.not_kept.append(
                    f"{answer.status} for event {event_id}: not kept "
                    f"(delivery: {answer.body.get('delivery')})"
                )
                if by_url.get(request.redirect_url):
                    result.not_kept_delivered += 1
            if kept is None or kept.event_id != event_id:
                result.unrecorded.append(
                    f"{answer.status} for event {event_id} names record {answer.record_id}, "
                    f"{'not in the store' if kept is None else 'of another event'}"
                )
                continue
            result.recorded += 1
            if event_id is not None and first_copy(answer, event_id) is not None:
                result.replayed += 1
            else:
                result.not_replayed.append(
                    f"recorded event {event_id} ({kept.status.value}) not on the topic"
                )

    for kept in store.values():
        if kept.status is Status.DELIVERED and kept.partition is not None:
            held = at_position.get((kept.partition, kept.offset or 0))
            if held is None or held.event_id != kept.event_id:
                result.replay_mismatches.append(
                    f"record {kept.id} says event {kept.event_id} is at "
                    f"{kept.partition}@{kept.offset}, which holds "
                    f"{held.event_id if held else 'nothing'}"
                )

    result.duplicate_causes = explain_duplicates(
        answers, {e: len(c) for e, c in by_event.items()}, store.values()
    )
    for event_id, copies in by_event.items():
        if len(copies) > 1:
            result.duplicates += len(copies) - 1
            result.duplicated_events[event_id] = len(copies)
            if event_id not in store_events:
                result.unexplained_duplicates.append(
                    f"event {event_id} written {len(copies)} times at "
                    f"{[c.position for c in copies]} with no record in the store"
                )

    for client, sequence in sequences.items():
        sequence.sort()
        first_partition = sequence[0][1][0]
        highest = -1
        for seq, (partition, offset), event_id in sequence:
            if partition != first_partition or offset < highest:
                result.reordered += 1
                result.reordered_examples.append(
                    f"client {client} message {seq} (event {event_id}) at {partition}@{offset} "
                    f"after one at {first_partition}@{highest}"
                )
            else:
                highest = offset
    return result


def answers_by_status(answers: Sequence[Answer]) -> dict[int | None, list[Answer]]:
    grouped: dict[int | None, list[Answer]] = defaultdict(list)
    for answer in answers:
        grouped[answer.status].append(answer)
    return dict(grouped)
