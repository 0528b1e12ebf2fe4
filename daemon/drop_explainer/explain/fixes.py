"""The change that lets exactly these connections through and opens least, proven first.

A fix is only shown once the engine, re-run over the state with the change
applied, says every connection it is for is allowed, as the datapath sees
them (after Service translation). Of the candidate edits (candidates.py) we
propose the one that newly allows the fewest other connections (its blast
radius), then the one touching fewest objects, then the one writing fewest
clauses. When one answer carries several drops, the edits are planned one
after the other on the state as already changed, so all the edits to one
policy come out as one change that admits every drop, checked together.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import replace

from drop_explainer.cluster.objects import NetworkPolicy, PolicyType
from drop_explainer.cluster.state import ClusterState
from drop_explainer.explain import backends, blast, candidates, manifests, tracing
from drop_explainer.explain.candidates import Change
from drop_explainer.explain.model import BlastRadius, Fix, PolicyTrace
from drop_explainer.policy.engine import Connection, Engine

# Re-exported for callers that build peers the way fixes do.
peer_for = candidates.peer_for
workload_selector = candidates.workload_selector


def derived(engine: Engine, state: ClusterState) -> Engine:
    """An engine over a changed state that judges as ``engine`` does (its CNI profile too, where it has one)."""
    return type(engine)(state, engine.profile)


def unresolved(engine: Engine, conn: Connection) -> str | None:
    """Why no fix can be written for ``conn`` (a Service without backends, unknown addresses), or None."""
    return backends.translate(engine.state, conn).problem


def plan(engine: Engine, conn: Connection, traces: tuple[PolicyTrace, ...] = (), *,
         radius: bool = True) -> tuple[Fix, ...]:
    """The fixes for one connection: one per object changed, checked together.

    ``traces`` is accepted for the callers that have them; the plan traces
    the translated connections itself. Without ``radius`` the fixes are
    still checked, and ranked by a cheap stand-in for the blast radius (how
    many pods the edited policy selects); the exact radius is left for later.
    """
    target = backends.translate(engine.state, conn)
    if target.problem is not None:
        return ()
    return combine(engine, [target], radius=radius)


def combine(engine: Engine, targets: Sequence[backends.Target], *, radius: bool = True,
            rank_by_radius: bool | None = None) -> tuple[Fix, ...]:
    """One change per object admitting every connection of every target, checked together.

    ``rank_by_radius`` (default: ``radius``) ranks each step's candidates by
    their exact blast radius; off, they are ranked by the cheap stand-in and
    only the final change's radius is counted, once.
    """
    rank = radius if rank_by_radius is None else rank_by_radius
    conns = [c for t in targets for c in t.connections]
    intended = _intended(engine.state, targets)
    state = engine.state
    steps: list[Change] = []
    best_radius: BlastRadius | None = None
    for target in targets:
        for conn in target.connections:
            for direction in (PolicyType.EGRESS, PolicyType.INGRESS):
                cur = derived(engine, state)
                c = _reresolve(state, conn)
                if cur.direction(c, direction).allowed:
                    continue
                traces = tracing.trace_direction(cur, c, direction)
                options = candidates.all_changes(cur, c, direction, traces, target)
                best, best_radius = _best(cur, c, direction, options, intended, radius=rank)
                steps.append(best)
                state = best.apply(state)
    if not steps:
        return ()
    after = derived(engine, state)
    verified = all(after.evaluate(_reresolve(state, c)).allowed for c in conns)
    opened = None
    if verified and radius:
        # One step is what was ranked: its radius, computed then, is the answer's.
        opened = best_radius if len(steps) == 1 and best_radius is not None else \
            blast.blast_radius(engine, after, conns[0], steps, intended=intended)
    return tuple(replace(f, verified=verified, blast_radius=opened) for f in _fixes(engine.state, state, steps))


def _intended(state: ClusterState, targets: Iterable[backends.Target]) -> list[Connection]:
    """The connections the fixes are for: not counted in their blast radius.

    Every backend of the Service, and for DNS both UDP and TCP 53: the fix
    admits them on purpose (a rollout moves the traffic to other replicas;
    a large answer makes the resolver retry over TCP).
    """
    out: list[Connection] = []
    for t in targets:
        out += t.connections
        if t.service is None or not t.connections:
            continue
        first = t.connections[0]
        for sp in t.service.ports:
            if t.dns or sp.protocol == first.protocol:
                out += [replace(first, destination=b, port=n, protocol=sp.protocol)
                        for b, n in backends.backends(state, t.service, sp)]
    return out


def _best(engine: Engine, conn: Connection, direction: PolicyType, options: list[Change],
          intended: Sequence[Connection], *, radius: bool) -> tuple[Change, BlastRadius | None]:
    """The candidate that opens least, then touches fewest objects, then writes fewest clauses.

    Candidates are tried cheapest-looking first, and each count stops as
    soon as it passes the best so far, so ranking costs little more than
    the radius of the winner.
    """
    ordered = sorted(enumerate(options), key=lambda o: (_selected_pods(engine.state, o[1]), o[1].objects,
                                                        o[1].clauses, o[0]))
    admitting = [(i, c) for i, c in ordered if _admits(engine, c, conn, direction)] or ordered
    if not radius:
        return admitting[0][1], None
    best: tuple[tuple[int, int, int, int], Change, BlastRadius] | None = None
    for order, change in admitting:
        tie = (change.objects, change.clauses, order)
        if best is not None and best[0][0] == 0 and tie > best[0][1:]:
            continue  # nothing opens less than nothing: only a simpler edit could still win
        after = derived(engine, change.apply(engine.state))
        opened = blast.blast_radius(engine, after, conn, [change], intended=intended,
                                    limit=None if best is None else best[0][0])
        key = (opened.count, *tie)
        if best is None or key < best[0]:
            best = (key, change, opened)
    assert best is not None
    return best[1], best[2]


def _admits(engine: Engine, change: Change, conn: Connection, direction: PolicyType) -> bool:
    """A candidate is only one if, applied, it lets the connection through in its direction."""
    after = change.apply(engine.state)
    return derived(engine, after).direction(_reresolve(after, conn), direction).allowed


def _selected_pods(state: ClusterState, change: Change) -> int:
    """A cheap stand-in for the blast radius: how many pods the edited rules apply to."""
    count = sum(len(blast.selected(state, p)) for p, _, _ in change.effective)
    return count + sum(len(state.pods_by_namespace.get(ns, ())) for ns, _ in change.labels)


def _reresolve(state: ClusterState, conn: Connection) -> Connection:
    """Namespace labels live on the subjects; refresh them from the changed state."""
    return Connection(blast.refresh(state, conn.source), blast.refresh(state, conn.destination), conn.port,
                      conn.protocol)


def _fixes(before: ClusterState, after: ClusterState, steps: list[Change]) -> list[Fix]:
    """The steps grouped by the object they change, each object's final form written out once."""
    by_object: dict[str, list[Change]] = {}
    for step in steps:
        keys = [f"networkpolicy {p.key}" for p in step.policies] + [f"namespace {ns}" for ns, _ in step.labels]
        for key in keys:
            by_object.setdefault(key, []).append(step)
    out = []
    for key, group in by_object.items():
        kind = group[0].kind if len({s.kind for s in group}) == 1 else "edit-policy"
        summary = "; ".join(s.summary for s in group)
        if key.startswith("namespace "):
            ns = key.removeprefix("namespace ")
            labels = {k: v for s in group for n, lb in s.labels if n == ns for k, v in lb.items()}
            args = " ".join(f"{k}={v}" for k, v in labels.items())
            out.append(Fix(kind, summary, f"kubectl label namespace {ns} {args}\n", namespace_labels={ns: labels},
                           target=key))
            continue
        policy = after.policies[key.removeprefix("networkpolicy ")]
        out.append(_policy_fix(kind, summary, before.policies.get(policy.key), policy, key))
    return out


def _policy_fix(kind: str, summary: str, old: NetworkPolicy | None, new: NetworkPolicy, key: str) -> Fix:
    obj = manifests.policy_json(new)
    yaml = manifests.to_yaml(obj)
    if old is None:
        kind = "new-policy"
        # create, not apply: it fails instead of overwriting a policy of that name made meanwhile.
        apply = "kubectl create -f - <<'EOF'\n" + yaml + "EOF\n"
        return Fix(kind, summary, apply, (obj,), target=key)
    ops = manifests.json_patch(old, new)
    patch = (f"kubectl patch networkpolicy {new.name} -n {new.namespace} --type=json -p "
             f"'{json.dumps(ops, separators=(',', ':'))}'\n")
    full = ("# or, replacing the whole object (made from the state as read; a change made to it since is lost):\n"
            "kubectl apply -f - <<'EOF'\n" + yaml + "EOF\n")
    managed = manifests.managed_by(old)
    if managed is not None:
        apply = (f"# {new.key} looks managed by {managed}: a kubectl change is undone at its next sync or "
                 f"release. Put this in its source:\n" + yaml + "# to try it before then:\n" + patch)
    else:
        apply = patch + full
    return Fix(kind, summary, apply, (obj,), patch=tuple(ops), managed_by=managed, target=key)


def radius_of(fixes: Sequence[Fix]) -> BlastRadius | None:
    """The blast radius of an answer's fixes taken together (each fix carries the same one)."""
    return next((f.blast_radius for f in fixes if f.blast_radius is not None), None)
