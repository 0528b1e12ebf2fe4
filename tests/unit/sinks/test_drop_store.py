"""The drop store: grouping, new versus repeat, bounds, retention, queries, and its file."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sink_fixtures import MINUTE, T0, FakeClock, MakeDrop

from drop_explainer.sinks import errors
from drop_explainer.sinks.store import MEMORY, DropStore

SECOND = 1_000_000_000


@pytest.fixture
def store() -> Iterator[DropStore]:
    with DropStore(MEMORY) as s:
        yield s


def test_repeats_of_one_signature_are_grouped_with_their_counts(store: DropStore, make_drop: MakeDrop) -> None:
    """Flows, packets, connections, first/last seen and nodes add up over the repeats."""
    store.record(make_drop(time_ns=T0 + 5 * SECOND, node="n2", packets=3, connections=2))
    store.record(make_drop(time_ns=T0, node="n1"))
    store.record(make_drop(time_ns=T0 + 9 * SECOND, node=None, packets=10, connections=4))
    [rec] = store.query()
    assert (rec.flows, rec.packets, rec.connections) == (3, 14, 7)
    assert (rec.first_seen_ns, rec.last_seen_ns) == (T0, T0 + 9 * SECOND)
    assert rec.nodes == ("n1", "n2")
    assert rec.signature == make_drop().signature


def test_record_says_new_only_the_first_time_a_signature_is_seen(store: DropStore, make_drop: MakeDrop) -> None:
    """The first drop of a signature is new; its repeats and an identical drop later are not."""
    assert store.record(make_drop()) is True
    assert store.record(make_drop(time_ns=T0 + SECOND)) is False
    assert store.record(make_drop(port=9090)) is True
    assert store.size() == 2


def test_signature_on_disk_is_not_new_after_a_restart(tmp_path: Path, make_drop: MakeDrop) -> None:
    """Reopening the file knows every signature it holds, so a repeat after restart is not new."""
    path = tmp_path / "drops.db"
    with DropStore(path) as first:
        assert first.record(make_drop()) is True
    with DropStore(path) as second:
        assert second.record(make_drop(time_ns=T0 + SECOND)) is False
        assert second.record(make_drop(port=1)) is True


def test_counts_and_samples_survive_a_reopen(tmp_path: Path, make_drop: MakeDrop) -> None:
    """What was flushed reads back the same after the store is reopened."""
    path = tmp_path / "drops.db"
    with DropStore(path) as first:
        for i in range(4):
            first.record(make_drop(time_ns=T0 + i * SECOND, node=f"n{i % 2}", connections=2))
        before = first.get(make_drop().signature.id)
    with DropStore(path) as second:
        after = second.get(make_drop().signature.id)
    assert before is not None
    assert after == before
    assert (after.flows, after.connections, len(after.samples)) == (4, 8, 4)


def test_samples_are_capped_and_are_the_first_flows(make_drop: MakeDrop) -> None:
    """Only max_samples flows are kept, in the order they came, as flow JSON."""
    with DropStore(MEMORY, max_samples=2) as store:
        for i in range(5):
            store.record(make_drop(time_ns=T0 + i * SECOND))
        [rec] = store.query()
    assert [s["time_ns"] for s in rec.samples] == [T0, T0 + SECOND]
    assert rec.samples[0]["record"] == "drop-explainer.flow/v1"


def test_explanation_is_kept_as_it_was_at_first_sight(store: DropStore, make_drop: MakeDrop) -> None:
    """JSON and text name the policy with its resourceVersion at first sight."""
    store.record(make_drop())
    [rec] = store.query()
    assert rec.explanation_json["denying"][0]["resourceVersion"] == "7"
    assert "api/default-deny (resourceVersion 7)" in rec.explanation_text


def test_per_pod_limit_evicts_the_least_recently_seen_signature(make_drop: MakeDrop) -> None:
    """A fourth signature of a pod limited to three evicts the one not seen for longest; other pods keep theirs."""
    with DropStore(MEMORY, max_per_pod=3) as store:
        for port in (1, 2, 3):
            store.record(make_drop(port=port))
        store.record(make_drop(destination="api/pod-c", port=1))
        store.record(make_drop(port=1, time_ns=T0 + SECOND))  # 1 is now more recent than 2
        assert store.record(make_drop(port=4)) is True
        ports = sorted(r.port for r in store.query(pod="pod-b"))
        assert ports == [1, 3, 4]
        assert store.evictions == 1
        assert [r.port for r in store.query(pod="pod-c")] == [1]


def test_total_limit_evicts_the_least_recently_seen_across_pods(make_drop: MakeDrop) -> None:
    """Beyond max_total the oldest signature of any pod goes, and it is new again if it comes back."""
    with DropStore(MEMORY, max_total=2) as store:
        store.record(make_drop(destination="api/p1", time_ns=T0))
        store.record(make_drop(destination="api/p2", time_ns=T0 + 1))
        store.record(make_drop(destination="api/p3", time_ns=T0 + 2))
        assert sorted(r.pod for r in store.query()) == ["p2", "p3"]
        assert store.evictions == 1
        assert store.record(make_drop(destination="api/p1")) is True
        assert store.size() == 2


def test_evicted_signature_is_gone_from_the_file(tmp_path: Path, make_drop: MakeDrop) -> None:
    """Eviction deletes the row, its samples and its buckets, so the file stays bounded."""
    path = tmp_path / "drops.db"
    with DropStore(path, max_total=1) as store:
        store.record(make_drop(destination="api/p1"))
        store.record(make_drop(destination="api/p1", time_ns=T0 + SECOND))
        store.record(make_drop(destination="api/p2"))
    db = sqlite3.connect(path)
    counts = [db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("signatures", "explanations", "samples", "buckets")]
    db.close()
    assert counts == [1, 1, 1, 1]


def test_lowered_limits_evict_the_extras_on_open(tmp_path: Path, make_drop: MakeDrop) -> None:
    """A file written with larger limits is cut down to the new ones, oldest first."""
    path = tmp_path / "drops.db"
    with DropStore(path) as store:
        for i in range(5):
            store.record(make_drop(port=i, time_ns=T0 + i * SECOND))
    with DropStore(path, max_per_pod=2) as store:
        assert sorted(r.port for r in store.query()) == [3, 4]
        assert store.evictions == 3


def test_prune_deletes_what_is_older_than_the_retention(make_drop: MakeDrop) -> None:
    """Signatures last seen before now - retention go, and so do their old minute buckets."""
    with DropStore(MEMORY, retention_seconds=3600) as store:
        store.record(make_drop(port=1, time_ns=T0))
        store.record(make_drop(port=2, time_ns=T0))
        store.record(make_drop(port=2, time_ns=T0 + 2 * 3600 * SECOND))
        now = T0 / SECOND + 2.5 * 3600
        assert store.prune(now) == 1
        [rec] = store.query()
        assert rec.port == 2
        assert store.query(since_ns=T0, until_ns=T0 + MINUTE) == []


def test_prune_uses_the_injected_clock(make_drop: MakeDrop) -> None:
    """Without an argument prune() reads the store's clock."""
    clock = FakeClock(T0 / SECOND)
    with DropStore(MEMORY, retention_seconds=60, clock=clock) as store:
        store.record(make_drop())
        assert store.prune() == 0
        clock.now += 61
        assert store.prune() == 1
        assert store.size() == 0


def test_prune_keeps_at_most_max_buckets_newest_minutes(tmp_path: Path, make_drop: MakeDrop) -> None:
    """Minute buckets beyond max_buckets are deleted oldest first; the signature stays."""
    path = tmp_path / "drops.db"
    with DropStore(path, max_buckets=3) as store:
        for minute in range(6):
            store.record(make_drop(time_ns=T0 + minute * MINUTE))
        store.prune(T0 / SECOND)
        [rec] = store.query(since_ns=T0, until_ns=T0 + 10 * MINUTE)
        assert rec.window_flows == 3
        assert rec.flows == 6


def test_window_query_counts_only_the_drops_inside_the_window(store: DropStore, make_drop: MakeDrop) -> None:
    """A signature seen over an hour reports how many of its flows fell in the queried ten minutes."""
    for minute in range(60):
        store.record(make_drop(time_ns=T0 + minute * MINUTE + SECOND, connections=2))
    [rec] = store.query(since_ns=T0 + 10 * MINUTE, until_ns=T0 + 20 * MINUTE - 1)
    assert (rec.window_flows, rec.window_connections) == (10, 20)
    assert rec.flows == 60
    assert store.query()[0].window_flows is None


def test_window_query_leaves_out_signatures_silent_in_the_window(store: DropStore, make_drop: MakeDrop) -> None:
    """A drop seen before and after the window, but not during it, is not in the answer."""
    store.record(make_drop(port=1, time_ns=T0))
    store.record(make_drop(port=1, time_ns=T0 + 30 * MINUTE))
    store.record(make_drop(port=2, time_ns=T0 + 12 * MINUTE))
    found = store.query(since_ns=T0 + 10 * MINUTE, until_ns=T0 + 20 * MINUTE)
    assert [r.port for r in found] == [2]
    assert [r.port for r in store.query(since_ns=T0 + 25 * MINUTE)] == [1]
    assert [r.port for r in store.query(until_ns=T0 + MINUTE - 1)] == [1]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        pytest.param({"namespace": "api"}, [8080, 9090], id="namespace"),
        pytest.param({"namespace": "api", "pod": "pod-b"}, [8080], id="namespace-and-pod"),
        pytest.param({"pod": "pod-x"}, [], id="unknown-pod"),
        pytest.param({"direction": "egress"}, [53], id="direction"),
        pytest.param({"namespace": "web", "pod": "client"}, [53], id="egress-pod-is-the-source-workload"),
        pytest.param({"policy": "api/default-deny"}, [8080, 9090], id="policy-any-of"),
        pytest.param({"policy": "api/default"}, [], id="policy-whole-name-only"),
        pytest.param({"policy": "web/egress-lockdown"}, [53], id="policy-second-of-two"),
        pytest.param({"trap": "named-port"}, [9090], id="trap"),
        pytest.param({"namespace": "", "pod": "world"}, [443], id="non-pod-destination"),
    ],
)
def test_query_filters_match_the_affected_pod_policy_and_trap(
        store: DropStore, make_drop: MakeDrop, filters: dict[str, str], expected: list[int]) -> None:
    """Each filter narrows to the signatures it names, and filters combine with AND."""
    store.record(make_drop(port=8080))
    store.record(make_drop(destination="api/pod-c", port=9090, traps=("named-port",),
                           policies=("api/allow-web", "api/default-deny")))
    store.record(make_drop(source="web/client", destination="kube-system/dns", port=53, direction="egress",
                           policies=("web/default", "web/egress-lockdown")))
    store.record(make_drop(destination="world", port=443, policies=()))
    assert sorted(r.port for r in store.query(**filters)) == expected  # type: ignore[arg-type]


def test_query_returns_the_most_recently_seen_first_up_to_the_limit(store: DropStore, make_drop: MakeDrop) -> None:
    """Order is by last seen, newest first; limit cuts the tail."""
    for port, at in ((1, 5), (2, 9), (3, 1)):
        store.record(make_drop(port=port, time_ns=T0 + at * SECOND))
    assert [r.port for r in store.query()] == [2, 1, 3]
    assert [r.port for r in store.query(limit=2)] == [2, 1]


def test_query_sees_repeats_not_yet_flushed(store: DropStore, make_drop: MakeDrop) -> None:
    """A query commits pending counts first, so the API never answers with stale numbers."""
    store.record(make_drop())
    store.record(make_drop(time_ns=T0 + SECOND))
    assert store.query()[0].flows == 2


def test_get_returns_the_record_or_none(store: DropStore, make_drop: MakeDrop) -> None:
    """get() finds a signature by its id, and answers None for an id never stored."""
    drop = make_drop()
    store.record(drop)
    rec = store.get(drop.signature.id)
    assert rec is not None
    assert rec.id == drop.signature.id
    assert rec.window_flows is None
    assert store.get("0000000000000000") is None


def test_pods_named_lists_every_namespace_with_that_pod(store: DropStore, make_drop: MakeDrop) -> None:
    """Two namespaces with a pod "db" make the name ambiguous; non-pod ends are never listed."""
    store.record(make_drop(destination="shop/db"))
    store.record(make_drop(destination="blog/db"))
    store.record(make_drop(destination="blog/db", port=1))
    store.record(make_drop(destination="world"))
    assert store.pods_named("db") == ["blog", "shop"]
    assert store.pods_named("world") == []
    assert store.pods_named("nope") == []


def test_corrupt_file_raises_store_unreadable_naming_the_path(tmp_path: Path) -> None:
    """A file that is not SQLite fails at open with the path in the message."""
    path = tmp_path / "drops.db"
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(errors.StoreUnreadable, match=r"drops\.db") as info:
        DropStore(path)
    assert info.value.path == str(path)


def test_another_programs_sqlite_file_is_refused(tmp_path: Path) -> None:
    """A valid SQLite file without our meta table is not silently extended with our tables."""
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(errors.StoreUnreadable, match="not a drop store"):
        DropStore(path)


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    """A file written by a newer schema is not read by an older daemon."""
    path = tmp_path / "drops.db"
    DropStore(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(errors.StoreUnreadable, match="schema version 99"):
        DropStore(path)


def test_missing_directory_raises_store_unreadable(tmp_path: Path) -> None:
    """A path whose directory does not exist fails at open, naming the path."""
    with pytest.raises(errors.StoreUnreadable, match="no-such-dir"):
        DropStore(tmp_path / "no-such-dir" / "drops.db")


def test_file_is_in_wal_mode(tmp_path: Path) -> None:
    """WAL lets readers (a backup, sqlite3 CLI) look while the daemon writes."""
    path = tmp_path / "drops.db"
    DropStore(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


class _FailingInserts:
    """A connection stand-in whose signature inserts fail, like a full disk."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.armed = True

    def execute(self, sql: str, args: tuple[str | int | None, ...] = ()) -> sqlite3.Cursor:
        if self.armed and sql.startswith("INSERT INTO signatures"):
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, args)

    def __getattr__(self, name: str) -> object:
        return getattr(self.db, name)


def test_failed_write_through_leaves_the_signature_new(store: DropStore, make_drop: MakeDrop) -> None:
    """When the insert cannot commit, record() raises and the next sight of the signature is still new."""
    failing = _FailingInserts(store._db)
    store._db = failing  # type: ignore[assignment]
    with pytest.raises(errors.StoreWriteFailed, match="disk is full"):
        store.record(make_drop())
    assert store.size() == 0
    failing.armed = False
    assert store.record(make_drop()) is True


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 600), st.integers(1, 5)), max_size=40))
def test_store_agrees_with_a_plain_count(make_drop: MakeDrop, flows: list[tuple[int, int, int]]) -> None:
    """For any sequence of drops the store's new flags and counts equal a dictionary count."""
    seen: dict[int, list[int]] = {}
    with DropStore(MEMORY) as store:
        for port, second, conns in flows:
            assert store.record(make_drop(port=port, time_ns=T0 + second * SECOND, connections=conns)) is (
                port not in seen)
            seen.setdefault(port, []).append(conns)
        got = {r.port: (r.flows, r.connections) for r in store.query()}
    assert got == {port: (len(c), sum(c)) for port, c in seen.items()}


def test_window_and_filters_combine(store: DropStore, make_drop: MakeDrop) -> None:
    """A window query with a pod filter counts only that pod's drops inside the window."""
    for minute in range(5):
        store.record(make_drop(time_ns=T0 + minute * MINUTE))
        store.record(make_drop(destination="api/pod-c", time_ns=T0 + minute * MINUTE))
    found = store.query(since_ns=T0 + MINUTE, until_ns=T0 + 3 * MINUTE - 1, namespace="api", pod="pod-c",
                        policy="api/default-deny")
    assert [(r.pod, r.window_flows) for r in found] == [("pod-c", 2)]
