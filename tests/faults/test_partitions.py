"""Network partitions under load, through the fault proxy: the app cut from every broker, and
the leader of a partition cut from the other brokers while the app still reaches it.

Short versions of `make chaos`'s `partition-*` faults: the same scripts and accounting
(`chaos.accounting`), 300 requests, 6 s partitions. Every acknowledged request is on the
topic where its receipt says, every refusal is recorded and replayed, no client's messages
are reordered, and each duplicate is one the store explains.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.faultproxy import BLACKHOLE, REFUSE
from tests.helpers.cluster import SHORT_PLAN, ProxiedCluster, run_short

pytestmark = [pytest.mark.kafka, pytest.mark.cluster]


@pytest.mark.timeout(150)
async def test_the_app_cut_from_every_broker_blackholed_then_refused(
    proxied_cluster: ProxiedCluster, tmp_path: Path
) -> None:
    outcome, report = await run_short("partition-app-brokers", proxied_cluster, tmp_path)
    result, answers = outcome.accounting, outcome.answers

    # both partitions happened mid-stream, and each one refused requests (5 s deadline)
    for mode in (BLACKHOLE, REFUSE):
        first, last = outcome.facts[mode]
        assert 0 < first < last <= SHORT_PLAN.requests, report
        assert any(a.status == 503 for a in answers[first:last]), report
    assert result.sent == SHORT_PLAN.requests, report
    assert result.no_answer == 0, report
    assert set(result.by_status) <= {202, 503}, report
    assert result.acknowledged_missing == [], report
    # the store could be written: every 503 was kept, then replayed when the link healed
    assert result.unrecorded == [], report
    assert result.recorded == result.replayed == result.failed, report
    assert result.unexplained_duplicates == [], report
    assert result.reordered == 0, report
    assert outcome.problems == [], report


@pytest.mark.timeout(150)
async def test_the_leader_cut_from_the_other_brokers_loses_its_partition_and_no_write(
    proxied_cluster: ProxiedCluster, tmp_path: Path
) -> None:
    outcome, report = await run_short("partition-leader-isolated", proxied_cluster, tmp_path)
    result = outcome.accounting

    # fenced by the majority (KRaft routes cut) and replaced while cut off: a zombie leader
    assert outcome.facts["leader_during"] not in (None, outcome.facts["victim"]), report
    first, last = outcome.facts[BLACKHOLE]
    assert 0 < first < last, report
    assert result.sent == SHORT_PLAN.requests, report
    assert result.no_answer == 0, report
    assert set(result.by_status) <= {202, 503}, report
    # nothing the isolated leader took alone was acknowledged (acks=all, min ISR 2)
    assert result.acknowledged_missing == [], report
    assert result.unrecorded == [], report
    assert result.recorded == result.replayed, report
    assert result.unexplained_duplicates == [], report
    assert result.reordered == 0, report
    assert outcome.problems == [], report
