"""The drop store: every distinct drop, kept for post-incident forensics.

At 2 AM the drops have often stopped and the question is "what was blocked
between 01:10 and 01:25, and why?". Metrics say how many; only the store
keeps which drop, a few sample flows, and the explanation as it was when
first seen (with the policies' resourceVersions: the policy may have been
changed since, and that change is usually the story).

Shape (SQLite, stdlib): one ``signatures`` row per DropSignature with its
counters (small, as it is rewritten on every flush), its first explanation
apart in ``explanations`` (a few KiB, written once), ``samples`` (the first ``max_samples``
flows), ``buckets`` (flows and connections per signature per minute, so a
time-window query counts the drops inside the window, not only first/last
seen), and ``meta`` (schema version).

Hot path versus durability: repeats of a known signature only touch
in-memory aggregates; ``flush()`` (called about every second and at
shutdown) commits them in one transaction. A new signature is committed at
once, together with whatever is pending, before ``record`` returns True:
after ``kill -9`` every signature ever reported new is on disk, and at most
the last second of repeat counts is lost. WAL with ``synchronous=NORMAL``
does not fsync on commit, so this holds for a process crash, not for a power
loss of the node (the last transactions may be lost then; the file stays
consistent).

Bounds: ``max_per_pod`` signatures per affected pod and ``max_total``
overall, counted in ``evictions``. Over ``max_total`` the pod holding the
most signatures gives up its least recently seen one, so a flood aimed at
some workloads evicts its own history, not that of the pods it does not
touch; ``prune()`` drops what is older than the retention and keeps
at most ``max_buckets`` minute buckets. So the file is bounded by rows:
about ``max_total`` x (explanation + ``max_samples`` flows) + ``max_buckets``
x 50 bytes; deleted pages are returned by incremental vacuum, and the WAL is
truncated to 64 MiB after checkpoints. There is no byte limit on the file.

Threading: the daemon is single-threaded asyncio and calls the store from
the loop thread only; sqlite3's same-thread check enforces it. Writes are
small and unsynced, so they are not moved to a thread.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Self, TypeAlias

from drop_explainer.explain import rendering
from drop_explainer.explain.model import Explanation
from drop_explainer.flows import codec
from drop_explainer.flows.model import Flow
from drop_explainer.sinks import errors
from drop_explainer.sinks.base import DropSignature, ExplainedDrop

log = logging.getLogger(__name__)

Clock: TypeAlias = Callable[[], float]
JsonObject: TypeAlias = dict[str, Any]
PodKey: TypeAlias = tuple[str, str]

MEMORY: Final = ":memory:"
SCHEMA_VERSION: Final = 2
"""2 added ``signatures.workload`` (the affected workload); a version 1 file is migrated in place."""
_NS: Final = 1_000_000_000
_NS_PER_MINUTE: Final = 60 * _NS
_MAX_NODES: Final = 256
"""Nodes remembered per signature; a DaemonSet source could otherwise list every node."""
_MAX_PENDING: Final = 50_000
"""Pending bucket updates that force a flush, so a fast replay cannot grow memory between flushes."""
_INT64_MAX: Final = 2**63 - 1
_CHUNK: Final = 500
"""Ids per ``IN (...)``, well under SQLite's variable limit."""

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS signatures (
    id TEXT PRIMARY KEY,
    source_workload TEXT NOT NULL, destination TEXT NOT NULL, port INTEGER NOT NULL,
    protocol TEXT NOT NULL, direction TEXT NOT NULL, policies TEXT NOT NULL, traps TEXT NOT NULL,
    pod_ns TEXT NOT NULL, pod_name TEXT NOT NULL,
    flows INTEGER NOT NULL, packets INTEGER NOT NULL, connections INTEGER NOT NULL,
    first_seen_ns INTEGER NOT NULL, last_seen_ns INTEGER NOT NULL, nodes TEXT NOT NULL,
    workload TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS explanations (sig_id TEXT PRIMARY KEY, json TEXT NOT NULL, text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS signatures_pod ON signatures (pod_ns, pod_name, last_seen_ns);
CREATE INDEX IF NOT EXISTS signatures_pod_name ON signatures (pod_name);
CREATE INDEX IF NOT EXISTS signatures_last_seen ON signatures (last_seen_ns);
CREATE TABLE IF NOT EXISTS samples (
    sig_id TEXT NOT NULL, seq INTEGER NOT NULL, flow_json TEXT NOT NULL, PRIMARY KEY (sig_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS buckets (
    sig_id TEXT NOT NULL, minute INTEGER NOT NULL, flows INTEGER NOT NULL, connections INTEGER NOT NULL,
    PRIMARY KEY (sig_id, minute)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS buckets_minute ON buckets (minute);
"""
_INDEX_WORKLOAD: Final = "CREATE INDEX IF NOT EXISTS signatures_workload ON signatures (workload, last_seen_ns)"
_MIGRATE_1_TO_2: Final = "ALTER TABLE signatures ADD COLUMN workload TEXT NOT NULL DEFAULT ''"
_COLUMNS: Final = ("s.id, s.source_workload, s.destination, s.port, s.protocol, s.direction, s.policies, s.traps, "
                   "s.pod_ns, s.pod_name, s.flows, s.packets, s.connections, s.first_seen_ns, s.last_seen_ns, "
                   "s.nodes, e.json, e.text, s.workload")
_FROM: Final = "FROM signatures s JOIN explanations e ON e.sig_id = s.id"
_INSERT: Final = f"INSERT INTO signatures VALUES ({', '.join('?' * 17)})"
_INSERT_EXPLANATION: Final = "INSERT INTO explanations (sig_id, json, text) VALUES (?, ?, ?)"
_UPDATE_EXPLANATION: Final = "UPDATE explanations SET json = ?, text = ? WHERE sig_id = ?"
_UPDATE: Final = ("UPDATE signatures SET flows = ?, packets = ?, connections = ?, first_seen_ns = ?, "
                  "last_seen_ns = ?, nodes = ? WHERE id = ?")
_INSERT_SAMPLE: Final = "INSERT OR IGNORE INTO samples (sig_id, seq, flow_json) VALUES (?, ?, ?)"
_ADD_BUCKET: Final = ("INSERT INTO buckets (sig_id, minute, flows, connections) VALUES (?, ?, ?, ?) "
                      "ON CONFLICT (sig_id, minute) DO UPDATE SET flows = flows + excluded.flows, "
                      "connections = connections + excluded.connections")
_SET_META: Final = "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
_WINDOW: Final = "SELECT {} FROM buckets b WHERE b.sig_id = s.id AND b.minute BETWEEN ? AND ?"


def affected_pod(sig: DropSignature) -> PodKey:
    """(namespace, name) the drop happened to: the destination for ingress, the source pod for egress.

    A non-pod end (an address, "world") is ("", address), as in the metrics.
    """
    end = sig.affected or (sig.source_workload if sig.direction == "egress" else sig.destination)
    ns, sep, name = end.partition("/")
    return (ns, name) if sep else ("", end)


@dataclass(frozen=True, slots=True)
class DropRecord:
    """One stored signature as the API and the CLI read it."""

    id: str
    source_workload: str
    destination: str
    port: int
    protocol: str
    direction: str
    policies: tuple[str, ...]
    traps: tuple[str, ...]
    namespace: str
    """Namespace of the affected pod ("" when it is not a pod)."""
    pod: str
    """Name of the affected pod (the workload for egress, the address for a non-pod)."""
    flows: int
    packets: int
    connections: int
    first_seen_ns: int
    last_seen_ns: int
    nodes: tuple[str, ...]
    samples: list[JsonObject]
    explanation_json: JsonObject
    """As rendered when the signature was first seen, policy resourceVersions included."""
    explanation_text: str
    workload: str = ""
    """namespace/workload the drop happened to ("" for signatures stored by a version 1 store)."""
    window_flows: int | None = None
    """Flows inside the queried time window, whole minutes at its edges; None without a window."""
    window_connections: int | None = None

    @property
    def signature(self) -> DropSignature:
        return DropSignature(self.source_workload, self.destination, self.port, self.protocol, self.direction,
                             self.policies, self.traps)


@dataclass(slots=True)
class _Aggregate:
    """The counters of one signature, kept in memory so a repeat costs no I/O."""

    pod: PodKey
    flows: int
    packets: int
    connections: int
    first_ns: int
    last_ns: int
    nodes: set[str]
    samples: int

    def row(self, sid: str) -> tuple[object, ...]:
        nodes = json.dumps(sorted(self.nodes))
        return (self.flows, self.packets, self.connections, self.first_ns, self.last_ns, nodes, sid)


class DropStore:
    """Drops grouped by signature, in SQLite; one thread only (see the module docstring)."""

    def __init__(self, path: str | Path, *, max_per_pod: int = 200, max_total: int = 20_000,
                 retention_seconds: float = 7 * 86400, max_samples: int = 5, max_buckets: int = 500_000,
                 clock: Clock = time.time) -> None:
        if min(max_per_pod, max_total, max_buckets) < 1 or max_samples < 0 or retention_seconds <= 0:
            raise ValueError("drop store limits must be positive")
        self.path = str(path)
        self.max_per_pod = max_per_pod
        self.max_total = max_total
        self.retention_seconds = retention_seconds
        self.max_samples = max_samples
        self.max_buckets = max_buckets
        self.evictions = 0
        """Signatures evicted to stay within max_per_pod / max_total since this process started."""
        self._clock = clock
        # Both orders are "least recently recorded first", so eviction is O(1).
        self._aggs: OrderedDict[str, _Aggregate] = OrderedDict()
        self._by_pod: dict[PodKey, OrderedDict[str, None]] = {}
        self._dirty: set[str] = set()
        self._samples: list[tuple[str, int, str]] = []
        self._buckets: dict[tuple[str, int], list[int]] = {}
        self._resume: dict[str, int] = {}
        """Newest committed flow time per origin: where a restarted source resumes."""
        self._pending_resume: dict[str, int] = {}
        # Groups (affected pods) by how many signatures they hold, so the biggest is found in O(1).
        self._groups_of_size: dict[int, set[PodKey]] = {}
        self._biggest = 0
        self.write_failures = 0
        """Commits that failed since this process started (each rolled back)."""
        self.failing = False
        """The last commit failed: /healthz says so."""
        self._db = _connect(self.path)
        try:
            self._load()
        except BaseException:
            self._db.close()
            raise
        log.info("drop_store_opened", extra={"path": self.path, "signatures": len(self._aggs)})

    # --- writing ---------------------------------------------------------------

    def record(self, drop: ExplainedDrop) -> bool:
        """Count one drop; True when its signature was never seen before (and it is now on disk).

        Raises StoreWriteFailed when a new signature cannot be committed; it
        stays unknown, so its next drop is reported new again.
        """
        sid = drop.signature.id
        flow = drop.flow
        origin = flow.origin
        if flow.time_ns > self._pending_resume.get(origin, -1):
            self._pending_resume[origin] = flow.time_ns
        agg = self._aggs.get(sid)
        if agg is None:
            self._insert(sid, drop)
            return True
        agg.flows += 1
        agg.packets += flow.packets
        agg.connections += flow.connections
        agg.first_ns = min(agg.first_ns, flow.time_ns)
        agg.last_ns = max(agg.last_ns, flow.time_ns)
        if flow.node and len(agg.nodes) < _MAX_NODES:
            agg.nodes.add(flow.node)
        if agg.samples < self.max_samples:
            self._samples.append((sid, agg.samples, _sample(flow)))
            agg.samples += 1
        self._aggs.move_to_end(sid)
        self._by_pod[agg.pod].move_to_end(sid)
        self._dirty.add(sid)
        key = (sid, flow.time_ns // _NS_PER_MINUTE)
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = [1, flow.connections]
            if len(self._buckets) >= _MAX_PENDING:
                self.flush()
        else:
            bucket[0] += 1
            bucket[1] += flow.connections
        return False

    def flush(self) -> None:
        """Commit the pending repeat counts in one transaction."""
        if self._dirty or self._samples or self._buckets or self._pending_resume:
            self._commit()

    def resume_point(self, origin: str) -> int | None:
        """Newest flow time (ns) of this origin whose drop is committed (``resuming.Checkpoint``)."""
        return self._resume.get(origin)

    def prune(self, now: float | None = None) -> int:
        """Delete signatures and buckets older than the retention, keep at most max_buckets; returns signatures."""
        now = self._clock() if now is None else now
        cutoff_ns = int((now - self.retention_seconds) * _NS)
        self.flush()
        old = [sid for sid, agg in self._aggs.items() if agg.last_ns < cutoff_ns]
        with self._writing():
            self._delete(old)
            self._db.execute("DELETE FROM buckets WHERE minute < ?", (cutoff_ns // _NS_PER_MINUTE,))
            # Keeps whole minutes, so the bound is approximate by one minute's rows.
            self._db.execute("DELETE FROM buckets WHERE minute < (SELECT minute FROM buckets "
                             "ORDER BY minute DESC LIMIT 1 OFFSET ?)", (self.max_buckets - 1,))
        for sid in old:
            self._forget(sid)
        with contextlib.suppress(sqlite3.Error):  # reclaiming space is best effort
            self._db.execute("PRAGMA incremental_vacuum")
        if old:
            log.info("drop_store_pruned", extra={"path": self.path, "signatures": len(old)})
        return len(old)

    def close(self) -> None:
        """Flush and close; the daemon calls it at shutdown."""
        try:
            self.flush()
        finally:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading ---------------------------------------------------------------

    def size(self) -> int:
        """Signatures stored."""
        return len(self._aggs)

    def knows(self, sid: str) -> bool:
        """The signature is stored (its next drop is a repeat, not new)."""
        return sid in self._aggs

    def get(self, sid: str) -> DropRecord | None:
        self.flush()
        rows = self._select(f"SELECT {_COLUMNS}, NULL, NULL {_FROM} WHERE s.id = ?", [sid])
        return rows[0] if rows else None

    def query(self, *, since_ns: int | None = None, until_ns: int | None = None, namespace: str | None = None,
              pod: str | None = None, direction: str | None = None, policy: str | None = None,
              trap: str | None = None, workload: str | None = None, limit: int = 100,
              namespaces: Collection[str] | None = None) -> list[DropRecord]:
        """Signatures matching every given filter, most recently seen first.

        namespace/pod match the affected pod; policy ("namespace/name") and
        trap match any of the signature's. With since/until, only signatures
        with drops inside the window, and how many. ``namespaces`` (the
        caller's, api/guard.py) keeps signatures with either end in one of
        them, so a limit counts only what the caller may see.
        """
        self.flush()
        where: list[str] = []
        args: list[object] = []
        if namespaces is not None:
            wanted = sorted(namespaces)
            if not wanted:
                return []
            marks = ", ".join("?" * len(wanted))
            ends = [f"substr(s.{c}, 1, instr(s.{c}, '/') - 1) IN ({marks})" for c in ("source_workload", "destination")]
            where.append(f"(s.pod_ns IN ({marks}) OR {' OR '.join(ends)})")
            args += wanted * 3
        for column, value in (("pod_ns", namespace), ("pod_name", pod), ("direction", direction),
                              ("workload", workload)):
            if value is not None:
                where.append(f"s.{column} = ?")
                args.append(value)
        for column, value in (("policies", policy), ("traps", trap)):
            if value is not None:  # names never contain commas, so ",a," finds a whole name
                where.append(f"instr(',' || s.{column} || ',', ?) > 0")
                args.append(f",{value},")
        window: list[object] = []
        if since_ns is None and until_ns is None:
            extra = "NULL, NULL"
        else:
            lo, hi = since_ns or 0, until_ns if until_ns is not None else 2**63 - 1
            window = [lo // _NS_PER_MINUTE, hi // _NS_PER_MINUTE]
            extra = f"({_WINDOW.format('SUM(b.flows)')}), ({_WINDOW.format('SUM(b.connections)')})"
            where += ["s.last_seen_ns >= ?", "s.first_seen_ns <= ?", f"EXISTS ({_WINDOW.format('1')})"]
            args += [lo, hi, *window]
        sql = (f"SELECT {_COLUMNS}, {extra} {_FROM} {'WHERE ' if where else ''}{' AND '.join(where)} "
               "ORDER BY s.last_seen_ns DESC, s.id LIMIT ?")
        return self._select(sql, [*window, *window, *args, limit])

    def update_explanation(self, sid: str, explanation: Explanation) -> bool:
        """Replace a stored explanation by its completed form (the blast radius computed later).

        False when the signature is gone (evicted or pruned meanwhile).
        """
        if sid not in self._aggs:
            return False
        doc = json.dumps(rendering.explanation_json(explanation), separators=(",", ":"))
        text = rendering.explanation_text(explanation)
        def write() -> None:
            self._db.execute(_UPDATE_EXPLANATION, (doc, text, sid))

        self._commit((), write)
        return True

    def pods_named(self, name: str) -> list[str]:
        """Namespaces that have an affected pod of this name (the API answers 409 when there are several)."""
        with self._reading():
            rows = self._db.execute("SELECT DISTINCT pod_ns FROM signatures WHERE pod_name = ? AND pod_ns != '' "
                                    "ORDER BY pod_ns", (name,)).fetchall()
        return [str(r[0]) for r in rows]

    # --- internals -------------------------------------------------------------

    def _insert(self, sid: str, drop: ExplainedDrop) -> None:
        """Write-through of a new signature; memory changes only once it is committed."""
        sig, flow = drop.signature, drop.flow
        pod = affected_pod(sig)
        victims = self._victims(pod)
        agg = _Aggregate(pod, 1, flow.packets, flow.connections, flow.time_ns, flow.time_ns,
                         {flow.node} if flow.node else set(), min(1, self.max_samples))
        row = (sid, sig.source_workload, sig.destination, sig.port, sig.protocol, sig.direction,
               ",".join(sig.policies), ",".join(sig.traps), *pod, 1, flow.packets, flow.connections,
               flow.time_ns, flow.time_ns, json.dumps(sorted(agg.nodes)), sig.affected_workload)
        explanation = (sid, json.dumps(rendering.explanation_json(drop.explanation), separators=(",", ":")),
                       rendering.explanation_text(drop.explanation))

        def write() -> None:
            self._db.execute(_INSERT, row)
            self._db.execute(_INSERT_EXPLANATION, explanation)
            self._db.execute(_ADD_BUCKET, (sid, flow.time_ns // _NS_PER_MINUTE, 1, flow.connections))
            if agg.samples:
                self._db.execute(_INSERT_SAMPLE, (sid, 0, _sample(flow)))

        self._commit(victims, write)
        for victim in victims:
            self._forget(victim)
        self._aggs[sid] = agg
        self._add_to_group(pod, sid)
        if victims:
            self.evictions += len(victims)
            log.debug("drop_store_evicted", extra={"path": self.path, "signatures": len(victims)})

    def _victims(self, pod: PodKey) -> list[str]:
        """Signatures that must go for one more of this pod to fit.

        Over ``max_per_pod``: this pod's least recently seen. Over
        ``max_total``: the least recently seen of the pod holding the most
        signatures (counting the one coming in), so a flood aimed at a few
        workloads evicts its own history first and never that of the pods
        it does not touch.
        """
        victims: list[str] = []
        same_pod = self._by_pod.get(pod)
        if same_pod is not None and len(same_pod) >= self.max_per_pod:
            victims += itertools.islice(same_pod, len(same_pod) - self.max_per_pod + 1)
        # Victims always come off the front of their group's order, so a count per group locates the next.
        taken = {pod: len(victims)}
        excess = len(self._aggs) - len(victims) + 1 - self.max_total
        while excess > 0:
            group = self._biggest_group(taken, incoming=pod)
            victim = None if group is None else next(itertools.islice(self._by_pod[group], taken.get(group, 0),
                                                                      None), None)
            if group is None or victim is None:
                break
            victims.append(victim)
            taken[group] = taken.get(group, 0) + 1
            excess -= 1
        return victims

    def _biggest_group(self, taken: dict[PodKey, int], *, incoming: PodKey) -> PodKey | None:
        """The group with the most signatures, less those ``taken``, plus the one coming in; None if all empty.

        Among groups of equal size, the one whose next victim was seen longest
        ago, so with one signature per pod this is plain least-recently-seen.
        """
        best: PodKey | None = None
        best_key = (0, 0)
        for size in range(self._biggest, 0, -1):
            if size + 1 < best_key[0]:
                break
            for group in self._groups_of_size.get(size, ()):
                skip = taken.get(group, 0)
                if size <= skip:
                    continue
                victim = next(itertools.islice(self._by_pod[group], skip, None))
                key = (size - skip + (group == incoming), -self._aggs[victim].last_ns)
                if key > best_key:
                    best, best_key = group, key
        return best

    def _add_to_group(self, pod: PodKey, sid: str) -> None:
        order = self._by_pod.setdefault(pod, OrderedDict())
        self._resize_group(pod, len(order), len(order) + 1)
        order[sid] = None

    def _resize_group(self, pod: PodKey, old: int, new: int) -> None:
        if old:
            bucket = self._groups_of_size[old]
            bucket.discard(pod)
            if not bucket:
                del self._groups_of_size[old]
        if new:
            self._groups_of_size.setdefault(new, set()).add(pod)
        self._biggest = max(self._biggest, new)
        while self._biggest and self._biggest not in self._groups_of_size:
            self._biggest -= 1

    def _commit(self, victims: Sequence[str] = (), write: Callable[[], None] | None = None) -> None:
        """Pending updates, deletions of victims and an optional insert, in one transaction.

        On failure everything stays pending (the next flush retries it) and
        the failure is counted; the caller gets StoreWriteFailed.
        """
        gone = set(victims)
        updates = [self._aggs[sid].row(sid) for sid in self._dirty if sid not in gone]
        samples = [s for s in self._samples if s[0] not in gone]
        buckets = [(sid, m, f, c) for (sid, m), (f, c) in self._buckets.items() if sid not in gone]
        resume = {o: t for o, t in self._pending_resume.items() if t > self._resume.get(o, -1)}
        try:
            with self._writing():
                self._db.executemany(_UPDATE, updates)
                self._db.executemany(_INSERT_SAMPLE, samples)
                self._db.executemany(_ADD_BUCKET, buckets)
                self._db.executemany(_SET_META, [(f"resume:{o}", str(t)) for o, t in resume.items()])
                self._delete(victims)
                if write is not None:
                    write()
        except errors.StoreWriteFailed:
            self.write_failures += 1
            self.failing = True
            raise
        self.failing = False
        self._resume.update(resume)
        self._pending_resume.clear()
        self._dirty.clear()
        self._samples.clear()
        self._buckets.clear()

    def _delete(self, sids: Sequence[str]) -> None:
        ids = [(sid,) for sid in sids]
        for table, column in (("signatures", "id"), ("explanations", "sig_id"), ("samples", "sig_id"),
                              ("buckets", "sig_id")):
            self._db.executemany(f"DELETE FROM {table} WHERE {column} = ?", ids)

    def _forget(self, sid: str) -> None:
        agg = self._aggs.pop(sid)
        same_pod = self._by_pod[agg.pod]
        del same_pod[sid]
        self._resize_group(agg.pod, len(same_pod) + 1, len(same_pod))
        if not same_pod:
            del self._by_pod[agg.pod]

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """One transaction; on failure nothing of it is kept and the caller's memory is unchanged."""
        try:
            self._db.execute("BEGIN")
            yield
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            log.warning("drop_store_write_failed", extra={"path": self.path, "error": str(exc)})
            raise errors.StoreWriteFailed(self.path, str(exc)) from exc

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise errors.StoreUnreadable(self.path, str(exc)) from exc

    def _select(self, sql: str, args: Sequence[object]) -> list[DropRecord]:
        with self._reading():
            rows = self._db.execute(sql, args).fetchall()
            samples: dict[str, list[JsonObject]] = {}
            ids = [str(r[0]) for r in rows]
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start:start + _CHUNK]
                for sid, text in self._db.execute(
                        f"SELECT sig_id, flow_json FROM samples WHERE sig_id IN ({','.join('?' * len(chunk))}) "
                        "ORDER BY sig_id, seq", chunk):
                    samples.setdefault(sid, []).append(json.loads(text))
        return [_record(r, samples.get(str(r[0]), [])) for r in rows]

    def _load(self) -> None:
        """Signatures already on disk are known, so they are not "new" after a restart."""
        with self._reading():
            rows = self._db.execute(
                "SELECT id, pod_ns, pod_name, flows, packets, connections, first_seen_ns, last_seen_ns, nodes, "
                "(SELECT count(*) FROM samples WHERE sig_id = id) FROM signatures ORDER BY last_seen_ns, id"
            ).fetchall()
            for sid, ns, name, flows, packets, conns, first, last, nodes, samples in rows:
                pod = (ns, name)
                self._aggs[sid] = _Aggregate(pod, flows, packets, conns, first, last, set(json.loads(nodes)), samples)
                self._add_to_group(pod, sid)
            for key, value in self._db.execute("SELECT key, value FROM meta WHERE key LIKE 'resume:%'"):
                with contextlib.suppress(ValueError):  # a hand-edited value is ignored, not fatal
                    self._resume[str(key).removeprefix("resume:")] = int(value)
        self._shrink_to_limits()

    def _shrink_to_limits(self) -> None:
        """Limits lowered since the file was written: evict the oldest extras now."""
        victims = [sid for same_pod in self._by_pod.values()
                   for sid in itertools.islice(same_pod, max(0, len(same_pod) - self.max_per_pod))]
        gone = set(victims)
        excess = len(self._aggs) - len(victims) - self.max_total
        victims += itertools.islice((sid for sid in self._aggs if sid not in gone), max(0, excess))
        if victims:
            with self._writing():
                self._delete(victims)
            for sid in victims:
                self._forget(sid)
            self.evictions += len(victims)


def _sample(flow: Flow) -> str:
    return json.dumps(codec.flow_to_json(flow), separators=(",", ":"))


def _record(row: Sequence[Any], samples: list[JsonObject]) -> DropRecord:
    (sid, source, destination, port, protocol, direction, policies, traps, ns, pod, flows, packets, conns,
     first, last, nodes, expl_json, expl_text, workload, window_flows, window_conns) = row
    return DropRecord(sid, source, destination, port, protocol, direction,
                      tuple(policies.split(",")) if policies else (), tuple(traps.split(",")) if traps else (),
                      ns, pod, flows, packets, conns, first, last, tuple(json.loads(nodes)), samples,
                      json.loads(expl_json), expl_text, workload, window_flows, window_conns)


def _connect(path: str) -> sqlite3.Connection:
    """Open (creating when absent) and check the schema; any failure names the file."""
    try:
        db = sqlite3.connect(path, isolation_level=None)  # transactions are explicit
    except sqlite3.Error as exc:
        raise errors.StoreUnreadable(path, str(exc)) from exc
    try:
        _prepare(db, path)
    except sqlite3.Error as exc:
        db.close()
        raise errors.StoreUnreadable(path, str(exc)) from exc
    except BaseException:
        db.close()
        raise
    return db


def _prepare(db: sqlite3.Connection, path: str) -> None:
    # auto_vacuum only takes effect on a file without tables, which is when we create ours.
    db.execute("PRAGMA auto_vacuum = INCREMENTAL")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA journal_size_limit = 67108864")
    tables = {str(r[0]) for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if tables and "meta" not in tables:
        raise errors.StoreUnreadable(path, "an SQLite file, but not a drop store (no meta table)")
    db.execute("BEGIN")  # not executescript(): it would commit half-way
    try:
        for statement in filter(str.strip, _SCHEMA.split(";")):
            db.execute(statement)
        found = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if found is None:
            db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif found[0] == "1":
            _migrate_from_1(db, path)
        elif found[0] != str(SCHEMA_VERSION):
            raise errors.StoreUnreadable(path, f"schema version {found[0]}, this daemon reads {SCHEMA_VERSION} "
                                               "(and migrates 1); move the file away or use a matching daemon")
        db.execute(_INDEX_WORKLOAD)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _migrate_from_1(db: sqlite3.Connection, path: str) -> None:
    """Version 1 keyed signatures by pod; its rows are kept, readable and queryable by pod, without a workload.

    Their ids were computed from pod names, which cannot be mapped to workloads
    afterwards (the ReplicaSets of then are gone): a drop that recurs after the
    upgrade gets its workload signature and is reported new once more.
    """
    db.execute(_MIGRATE_1_TO_2)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
    log.info("drop_store_migrated", extra={"path": path, "from_version": 1, "to_version": SCHEMA_VERSION})
