"""Faults where nothing dies but something stands still or slows down, under load: a paused
broker, a paused app, a slow link, a lossy link, and a store that cannot be written while
Kafka is unreachable and then back.

Short versions of `make chaos`'s faults of the same names: the same scripts and accounting
(`chaos.accounting`), 300 requests, 6 s faults. Every acknowledged request is on the topic
where its receipt says, every refusal is recorded and replayed (or said it was not kept), no
client's messages are reordered, and each duplicate is one the store explains.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.duplicates import CAUSE_REPUBLISHED
from chaos.faults import Outcome
from tests.helpers.cluster import SHORT_PLAN, ProxiedCluster, run_short

pytestmark = [pytest.mark.kafka, pytest.mark.cluster]


def _every_request_accounted_for(outcome: Outcome, report: str, *, answered: bool = True) -> None:
    result = outcome.accounting
    assert result.sent == SHORT_PLAN.requests, report
    if answered:
        assert result.no_answer == 0, report
    assert set(result.by_status) <= {202, 503}, report
    assert result.acknowledged_missing == [], report
    assert result.recorded == result.replayed, report
    assert result.replay_mismatches == [], report
    assert result.unexplained_duplicates == [], report
    assert result.reordered == 0, report
    assert result.store_pending == 0, report


@pytest.mark.timeout(150)
async def test_a_paused_leader_is_replaced_and_loses_no_acknowledged_write(
    proxied_cluster: ProxiedCluster, tmp_path: Path
) -> None:
    outcome, report = await run_short("broker-pause", proxied_cluster, tmp_path)

    # paused longer than the broker session (3 s): fenced, and replaced while paused
    assert outcome.facts["leader_during"] not in (None, outcome.facts["victim"]), report
    _every_request_accounted_for(outcome, report)
    assert outcome.accounting.unrecorded == [], report
    assert outcome.problems == [], report


@pytest.mark.timeout(150)
async def test_a_paused_app_answers_or_drops_unread_every_request(
    proxied_cluster: ProxiedCluster, tmp_path: Path
) -> None:
    outcome, report = await run_short("app-pause", proxied_cluster, tmp_path)
    result = outcome.accounting

    assert outcome.facts["answered_while_paused"] == 0, report  # it really stood still
    # Paused longer than uvicorn's keep-alive timeout (5 s), the server closes, as it resumes,
    # the idle connections on which a client sent its next request meanwhile: that request
    # gets no answer, but it was never read, so it was not published either (safe to retry).
    assert set(result.no_answer_kinds) <= {"ReadError", "RemoteProtocolError"}, report
    assert result.unanswered_delivered == 0, report
    _every_request_accounted_for(outcome, report, answered=False)
    assert outcome.accounting.unrecorded == [], report
    assert outcome.problems == [], report


@pytest.mark.timeout(150)
async def test_a_slow_link_delays_but_loses_and_reorders_nothing(
    proxied_cluster: ProxiedCluster, tmp_path: Path
) -> None:
    outcome, report = await run_short("slow-link", proxied_cluster, tmp_path)
    faults = outcome.facts["faults"]
    routes = proxied_cluster.cluster.links()

    # latency each way on every route, a bandwidth cap on the app's
    assert set(faults) == {link.name for link in routes}, report
    assert all("latency-upstream" in f and "latency-downstream" in f for f in faults.values())
    assert {n for n, f in faults.items() if "bandwidth-downstream" in f} == {
        link.name for link in routes if link.kind == "client"
    }, report
    first, last = outcome.facts["slow"]
    assert any(a.status == 202 for a in outcome.answers[first:last]), report  # still served
    _every_request_accounted_for(outcome, report)
    assert outcome.accounting.unrecorded == [], report
    assert outcome.problems == [], report


@pytest.mark.timeout(150)
async def test_a_lossy_link_resetting_connections_loses_and_reorders_nothing(
    proxied_cluster: ProxiedCluster, tmp_path: Path
) -> None:
    outcome, report = await run_short("lossy-link", proxied_cluster, tmp_path)

    assert outcome.facts["rounds"] >= 2, report
    first, last = outcome.facts["lossy"]
    assert last - first >= SHORT_PLAN.concurrency, report  # the resets hit a flowing load
    _every_request_accounted_for(outcome, report)
    assert outcome.accounting.unrecorded == [], report
    assert outcome.problems == [], report


@pytest.mark.timeout(170)
async def test_a_locked_store_with_kafka_down_then_back_republishes_nothing(
    proxied_cluster: ProxiedCluster, tmp_path: Path
) -> None:
    outcome, report = await run_short("store-locked-kafka-down", proxied_cluster, tmp_path)
    result = outcome.accounting
    down, locked, back, unlocked = outcome.facts["phases"]

    assert down < locked <= back <= unlocked, report
    # Kafka down, the store writable: refused and kept; the store locked too: refused, and
    # said not kept (answered after the deadline and the store's busy timeout, 10 s)
    assert any(a.status == 503 and a.record_id for a in outcome.answers[down:locked]), report
    assert any(a.status == 503 and a.record_id is None for a in outcome.answers[locked:])
    assert result.not_kept, report
    # every refusal either names its record or says nothing was kept
    assert len(result.unrecorded) == len(result.not_kept), report
    _every_request_accounted_for(outcome, report)
    # Kafka back, the store still locked: nothing Kafka acknowledged is published again,
    # neither the relay's head record nor a late acknowledgement the store could not record.
    # What remains is at least once, explained: a request in flight when the links were cut
    # may have been written without its answer (`delivery: unknown`), and is replayed.
    assert result.duplicate_causes.get(CAUSE_REPUBLISHED, 0) == 0, report
    assert result.unexplained_duplicates == [], report
    assert result.duplicates <= SHORT_PLAN.concurrency, report
    assert outcome.problems == [], report
