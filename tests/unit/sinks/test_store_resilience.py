"""The drop store under pressure: resume points across restarts, fair eviction under a flood, failing writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sink_fixtures import T0, MakeDrop

from drop_explainer.sinks import errors
from drop_explainer.sinks.store import MEMORY, DropStore

SECOND = 1_000_000_000


def test_the_newest_committed_flow_time_per_origin_survives_a_reopen(tmp_path: Path, make_drop: MakeDrop) -> None:
    """resume_point is what a restarted source resumes from; only committed drops move it."""
    path = tmp_path / "drops.db"
    with DropStore(path) as store:
        assert store.resume_point("hubble") is None
        store.record(make_drop(time_ns=T0))
        assert store.resume_point("hubble") == T0  # a new signature is committed at once
        store.record(make_drop(time_ns=T0 + 5 * SECOND))
        assert store.resume_point("hubble") == T0  # a repeat waits for the flush
        store.flush()
        assert store.resume_point("hubble") == T0 + 5 * SECOND
    with DropStore(path) as reopened:
        assert reopened.resume_point("hubble") == T0 + 5 * SECOND
        assert reopened.resume_point("calico") is None


def test_a_flood_on_one_pod_evicts_its_own_signatures_not_the_other_pods_history(make_drop: MakeDrop) -> None:
    """Over max_total the pod holding the most signatures gives up its oldest; quiet pods keep theirs."""
    with DropStore(MEMORY, max_total=50, max_per_pod=1000) as store:
        for i in range(10):  # history before the flood: ten pods, two signatures each
            store.record(make_drop(destination=f"api/p{i}", port=80, time_ns=T0 + i))
            store.record(make_drop(destination=f"api/p{i}", port=81, time_ns=T0 + i))
        for port in range(1000, 3000):  # the flood: one pod, 2,000 distinct signatures
            store.record(make_drop(destination="api/victim", port=port, time_ns=T0 + port * SECOND))
        by_pod: dict[str, list[int]] = {}
        for rec in store.query(limit=1000):
            by_pod.setdefault(rec.pod, []).append(rec.port)
        assert store.size() == 50
        assert all(sorted(by_pod[f"p{i}"]) == [80, 81] for i in range(10))
        assert sorted(by_pod["victim"]) == list(range(2970, 3000))  # oldest-seen first within the offender
        assert store.evictions == 1970


def test_eviction_takes_from_the_biggest_pod_first_when_several_flood(make_drop: MakeDrop) -> None:
    """Two flooding pods end with equal shares; a pod with three signatures keeps all three."""
    with DropStore(MEMORY, max_total=23, max_per_pod=1000) as store:
        for port in range(3):
            store.record(make_drop(destination="api/quiet", port=port))
        for port in range(100, 400):
            store.record(make_drop(destination="api/a", port=port, time_ns=T0 + port))
            store.record(make_drop(destination="api/b", port=port, time_ns=T0 + port))
        counts: dict[str, int] = {}
        for rec in store.query(limit=100):
            counts[rec.pod] = counts.get(rec.pod, 0) + 1
        assert counts == {"quiet": 3, "a": 10, "b": 10}


def test_a_failed_commit_rolls_back_keeps_the_counts_pending_and_says_so(tmp_path: Path,
                                                                        make_drop: MakeDrop) -> None:
    """A write that fails leaves no open transaction; failing/write_failures say so; the next flush retries."""
    path = tmp_path / "drops.db"
    with DropStore(path) as store:
        store.record(make_drop())
        store.record(make_drop(time_ns=T0 + SECOND))
        blocker = sqlite3.connect(path, timeout=0)
        blocker.execute("BEGIN EXCLUSIVE")
        store._db.execute("PRAGMA busy_timeout = 0")
        with pytest.raises(errors.StoreWriteFailed):
            store.flush()
        assert store.failing
        assert store.write_failures == 1
        assert not store._db.in_transaction
        blocker.rollback()
        blocker.close()
        store.flush()
        assert not store.failing
        [rec] = store.query()
        assert rec.flows == 2  # the repeat counted before the failure was kept and committed
